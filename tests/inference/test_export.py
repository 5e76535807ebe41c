"""``python -m custom_modules.export``: every recipe's run as a pretrained folder.

End to end, per recipe: a tiny debug run (the recipe harness's ``run_recipe``), its export,
then the run folder is *deleted* and the folder is loaded with the SpeechBrain interface in a
fresh process (its own working directory, only the installed packages ``custom_modules`` and
``data_prepare`` importable, every socket connection refused), whose output must equal the
recipe's own test-stage output to 16-bit precision.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from ruamel.yaml import YAML

from custom_modules.audio.levels import limit_peak
from custom_modules.inference import export
from custom_modules.inference.export import (
    INTERFACES,
    ExportError,
    causality,
    check_no_paths,
    export_pretrained,
    inference_yaml,
    interface_of,
    training_data,
)
from custom_modules.inference.pretrained import (
    PretrainedFolderError,
    WaveformEnhancerModule,
    load_pretrained,
    read_interface_name,
)
from custom_modules.inference.run_loading import RunFolderError
from tests.recipes.test_recipes import discover, run_recipe

ROOT = Path(__file__).resolve().parents[2]
LSB = 2.0**-15

# The CPU-size YAML of every recipe (the one whose name says "cpu").
CPU_YAMLS = {t.parent.name: (t, h) for t, h in discover() if "cpu" in h.stem}
# Sub-folder of the test report whose examples come from the prepared mixture files
# (DCUNet's "stft" test set corrupts on the fly: no mixture file to read).
REPORT_SUBFOLDER = {"dcunet": "mixer", "denoising_wavenet": "mixer"}  # first corruption


def interface_kind(hparams: Path) -> str:
    return re.search(r"^pretrained_interface:\s*(\w+)", hparams.read_text(), re.M).group(1)


def test_every_recipe_declares_its_interface():
    assert set(CPU_YAMLS) >= {"unet_tcm", "dcunet", "spectral_mask", "conv_tasnet", "spex_plus"}
    for _, hparams in discover():
        assert interface_kind(hparams) in INTERFACES, hparams


# ---- unit tests ------------------------------------------------------------------------------


def test_inference_yaml_keeps_the_network_and_drops_training():
    # What a run records: references resolved.
    tree = YAML().load(
        "sample_rate: 16000\noutput_folder: /runs/x\ndata_folder: /data/dns\n"
        "model: !new:torch.nn.Conv1d {in_channels: 1, out_channels: 1, kernel_size: 3}\n"
        "opt_class: !name:torch.optim.Adam\ncheckpointer: !new:torch.nn.Identity\n"
    )
    text = inference_yaml(tree, "waveform_enhancement")
    parsed = YAML().load(text)
    assert parsed["pretrained_interface"] == INTERFACES["waveform_enhancement"].cls
    assert parsed["sample_rate"] == 16000
    for dropped in ("output_folder", "data_folder", "opt_class", "checkpointer"):
        assert dropped not in parsed
    assert {"model", "enhance_model", "modules", "pretrainer", "audio_normalizer"} <= set(parsed)


def test_a_path_of_the_run_in_the_model_block_is_refused():
    tree = YAML().load(
        "sample_rate: 16000\noutput_folder: /runs/x\n"
        "model: !new:some.Model {vocabulary: /runs/x/save/vocab.txt}\n"
    )
    with pytest.raises(ExportError, match="/runs/x/save/vocab.txt"):
        inference_yaml(tree, "waveform_enhancement")
    check_no_paths({"model": {"file": "/elsewhere/a"}}, ["/runs/x"], "h.yaml")  # other paths pass


def test_interface_is_required_and_checked():
    with pytest.raises(ExportError, match="--interface"):
        interface_of({}, source="run/hyperparams.yaml")
    with pytest.raises(ExportError, match="unknown pretrained_interface 'asr'"):
        interface_of({"pretrained_interface": "asr"})
    assert interface_of({}, "separation") == "separation"


def test_interfaces_need_their_keys():
    tree = YAML().load("sample_rate: 16000\nmodel: !new:torch.nn.Identity\n")
    with pytest.raises(ExportError, match="'compute_stft'"):
        inference_yaml(tree, "spectral_mask_enhancement")


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"lookahead": 318, "hop_length": 160}, "19.88 ms of lookahead"),
        ({"causal": False}, "non-causal"),
        ({"causal": True, "kernel_size": 16}, "latency 16 samples (2.00 ms)"),
        ({}, "not stated"),
    ],
)
def test_causality_line(attributes, expected):
    model = torch.nn.Identity()
    for key, value in attributes.items():
        setattr(model, key, value)
    assert expected in causality(model, 8000 if "kernel_size" in attributes else 16000)


def test_training_data_names_licences_of_downloaded_corpora(tmp_path):
    (tmp_path / ".downloads").mkdir()
    record = {"name": "rirs_noises", "title": "RIR and noise database", "licence": "Apache 2.0"}
    (tmp_path / ".downloads" / "rirs_noises.done.json").write_text(json.dumps(record))
    text = training_data(str(tmp_path))
    assert "RIR and noise database (rirs_noises): licence Apache 2.0" in text
    assert "not known" in training_data(str(tmp_path / "elsewhere"))


def test_waveform_wrapper_and_folder_errors(tmp_path):
    enhanced, extra = WaveformEnhancerModule(torch.nn.Identity())(torch.ones(1, 4))
    assert extra is None and torch.equal(enhanced, torch.ones(1, 4))
    with pytest.raises(PretrainedFolderError, match="not found"):
        read_interface_name(tmp_path / "missing")
    with pytest.raises(PretrainedFolderError, match="no hyperparams.yaml"):
        read_interface_name(tmp_path)
    (tmp_path / "hyperparams.yaml").write_text("sample_rate: 16000\n")
    with pytest.raises(PretrainedFolderError, match="pretrained_interface"):
        load_pretrained(tmp_path)
    (tmp_path / "hyperparams.yaml").write_text("pretrained_interface: torch.nn.Identity\n")
    with pytest.raises(PretrainedFolderError, match="not a speechbrain Pretrained"):
        load_pretrained(tmp_path)


def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    text = (ROOT / "recipes/unet_tcm/hparams/unet_cpu.yaml").read_text()
    (run / "hyperparams.yaml").write_text(text.replace("!PLACEHOLDER", str(tmp_path / "data")))
    out = tmp_path / "out"
    assert export.main(["--run", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "no checkpoint" in err and not out.exists()
    assert export.main(["--run", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "no hyperparams.yaml" in capsys.readouterr().err
    for holder in (run, tmp_path):  # never replaced, not even with --overwrite
        assert export.main(["--run", str(run), "--out", str(holder), "--overwrite"]) == 1
        assert "holds the run folder" in capsys.readouterr().err
    assert (run / "hyperparams.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left


@pytest.mark.slow
def test_export_of_a_run(unet_tcm_cpu_demo_run, tmp_path, capsys, monkeypatch):
    """Best checkpoint, strict weights, model card; failures leave ``--out`` as it was."""
    out = tmp_path / "pretrained"
    assert export.main(["--run", str(unet_tcm_cpu_demo_run), "--out", str(out)]) == 0
    assert "WaveformEnhancement.from_hparams" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "hyperparams.yaml", "model.ckpt"]
    text = (out / "hyperparams.yaml").read_text()
    for absent in (
        str(unet_tcm_cpu_demo_run),
        "data_folder",
        "checkpointer",
        "opt_class",
        "\nloss",
    ):
        assert absent not in text
    # The weights are those of the best checkpoint by the recipe's key.
    metas = {
        c: YAML().load((c / "CKPT.yaml").read_text())
        for c in (unet_tcm_cpu_demo_run / "save").glob("CKPT+*")
    }
    best = max((c for c in metas if "stoi" in metas[c]), key=lambda c: metas[c]["stoi"])
    expected = torch.load(best / "model.ckpt", weights_only=True)
    exported = torch.load(out / "model.ckpt", weights_only=True)
    assert sorted(exported) == sorted(expected)
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
    card = (out / "README.md").read_text()
    summary = json.loads((unet_tcm_cpu_demo_run / "test_report" / "summary.json").read_text())
    assert f"on {summary['num_utterances']} test utterances" in card
    assert "| SI-SDR |" in card and "16000 Hz" in card and "lookahead" in card
    assert "WaveformEnhancement.from_hparams" in card and "demo corpus" in card

    # An existing folder is not replaced without --overwrite ...
    assert export.main(["--run", str(unet_tcm_cpu_demo_run), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # ... and a failing verification leaves it untouched, with no temporary folder.
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise ExportError("verification failed")

    monkeypatch.setattr(export, "verify_folder", broken)
    with pytest.raises(ExportError):
        export_pretrained(unet_tcm_cpu_demo_run, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrained"]


def test_a_weight_that_does_not_load_fails_the_verification(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    tree = YAML().load(
        "sample_rate: 16000\nmodel: !new:torch.nn.Conv1d "
        "{in_channels: 1, out_channels: 1, kernel_size: 1, bias: False}\n"
    )
    (folder / "hyperparams.yaml").write_text(inference_yaml(tree, "waveform_enhancement"))
    torch.save({"weight": torch.ones(1, 1, 1)}, folder / "model.ckpt")
    with pytest.raises(ExportError, match="parameters differ"):
        export.verify_folder(folder, "waveform_enhancement", {"bias": torch.ones(1)}, 16000)
    with pytest.raises(ExportError, match="was not loaded"):
        export.verify_folder(
            folder, "waveform_enhancement", {"weight": torch.zeros(1, 1, 1)}, 16000
        )
    with pytest.raises(RunFolderError):
        export_pretrained(tmp_path / "nowhere", tmp_path / "out")


# ---- end to end: train, export, delete the run, load in a fresh process ----------------------

LOADER = r"""
import json, socket, sys


