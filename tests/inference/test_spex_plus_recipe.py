"""SpEx+ recipe tools: ``test.py -t`` on a generated custom directory, chunked
evaluation and the inference CLI (``recipes/spex_plus/test.py`` and ``infer.py``, thin
commands of ``custom_modules.inference.tse_evaluation`` and ``.speaker_extraction``).

The training recipe itself runs in the recipe harness (tests/recipes). Here a
run folder is made directly from the CPU YAML, as ``train.py`` leaves it
(resolved ``hyperparams.yaml`` + checkpoints carrying ``si_snr``), with two
checkpoints of different weights: the tools must use the better one. Their
numbers are checked against SI-SDRs computed here with that checkpoint's
weights.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from hyperpyyaml import resolve_references

from custom_modules.data.datasets import load_resampled
from custom_modules.evaluation.metrics import si_snr
from custom_modules.inference import speaker_extraction as extraction
from custom_modules.inference import tse_evaluation
from custom_modules.training.experiment import load_hparams
from custom_modules.training.tse import SpexPlusBrain, resolve_num_speakers

# Autouse fixture: each test runs torch on one thread (see test_spex_plus.py).
from tests.models.test_spex_plus import one_thread  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "spex_plus"
CPU_YAML = RECIPE / "hparams" / "spex_plus_cpu.yaml"
SR = 16000
NUM_SPEAKERS = 3


def voice(rng, seconds, f0, sr=SR):
    """A speech-like harmonic signal with vibrato and syllable-rate amplitude modulation."""
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    harmonics = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 4) * t) ** 2
    return (0.1 * harmonics * envelope).astype(np.float32)


def make_custom_dir(folder: Path, with_targets=True):
    """Three triplets; lengths not multiples of the stride; one triplet stored at 8 kHz."""
    rng = np.random.default_rng(0)
    specs = [("a", 1.3, 16000), ("b", 0.97, 16000), ("c", 1.61, 8000)]
    for uid, seconds, rate in specs:
        target, interferer = voice(rng, seconds, 140, rate), voice(rng, seconds, 230, rate)
        signals = {
            "mix": ("mix", "mixed", target + interferer),
            "ref": ("refs", "ref", voice(rng, 0.8, 140, rate)),
        }
        if with_targets:
            signals["target"] = ("targets", "target", target)
        for sub, suffix, samples in signals.values():
            (folder / sub).mkdir(parents=True, exist_ok=True)
            sf.write(str(folder / sub / f"{uid}-{suffix}.wav"), samples, rate, subtype="FLOAT")
    return folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as train.py leaves it; returns (folder, state dict of the best checkpoint)."""
    folder = tmp_path_factory.mktemp("spex") / "run"
    overrides = {"output_folder": str(folder), "data_folder": str(folder.parent)}
    # As train.py: hyperparams.yaml records the YAML's num_speakers (0), the head is sized
    # from the prepared data, and a checkpoint sizes it again when a tool loads the run.
    folder.mkdir(parents=True)
    with open(CPU_YAML, encoding="utf-8") as fin:
        (folder / "hyperparams.yaml").write_text(resolve_references(fin, overrides).getvalue())
    hparams = load_hparams(CPU_YAML, overrides)
    assert resolve_num_speakers(hparams, NUM_SPEAKERS) == NUM_SPEAKERS
    model, checkpointer = hparams["model"], hparams["checkpointer"]
    # The Brain registers itself in the checkpointer, as in training.
    SpexPlusBrain(modules=hparams["modules"], hparams=hparams, checkpointer=checkpointer)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():  # away from the initialisation, reproducibly
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    checkpointer.save_checkpoint(meta={"si_snr": 4.0, "loss": -4.0})
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    checkpointer.save_checkpoint(meta={"si_snr": 1.0, "loss": -1.0})
    return folder, best_state


def best_model(run_folder):
    """The CPU model with the best checkpoint's weights, in eval mode."""
    folder, state = run_folder
    hparams = load_hparams(
        CPU_YAML,
        {"output_folder": str(folder), "data_folder": str(folder), "num_speakers": NUM_SPEAKERS},
    )
    model = hparams["model"]
    model.load_state_dict(state)
    return model.eval()


