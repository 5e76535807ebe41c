"""The spectral-masking recipe end to end: a short training run on a tiny demo corpus,
its test report, the export to an inference folder and SpeechBrain's
``SpectralMaskEnhancement.from_hparams`` / ``enhance_file`` on it.

Also checks, without training, that the recipe's YAMLs keep the data, fixed
sets and evaluation of UNet-TCM (so that both are compared on the same work).
"""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from ruamel.yaml import YAML

from custom_modules.data.recipe_data import PLAIN_CORPUS_KEYS
from custom_modules.inference.export import export_pretrained

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "spectral_mask"
HAS_ESPEAK = shutil.which("espeak-ng") is not None
SR = 16000

# Keys that define the data, the fixed valid/test sets, the training budget and
# the evaluation: they must be equal to UNet-TCM's for the comparison to hold.
SHARED_KEYS = (
    "seed", "skip_prep", "valid_ratio", "test_ratio", "split_seed", "sample_rate",
    "crop_sec", "eval_crop_sec", "speech_sampler", "noise_sampler", "rir_sampler",
    "mixer", "num_valid_examples", "num_test_examples", "valid_set_seed",
    "test_set_seed", "number_of_epochs", "max_train_minutes", "batch_size",
    "train_batches_per_epoch", "train_loader_options", "valid_loader_options",
    "test_loader_options", "checkpoint_key", "valid_metrics", "test_metrics",
    "num_examples_to_save", "num_worst_examples_to_save", "use_wandb", "epoch_counter", "log_every_n_steps", "tensorboard_audio_every",
    "noise_gain_range_db", "mixture_gain_range_db", "eval_noise_gain_range_db",
    "eval_mixture_gain_range_db", "eval_noise_weighting", "num_train_workers", *PLAIN_CORPUS_KEYS,
)  # fmt: skip


def yaml_tree(path):
    return YAML().load(Path(path).read_text(encoding="utf-8"))


def plain(node):
    """A ruamel tree as comparable Python values, tags included."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, dict):
        value = {k: plain(v) for k, v in node.items()}
    elif isinstance(node, list):
        value = [plain(v) for v in node]
    else:
        value = node.value if hasattr(node, "value") and tag else node
    return (tag, value) if tag else value


@pytest.mark.parametrize(
    "ours,theirs", [("train_cpu.yaml", "unet_cpu.yaml"), ("train.yaml", "unet.yaml")]
)
def test_yamls_share_data_fixed_sets_and_evaluation_with_unet_tcm(ours, theirs):
    mine = yaml_tree(RECIPE / "hparams" / ours)
    unet = yaml_tree(REPO / "recipes" / "unet_tcm" / "hparams" / theirs)
    for key in SHARED_KEYS:
        assert key in mine, f"{ours} lacks {key}"
        assert plain(mine[key]) == plain(unet[key]), f"{ours} and {theirs} differ on {key}"


def test_old_export_command_is_the_generic_export(tmp_path):
    """``export_inference.py`` still answers, as ``python -m custom_modules.export``."""
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    full = (RECIPE / "hparams" / "train_cpu.yaml").read_text(encoding="utf-8")
    data = str(tmp_path / "data")
    (run / "hyperparams.yaml").write_text(full.replace("!PLACEHOLDER", data), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(RECIPE / "export_inference.py"), "--run", str(run)]
    result = subprocess.run(
        [*command, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]  # after SpeechBrain's import-time notes
    assert last.startswith("error: ") and "no checkpoint" in last, result.stderr
    assert not (tmp_path / "out").exists()


# ---- End to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Tiny demo corpus, two short epochs (real checkpoints: no --debug), export."""
    if not HAS_ESPEAK:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    from data_prepare.demo.corpus import generate_demo_corpus

    root = tmp_path_factory.mktemp("spectral_mask")
    data = generate_demo_corpus(root / "demo", size="tiny", progress=False)
    run = root / "run"
    command = [
        sys.executable, str(RECIPE / "train.py"), str(RECIPE / "hparams" / "train_cpu.yaml"),
        "--data_folder", str(data), "--output_folder", str(run),
        "--number_of_epochs", "2", "--train_batches_per_epoch", "2", "--batch_size", "2",
        "--crop_sec", "1.0", "--eval_crop_sec", "1.5", "--num_valid_examples", "3",
        "--num_test_examples", "2", "--metric_workers", "0", "--use_tensorboard", "False",
        "--num_examples_to_save", "2", "--noprogressbar",
    ]  # fmt: skip
    # One thread: on a shared, loaded CPU the LSTM is many times slower with
    # two spinning OpenMP threads than with one.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = root / "inference"
    export_pretrained(run, out)
    return {"run": run, "inference": out, "root": root}


