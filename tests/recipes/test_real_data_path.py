"""Every enhancement recipe trains and tests on real speech through the plain corpus layout.

A few seconds of ``../shared/real_corpus`` (the ``real_corpus_subset``
fixture) with the real noises of ``../shared/audio`` as an extra folder, the
corpus' own noise and RIR files held out for the test set, and a little
generated babble, synthetic noise and simulated rooms: the path
``make demo-real`` takes, in debug mode (a few batches).
"""

from __future__ import annotations

import json

import pytest

from custom_modules.files import load_manifest
from tests.recipes.test_recipes import RECIPES, run_recipe

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