def refuse(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args[1:]}")


socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

import numpy as np

job = json.loads(open(sys.argv[1]).read())
kind = job["kind"]
if kind == "waveform_enhancement":
    from speechbrain.inference.enhancement import WaveformEnhancement as Interface
elif kind == "spectral_mask_enhancement":
    from speechbrain.inference.enhancement import SpectralMaskEnhancement as Interface
elif kind == "separation":
    from custom_modules.inference.pretrained import WaveformSeparation as Interface
else:
    from custom_modules.inference.pretrained import SpeakerExtraction as Interface
model = Interface.from_hparams(source=job["folder"], savedir=job["savedir"])
for item in job["items"]:
    if kind == "separation":
        out = model.separate_file(item["mixture"])[0]  # (samples, sources), each peak 1
    elif kind == "speaker_extraction":
        out = model.extract_file(item["mixture"], item["reference"])
    else:
        out = model.enhance_file(item["mixture"])
    np.save(item["output"], out.detach().cpu().numpy())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("recipes", "tests", "train"))
print("MODULES " + json.dumps(loaded))
"""


def _inputs_and_expected(run: Path, recipe: str, kind: str, keep: Path) -> list:
    """Copy the test inputs and the recipe's estimates of its saved examples out of the run."""
    report = run / "test_report" / REPORT_SUBFOLDER.get(recipe, "")
    examples = sorted(p for p in (report / "examples").iterdir() if p.is_dir())
    assert examples, f"no examples in {report}"
    items = []
    for example in examples:
        uid = example.name
        if kind in ("separation", "speaker_extraction"):
            sets = run / "prepared" / "triplets_test"
            sources = {"mixture": sets / "mix" / f"{uid}-mixed.wav"}
            if kind == "speaker_extraction":
                sources["reference"] = sets / "refs" / f"{uid}-ref.wav"
        else:
            sources = {"mixture": run / "prepared" / "fixed_test" / "mixture" / f"{uid}.wav"}
        item = {"id": uid, "output": str(keep / f"{uid}.npy")}
        for name, source in sources.items():
            item[name] = str(shutil.copy(source, keep / f"{uid}-{name}.wav"))
        estimates = sorted(example.glob("estimate*.wav"))
        item["expected"] = [str(shutil.copy(e, keep / f"{uid}-{e.name}")) for e in estimates]
        items.append(item)
    return items