def run_script(script, *args):
    """A recipe script in a subprocess, the project importable as with ``pip install -e .``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(RECIPE / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def read_triplet(folder, uid, sr=SR):
    """Mixture, reference and target of ``uid`` at ``sr``, resampled as CustomDirDataset does."""
    return [load_resampled(folder / sub / f"{uid}-{suffix}.wav", sr).numpy()
            for sub, suffix in (("mix", "mixed"), ("refs", "ref"), ("targets", "target"))]  # fmt: skip


def test_test_py_scores_a_custom_dir_with_the_best_checkpoint(run_folder, tmp_path):
    folder, _ = run_folder
    custom = make_custom_dir(tmp_path / "custom")
    report = tmp_path / "report"
    proc = run_script(
        "test.py", CPU_YAML, "-t", custom, "--output_folder", folder, "--report_folder", report,
        "--metric_workers", 0, "--num_examples_to_save", 1,
        "--chunk_sec", 0.5, "--chunk_overlap_sec", 0.1,
    )  # fmt: skip
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    best = next(p for p in sorted((folder / "save").glob("CKPT+*"))
                if "si_snr: 4.0" in (p / "CKPT.yaml").read_text())  # fmt: skip
    assert f"Loading a checkpoint from {best}" in proc.stdout + proc.stderr, log

    with open(report / "per_utterance.csv", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["a", "b", "c"]
    model = best_model(run_folder)
    expected_whole = {}
    for uid, row in rows.items():
        mixture, reference, target = read_triplet(custom, uid)
        estimate = extraction.extract_whole(
            model, mixture, extraction.embed_reference(model, reference)
        )
        expected_whole[uid] = si_snr(estimate, target)
        assert float(row["si_snr_estimate"]) == pytest.approx(expected_whole[uid], abs=2e-3)
        assert float(row["si_snr_mixture"]) == pytest.approx(si_snr(mixture, target), abs=2e-3)
        delta = float(row["si_snr_estimate"]) - float(row["si_snr_mixture"])
        assert float(row["si_snr_delta"]) == pytest.approx(delta, abs=2e-3)
        assert row["pesq_estimate"] != ""
    summary = json.loads((report / "summary.json").read_text())
    assert summary["num_utterances"] == 3
    assert summary["si_snr_delta"] == pytest.approx(
        np.mean([float(r["si_snr_delta"]) for r in rows.values()]), abs=1e-3
    )
    assert (report / "examples").is_dir() and (report / "results_table.md").is_file()

    # Chunked vs whole on the same set: the whole-utterance numbers are the same.
    with open(report / "chunked_vs_whole.csv", newline="") as handle:
        chunked_rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert sorted(chunked_rows) == ["a", "b", "c"]
    for uid, row in chunked_rows.items():
        assert float(row["si_sdr_whole"]) == pytest.approx(expected_whole[uid], abs=2e-3)
        assert int(row["num_chunks"]) >= 3  # 0.97-1.61 s in 0.5 s chunks with 0.1 s overlap
    chunked = json.loads((report / "chunked_summary.json").read_text())
    assert chunked["chunk_sec"] == 0.5 and chunked["overlap_sec"] == 0.1
    assert chunked["si_sdr_whole"] == pytest.approx(
        np.mean(list(expected_whole.values())), abs=2e-3
    )
    assert "chunked" in proc.stdout and "whole" in proc.stdout
    # The run itself is untouched: no test log in it, the report went where asked.
    assert not (folder / "custom_test").exists()


def test_test_py_refuses_missing_targets_and_unknown_runs(run_folder, tmp_path, capsys):
    folder, _ = run_folder
    custom = make_custom_dir(tmp_path / "no_targets", with_targets=False)
    with pytest.raises(FileNotFoundError, match="targets.*infer.py"):
        tse_evaluation.main([str(CPU_YAML), "-t", str(custom), "--output_folder", str(folder)])
    unknown = [str(CPU_YAML), "-t", str(custom), "--output_folder", str(tmp_path / "none")]
    with pytest.raises(FileNotFoundError, match="not the output folder of a training run"):
        tse_evaluation.main(unknown)
    # The command line says it in one line.
    assert tse_evaluation.cli(unknown) == 1
    assert "error: " in capsys.readouterr().err


def test_chunked_extraction(run_folder):
    model = best_model(run_folder)
    rng = np.random.default_rng(1)
    mixture = voice(rng, 1.2345, 150) + voice(rng, 1.2345, 260)
    embedding = extraction.embed_reference(model, voice(rng, 1.0, 150))
    whole = extraction.extract_whole(model, mixture, embedding)
    # A chunk longer than the signal is whole-utterance processing.
    single = extraction.extract_in_chunks(model, mixture, embedding, chunk=32000, overlap=4000)
    np.testing.assert_allclose(single, whole, atol=1e-6)
    chunk, overlap = extraction.chunk_lengths(model, 0.4013, 0.1007, SR)
    assert (chunk, overlap) == (6420, 1600)  # rounded down to multiples of the 20-sample stride
    chunked = extraction.extract_in_chunks(model, mixture, embedding, chunk, overlap)
    assert chunked.shape == mixture.shape and np.all(np.isfinite(chunked))
    # Close to whole-utterance processing, yet not identical (chunk-local context and gLN).
    agreement = si_snr(chunked, whole)
    assert 5.0 < agreement < 80.0, agreement
    with pytest.raises(ValueError, match="overlap_sec"):
        extraction.chunk_lengths(model, 0.2, 0.15, SR)


def test_infer_cli_resamples_and_matches_the_model(run_folder, tmp_path):
    folder, _ = run_folder
    rng = np.random.default_rng(2)
    mixture_16k = voice(rng, 1.1, 150) + voice(rng, 1.1, 250)
    mix_path, ref_path, out_path = (
        tmp_path / "mix.wav",
        tmp_path / "enrol.flac",
        tmp_path / "out.wav",
    )
    mixture_44k = torchaudio.functional.resample(torch.from_numpy(mixture_16k), SR, 44100).numpy()
    sf.write(
        str(mix_path),
        np.stack([mixture_44k, np.zeros_like(mixture_44k)], 1),
        44100,
        subtype="FLOAT",
    )
    sf.write(str(ref_path), voice(rng, 0.9, 150, sr=8000), 8000)
    proc = run_script("infer.py", "--run", folder, "--mix", mix_path, "--ref", ref_path,
                      "--out", out_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "channel 0 of 2" in proc.stdout and "real-time factor" in proc.stdout
    info = sf.info(str(out_path))
    assert (info.samplerate, info.frames, info.channels) == (44100, len(mixture_44k), 1)

    model = best_model(run_folder)
    mixture, _, _ = extraction.load_for_model(mix_path, SR)
    reference, _, _ = extraction.load_for_model(ref_path, SR)
    expected = extraction.extract_whole(
        model, mixture, extraction.embed_reference(model, reference)
    )
    expected = torchaudio.functional.resample(torch.from_numpy(expected), SR, 44100).numpy()
    written, _ = sf.read(str(out_path), dtype="float32")
    scale = min(1.0, 0.999 / float(np.max(np.abs(expected))))  # the CLI's clipping guard
    np.testing.assert_allclose(written, expected * scale, atol=2e-4)


def test_infer_errors_are_clear(run_folder, tmp_path, capsys):
    folder, _ = run_folder
    mix_path, short_ref = tmp_path / "mix.wav", tmp_path / "short.wav"
    sf.write(str(mix_path), voice(np.random.default_rng(3), 0.5, 150), SR)
    sf.write(str(short_ref), np.zeros(100, dtype=np.float32), SR)
    common = ["--run", str(folder), "--mix", str(mix_path), "--out", str(tmp_path / "o.wav")]
    assert extraction.main([*common, "--ref", str(short_ref)]) == 1
    assert "reference has 100 samples" in capsys.readouterr().err
    assert extraction.main([*common, "--ref", str(tmp_path / "missing.wav")]) == 1
    assert "missing.wav" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()
    assert extraction.main(["--run", str(tmp_path), "--mix", str(mix_path), "--ref", str(mix_path),
                            "--out", str(tmp_path / "o.wav")]) == 1  # fmt: skip
    assert "hyperparams.yaml" in capsys.readouterr().err