@pytest.mark.slow
def test_training_run_writes_the_shared_test_report(trained_run):
    report = trained_run["run"] / "test_report"
    with open(report / "per_utterance.csv", newline="") as fin:
        rows = list(csv.DictReader(fin))
    assert len(rows) == 2
    for row in rows:
        for key in ("si_snr", "stoi", "pesq"):
            estimate, mixture = float(row[f"{key}_estimate"]), float(row[f"{key}_mixture"])
            assert math.isfinite(estimate) and math.isfinite(mixture)
            assert float(row[f"{key}_delta"]) == pytest.approx(estimate - mixture, abs=2e-4)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["num_utterances"] == 2
    assert 0 < summary["stoi_estimate"] <= 1
    assert len(list((report / "examples").glob("*/estimate.wav"))) == 2


@pytest.mark.slow
def test_export_takes_the_best_stoi_checkpoint(trained_run):
    checkpoints = {
        p: yaml_tree(p / "CKPT.yaml") for p in (trained_run["run"] / "save").glob("CKPT*")
    }
    scored = {p: meta["stoi"] for p, meta in checkpoints.items() if "stoi" in meta}
    assert scored
    best = torch.load(max(scored, key=scored.get) / "model.ckpt", weights_only=True)
    exported = torch.load(trained_run["inference"] / "model.ckpt", weights_only=True)
    assert sorted(exported) == sorted(best)
    assert all(torch.equal(exported[key], best[key]) for key in best)


@pytest.mark.slow
def test_from_hparams_enhance_file(trained_run, tmp_path):
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    enhancer = SpectralMaskEnhancement.from_hparams(
        source=str(trained_run["inference"]), savedir=str(tmp_path / "savedir")
    )
    rng = np.random.default_rng(3)
    t = np.arange(int(1.3 * SR)) / SR
    noisy = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    noisy = (noisy + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    sf.write(tmp_path / "noisy.wav", noisy, SR, subtype="FLOAT")

    enhanced = enhancer.enhance_file(str(tmp_path / "noisy.wav"), str(tmp_path / "enhanced.wav"))
    assert enhanced.shape == (noisy.size,)
    assert torch.isfinite(enhanced).all()
    difference = float(torch.sqrt(torch.mean((enhanced - torch.from_numpy(noisy)) ** 2)))
    assert difference > 1e-3 * float(np.sqrt(np.mean(noisy**2)))  # the model did something
    written, sr = sf.read(tmp_path / "enhanced.wav", dtype="float32")
    assert sr == SR and written.shape == (noisy.size,)
    np.testing.assert_allclose(written, enhanced.numpy(), atol=1e-4)  # 16-bit PCM file

    # Other rates and channel counts are resampled/down-mixed to the model's input.
    stereo_8k = np.stack([noisy[::2], noisy[::2]], axis=1)
    sf.write(tmp_path / "stereo_8k.wav", stereo_8k, SR // 2)
    assert enhancer.enhance_file(str(tmp_path / "stereo_8k.wav")).shape == (2 * len(stereo_8k),)


@pytest.mark.slow
def test_inference_reproduces_the_recipe_estimate(trained_run):
    """SpectralMaskEnhancement computes what the recipe computed on the test set."""
    from speechbrain.inference.enhancement import SpectralMaskEnhancement

    folder = str(trained_run["inference"])
    enhancer = SpectralMaskEnhancement.from_hparams(source=folder, savedir=folder)
    example = sorted((trained_run["run"] / "test_report" / "examples").iterdir())[0]
    mixture = trained_run["run"] / "prepared" / "fixed_test" / "mixture" / f"{example.name}.wav"
    ours = enhancer.enhance_file(str(mixture)).numpy().astype(np.float64)
    recipe, _ = sf.read(example / "estimate.wav")  # written as 16-bit PCM
    lsb = 2.0**-15
    assert np.abs(ours).max() < 0.99  # so the example writer did not rescale it
    assert np.abs(recipe).max() > 20 * lsb  # not a trivially silent comparison
    # Identical up to the 16-bit quantisation of the example file.
    assert np.abs(recipe - ours).max() <= 1.5 * lsb