def _installed_packages_only(tmp_path: Path) -> Path:
    """A folder holding only the packages ``pip install`` installs (pyproject: custom_modules*, data_prepare*)."""
    site = tmp_path / "site"
    site.mkdir()
    for package in ("custom_modules", "data_prepare"):
        (site / package).symlink_to(ROOT / package)
    return site


def _check_enhancement(item):
    ours = limit_peak(np.load(item["output"]).astype(np.float64))  # as the example writer does
    recipe, _ = sf.read(item["expected"][0])
    assert np.abs(recipe).max() > 20 * LSB, "a trivially silent comparison"
    assert recipe.shape == ours.shape
    assert np.abs(recipe - ours).max() <= 1.5 * LSB, np.abs(recipe - ours).max() / LSB


def _check_separation(item):
    ours = np.load(item["output"]).astype(np.float64)  # (samples, sources), each peak 1
    recipes = [sf.read(path)[0] for path in item["expected"]]  # PIT-ordered estimates
    assert ours.shape == (len(recipes[0]), len(recipes))
    errors = {}
    for order in ([0, 1], [1, 0]):
        errors[tuple(order)] = max(
            np.abs(ours[:, j] - recipe / np.abs(recipe).max()).max() * np.abs(recipe).max()
            for j, recipe in zip(order, recipes, strict=True)
        )
    # Scaled back to the file's level, the difference is within the 16-bit quantisation of
    # the sample and of the file's peak (libsndfile rounds toward -inf: < 1 LSB each).
    assert min(errors.values()) <= 2 * LSB, {k: v / LSB for k, v in errors.items()}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(CPU_YAMLS))
