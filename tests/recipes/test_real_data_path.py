"""Every enhancement recipe trains and tests on real speech through the plain corpus layout.

A few seconds of ``../shared/real_corpus`` (the ``real_corpus_subset``
fixture) with the real noises of ``../shared/audio`` as an extra folder, the
corpus' own noise and RIR files held out for the test set, and a little
generated babble, synthetic noise and simulated rooms: the path
``make demo-real`` takes, in debug mode (a few batches).

The triplet recipes (SpEx+, the path of ``make demo-real-tse``, and
Conv-TasNet) draw their speakers from the same plain layout: speaker-disjoint
splits by ratio, in debug mode, with the SpEx+ diagnostics.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from custom_modules.audio.files import load_manifest
from tests.recipes.test_recipes import RECIPES, run_recipe

REPO = Path(__file__).resolve().parents[2]

CONFIGS = [
    ("unet_tcm", "unet_cpu.yaml"),
    ("spectral_mask", "train_cpu.yaml"),
    ("dcunet", "dcunet_cpu.yaml"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "yaml_name"), CONFIGS)
def test_recipe_trains_on_the_real_corpus(
    recipe, yaml_name, real_corpus_subset, real_audio_dir, tmp_path
):
    output = tmp_path / "run"
    extra = [
        "--extra_noise_folders", f"[{real_audio_dir / 'noise'}]",
        "--extra_rir_folders", f"[{real_audio_dir / 'rir'}]",
        "--test_patterns", "[noise/*, rir/*]",
        "--noise_test_ratio", "0", "--rir_test_ratio", "0",
        "--babble_speaker_ratio", "0.15", "--num_babble_files", "2", "--babble_sec", "3",
        "--num_synthetic_noise_files", "2", "--synthetic_noise_sec", "3",
        "--num_simulated_rirs", "2",
    ]  # fmt: skip
    train_py = RECIPES / recipe / "train.py"
    proc = run_recipe(
        train_py, RECIPES / recipe / "hparams" / yaml_name, real_corpus_subset, output, extra
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    prepared = output / "prepared"
    test_noise = load_manifest(prepared / "noise_test.json")
    assert sorted(e["path"].rsplit("/", 1)[-1] for e in test_noise.values()) == sorted(
        p.name for p in (real_corpus_subset / "noise").iterdir()
    )
    train_noise = load_manifest(prepared / "noise_train.json")
    sources = {e["source"] for e in train_noise.values()}
    assert {"generated/babble", "generated/synthetic_noise"} <= sources
    # The fixed test set is noise-disjoint: only held-out noise files were mixed in.
    test_set = load_manifest(next(prepared.glob("fixed_test*/manifest.json")))
    held_out = {e["path"] for e in test_noise.values()}
    for entry in test_set.values():
        assert {segment["path"] for segment in entry["noise"]} <= held_out
    summary = json.loads(next(output.rglob("summary.json")).read_text())
    assert summary["num_utterances"] >= 1
    if recipe == "unet_tcm":
        check_training_fit(output, train_noise)


def check_training_fit(run, train_noise):
    """``python -m scripts.fit_check`` scores the run on mixtures of its training manifests."""
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.fit_check", "--run", str(run),
         "--num_examples", "4"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| noise: " in proc.stdout
    result = json.loads((run / "fit_check" / "fit_check.json").read_text())
    assert result["num_examples"] == 4
    mixtures = load_manifest(run / "fit_check" / "mixtures" / "manifest.json")
    train_paths = {e["path"] for e in train_noise.values()}
    for entry in mixtures.values():  # drawn from the training noise files only
        assert {segment["path"] for segment in entry["noise"]} <= train_paths
    kinds = {"recorded", "babble", "synthetic_noise"}
    assert set(result["by_noise_source"]) <= kinds
    assert sum(g["n"] for g in result["by_condition"].values()) == 4
    for row in result["per_utterance"]:
        assert np.isfinite(row["si_snr_delta"]) and row["noise_source"] in kinds


# The triplet recipes draw their speakers from the plain layout (no noise, no RIRs): the
# subset's 8 speakers split 4 / 2 / 2, so every split has a target and an interferer.
TRIPLET_CONFIGS = {
    "spex_plus_onthefly": ("spex_plus", "spex_plus_cpu.yaml", [
        "--tir_curriculum_fraction", "0.5", "--speaker_pretrain_steps", "2",
        "--log_every_n_steps", "1",
    ]),
    "spex_plus_fixed": ("spex_plus", "spex_plus_cpu.yaml", [
        "--train_mode", "fixed", "--lr_policy", "warmup_cosine", "--lr_warmup_steps", "2",
    ]),
    "conv_tasnet": ("conv_tasnet", "convtasnet_cpu.yaml", []),
}  # fmt: skip


def _manifest_tsv_speakers(root):
    with open(root / "MANIFEST.tsv", encoding="utf-8", newline="") as handle:
        return {row["file"]: row["speaker"] for row in csv.DictReader(handle, delimiter="\t")}


@pytest.mark.parametrize("config", sorted(TRIPLET_CONFIGS))
def test_triplet_recipes_train_on_real_speakers(config, real_corpus_subset, tmp_path):
    recipe, yaml_name, extra = TRIPLET_CONFIGS[config]
    output = tmp_path / "run"
    extra = ["--valid_ratio", "0.25", "--test_ratio", "0.25", *extra]
    proc = run_recipe(
        RECIPES / recipe / "train.py",
        RECIPES / recipe / "hparams" / yaml_name,
        real_corpus_subset,
        output,
        extra,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Speaker-disjoint splits of the corpus' speakers (MANIFEST.tsv names them).
    speech = output / "prepared" / ("speech" if recipe == "spex_plus" else "")
    speakers = {
        split: {e["speaker"] for e in load_manifest(speech / f"speech_{split}.json").values()}
        for split in ("train", "valid", "test")
    }
    assert [len(speakers[s]) for s in ("train", "valid", "test")] == [4, 2, 2], speakers
    assert set.union(*speakers.values()) <= set(_manifest_tsv_speakers(real_corpus_subset).values())
    test_set = load_manifest(output / "prepared" / "triplets_test" / "manifest.json")
    for entry in test_set.values():
        assert entry["target_speaker"] in speakers["test"]
        assert entry["interferer_speaker"] in speakers["test"]
    summary = json.loads((output / "test_report" / "summary.json").read_text())
    assert summary["num_utterances"] >= 1
    if recipe == "spex_plus":
        train_log = (output / "train_log.txt").read_text()
        assert "train speaker_acc" in train_log, train_log
        for check in ("si_snr_zero_ref", "si_snr_other_ref"):
            assert f"{check}_delta" in summary, summary
        if config == "spex_plus_onthefly":
            assert "speaker pretraining steps: 2" in train_log
            # The curriculum starts at its start range (5 dB), minus the little of the time
            # budget that speaker pretraining used (it counts against the budget).
            first_low = float(re.search(r"tir_db_low: ([-+0-9.e]+)", train_log).group(1))
            assert 4.5 <= first_low <= 5.0, train_log
        tags = _tensorboard_scalars(output / "tensorboard")
        assert "speaker_acc/train" in tags, tags
        if config == "spex_plus_onthefly":  # every step
            assert "train_step/speaker_acc" in tags and "speaker_pretrain/ce" in tags, tags


def _tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(next(folder.glob("events.out.*"))))
    accumulator.Reload()
    return accumulator.Tags()["scalars"]


def test_fit_check_helpers():
    import doctest

    import scripts.fit_check as fit_check

    result = doctest.testmod(fit_check)
    assert result.attempted >= 2 and result.failed == 0