def test_pretrained_folder_reproduces_the_recipe_in_a_fresh_process(recipe, demo_corpus, tmp_path):
    train_py, hparams = CPU_YAMLS[recipe]
    kind = interface_kind(hparams)
    run = tmp_path / "run"
    proc = run_recipe(train_py, hparams, demo_corpus, run)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    folder = tmp_path / "pretrained"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    exported = subprocess.run(
        [sys.executable, "-m", "custom_modules.export", "--run", str(run), "--out", str(folder)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    assert INTERFACES[kind].cls in exported.stdout
    card = (folder / "README.md").read_text()
    assert f"recipes/{recipe}" in card and INTERFACES[kind].cls in card

    keep = tmp_path / "inputs"
    keep.mkdir()
    items = _inputs_and_expected(run, recipe, kind, keep)
    shutil.rmtree(run)  # the fresh process has no run folder to read
    assert str(run) not in (folder / "hyperparams.yaml").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = {
        "kind": kind,
        "folder": str(folder),
        "savedir": str(tmp_path / "savedir"),
        "items": [{k: v for k, v in item.items() if k != "expected"} for item in items],
    }
    (elsewhere / "job.json").write_text(json.dumps(job))
    (elsewhere / "load.py").write_text(LOADER)
    fresh_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST", "HF_"))
    }
    fresh_env.update(
        PYTHONPATH=str(_installed_packages_only(tmp_path)),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    loaded = subprocess.run(
        [sys.executable, "load.py", "job.json"],
        capture_output=True, text=True, timeout=600, env=fresh_env, cwd=elsewhere,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stdout[-3000:] + loaded.stderr[-3000:]
    assert "MODULES []" in loaded.stdout  # nothing of the recipes or the tests was imported

    for item in items:
        if kind == "separation":
            _check_separation(item)
        else:
            _check_enhancement(item)


# ---- the command lines take --model <pretrained folder> as well as --run --------------------


@pytest.fixture(scope="module")
def pretrained_unet(unet_tcm_cpu_demo_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained") / "unet_tcm"
    export_pretrained(unet_tcm_cpu_demo_run, folder)
    return folder


def _tone_and_noise(path, seconds=2.5, sr=16000):
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * sr)) / sr
    samples = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, samples.astype(np.float32), sr, subtype="FLOAT")
    return path


@pytest.mark.slow
def test_enhance_and_streaming_clis_take_a_pretrained_folder(
    unet_tcm_cpu_demo_run, pretrained_unet, tmp_path
):
    from custom_modules.inference.enhance import main as enhance_main
    from custom_modules.streaming.__main__ import main as stream_main

    noisy = _tone_and_noise(tmp_path / "noisy.wav")
    outputs = {}
    for option, source in (("--run", unet_tcm_cpu_demo_run), ("--model", pretrained_unet)):
        folder = tmp_path / option.strip("-")
        argv = [option, str(source), "--input", str(noisy)]
        assert enhance_main([*argv, "--output", str(folder / "offline")]) == 0
        assert stream_main([*argv, "--output", str(folder / "streamed.wav")]) == 0
        outputs[option] = (
            sf.read(folder / "offline" / "noisy.wav")[0],
            sf.read(folder / "streamed.wav")[0],
        )
    for by_run, by_model in zip(outputs["--run"], outputs["--model"], strict=True):
        assert np.abs(by_run).max() > 1e-3
        np.testing.assert_array_equal(by_model, by_run)


def _tiny_separation_folder(folder: Path) -> Path:
    """A pretrained folder of a tiny (untrained) Conv-TasNet, written by hand."""
    tree = YAML().load(
        "sample_rate: 8000\nmodel: !new:custom_modules.models.conv_tasnet.ConvTasNet "
        "{N: 8, L: 8, B: 4, H: 8, P: 3, X: 1, R: 1, num_sources: 2}\n"
    )
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text(inference_yaml(tree, "separation", num_sources=2))
    from custom_modules.models.conv_tasnet import ConvTasNet

    model = ConvTasNet(N=8, L=8, B=4, H=8, P=3, X=1, R=1, num_sources=2)
    torch.save(model.state_dict(), folder / "model.ckpt")
    return folder


def test_clis_refuse_a_pretrained_folder_of_another_kind(tmp_path, capsys):
    from custom_modules.inference.enhance import main as enhance_main
    from custom_modules.streaming.__main__ import main as stream_main
    from custom_modules.streaming.export import main as onnx_main

    folder = _tiny_separation_folder(tmp_path / "separation")
    separator = load_pretrained(folder)
    assert separator.separate_batch(torch.zeros(1, 1001)).shape == (1, 1001, 2)
    noisy = _tone_and_noise(tmp_path / "noisy.wav", sr=8000)
    argv = ["--model", str(folder), "--input", str(noisy)]
    assert enhance_main([*argv, "--output", str(tmp_path / "out")]) == 1
    assert "WaveformSeparation model, not an enhancement one" in capsys.readouterr().err
    assert stream_main([*argv, "--output", str(tmp_path / "s.wav")]) == 1
    assert "not a streamable UNet-TCM" in capsys.readouterr().err
    assert onnx_main(["--model", str(folder), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not a streamable UNet-TCM" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "s.wav").exists()
