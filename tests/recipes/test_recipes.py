"""Recipe harness: every ``recipes/*/train.py`` with every training YAML.

Recipes and their hparams files are discovered (no hand-kept list): a YAML
is a training configuration when it has ``data_folder: !PLACEHOLDER``. Each
runs in SpeechBrain debug mode (a few batches of two epochs) on the tiny demo
corpus, with CPU-size overrides for the keys it has (see
``CPU_SIZE_OVERRIDES``; recipes name their keys alike so this works, see
docs/adding_a_recipe.md). The run must leave a train log, a checkpoint
carrying the recipe's ``checkpoint_key``, the test CSV, summary and web page
(checked in headless Chromium when installed), no W&B run (``use_wandb`` is
off by default), and the checkpoint loaded for the test must be the best one
by that key.

Static consistency checks: every top-level YAML key is used (by train.py,
the shared modules, SpeechBrain's run options or another key); every recipe
has a README with a results table; train.py stays short.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml as pyyaml
from speechbrain.utils.run_opts import RunOptions
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from custom_modules.data.recipe_data import EVAL_RANGE_KEYS, PLAIN_CORPUS_KEYS
from scripts.check_report_page import check_report_page, find_chromium

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
MAX_TRAIN_PY_LINES = 130

# Shrinks any recipe to CPU size; only keys a YAML has are passed.
CPU_SIZE_OVERRIDES = {
    "batch_size": 2,
    "crop_sec": 1.0,
    "eval_crop_sec": 1.5,
    "num_valid_examples": 4,
    "num_test_examples": 3,
    "num_examples_to_save": 2,
    "num_worst_examples_to_save": 1,
    "metric_workers": 0,
    "train_batches_per_epoch": 4,
    # Channel sizes of models that name them so (the Denoising WaveNet): the debug run
    # keeps the full layer layout and receptive field with few channels.
    "residual_channels": 8,
    "skip_channels": 8,
    "output_channels": "[16, 8]",
}


def is_training_yaml(path: Path) -> bool:
    """A training configuration has ``data_folder: !PLACEHOLDER``."""
    return re.search(r"^data_folder:\s*!PLACEHOLDER", path.read_text(), re.MULTILINE) is not None


def discover(recipes_dir: Path = RECIPES):
    """(train.py, yaml) pairs of every recipe (folders starting with "_" excluded)."""
    pairs = []
    for train_py in sorted(recipes_dir.glob("*/train.py")):
        if train_py.parent.name.startswith("_"):
            continue
        for hparams in sorted((train_py.parent / "hparams").glob("*.yaml")):
            if is_training_yaml(hparams):
                pairs.append((train_py, hparams))
    return pairs


def top_level_keys(path: Path) -> list:
    """Top-level keys of a HyperPyYAML file (read as text: tags are not resolved)."""
    return re.findall(r"^([A-Za-z_][\w]*)\s*:", path.read_text(), re.MULTILINE)


def cpu_size_overrides(hparams: Path) -> list:
    """``--key value`` of the ``CPU_SIZE_OVERRIDES`` that ``hparams`` has (others: no such key)."""
    keys = set(top_level_keys(hparams))
    overrides = []
    for key, value in CPU_SIZE_OVERRIDES.items():
        if key in keys:
            overrides += [f"--{key}", str(value)]
    return overrides


def run_recipe(train_py: Path, hparams: Path, data_folder: Path, output: Path, extra=()):
    """Run a recipe in debug mode with CPU-size overrides; return the completed process."""
    overrides = cpu_size_overrides(hparams)
    cmd = [
        sys.executable, str(train_py), str(hparams),
        "--data_folder", str(data_folder),
        "--output_folder", str(output),
        "--debug", "--debug_persistently", "--noprogressbar",
        *overrides, *extra,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def resolved_value(output: Path, key: str) -> str:
    """A scalar of the run's resolved ``hyperparams.yaml``."""
    text = (output / "hyperparams.yaml").read_text()
    match = re.search(rf"^{key}:\s*(.+?)\s*(#.*)?$", text, re.MULTILINE)
    assert match, f"{key} not found in {output / 'hyperparams.yaml'}"
    return match.group(1).strip().strip("'\"")


def read_ckpt_meta(ckpt_dir: Path) -> dict:
    return pyyaml.safe_load((ckpt_dir / "CKPT.yaml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train_py", "hparams"),
    discover(),
    ids=[f"{t.parent.name}/{h.stem}" for t, h in discover()],
)
def test_recipe_debug_run(train_py, hparams, demo_corpus, tmp_path):
    output = tmp_path / "run"
    proc = run_recipe(train_py, hparams, demo_corpus, output)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, f"{train_py} {hparams.name} failed:\n{log}"

    train_log = (output / "train_log.txt").read_text()
    assert re.search(r"epoch: 1\b.*train loss", train_log), train_log
    assert "valid" in train_log and "test" in train_log.lower(), train_log

    key = resolved_value(output, "checkpoint_key")
    save_folder = Path(resolved_value(output, "save_folder"))
    ckpts = sorted(save_folder.glob("CKPT+*"))
    assert ckpts, f"no checkpoint in {save_folder}"
    metas = {c: read_ckpt_meta(c) for c in ckpts}
    with_key = {c: m[key] for c, m in metas.items() if key in m}
    assert with_key, f"no checkpoint carries {key!r}: {metas}"
    assert all(math.isfinite(v) for v in with_key.values())

    # The checkpoint loaded for the test is the best one by the keep key.
    loaded = re.findall(r"Loading a checkpoint from (\S+)", proc.stdout + proc.stderr)
    assert loaded, "the test stage loaded no checkpoint"
    best = max(with_key, key=with_key.get)
    assert Path(loaded[-1]).name == best.name, (loaded[-1], with_key)

    report = Path(resolved_value(output, "test_report_folder"))
    with open(report / "per_utterance.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, "empty per-utterance CSV"
    estimate_cols = [c for c in rows[0] if c.endswith("_estimate")]
    assert estimate_cols, rows[0]
    for row in rows:
        assert row["id"], row
        assert any(math.isfinite(float(row[c])) for c in estimate_cols), row
    summary = json.loads((report / "summary.json").read_text())
    assert summary["num_utterances"] == len(rows)
    # The web page: written, and working in a real browser when there is one.
    assert (report / "index.html").is_file()
    if find_chromium() is not None:
        assert check_report_page(report) == [], f"{hparams.name}: index.html"
    assert not (output / "wandb").exists(), "use_wandb is False by default: no W&B run"

    if resolved_value(output, "use_tensorboard").lower() == "true":
        events = list(Path(resolved_value(output, "tensorboard_folder")).glob("events.out.*"))
        assert len(events) == 1, events
        accumulator = EventAccumulator(str(events[0]), size_guidance={"audio": 0, "images": 0})
        accumulator.Reload()
        tags = accumulator.Tags()
        assert any(t.startswith("loss/") for t in tags["scalars"]), tags["scalars"]
        assert any(t.startswith("valid_audio/") for t in tags["audio"]), tags["audio"]
        assert any(t.startswith("valid_spectrogram/") for t in tags["images"]), tags["images"]


def test_discovery_finds_the_recipes():
    found = {(t.parent.name, h.name) for t, h in discover()}
    assert ("unet_tcm", "unet.yaml") in found and ("unet_tcm", "unet_cpu.yaml") in found, found


def _shared_sources() -> str:
    """Source of the shared modules recipes build on (keys they read count as used)."""
    return "\n".join(p.read_text() for p in sorted((ROOT / "custom_modules").rglob("*.py")))


@pytest.mark.parametrize(
    ("train_py", "hparams"),
    discover(),
    ids=[f"{t.parent.name}/{h.stem}" for t, h in discover()],
)
def test_every_yaml_key_is_used(train_py, hparams):
    text = hparams.read_text()
    code = train_py.read_text() + _shared_sources()
    run_options = {f.name for f in fields(RunOptions)}
    # Read in a loop by custom_modules.data.recipe_data.prepare_manifests (plain corpus roots).
    passed_on = set(PLAIN_CORPUS_KEYS) | {f"eval_{key}" for key in EVAL_RANGE_KEYS}
    unused = []
    for key in top_level_keys(hparams):
        if key.startswith("__") or key in run_options or key in passed_on:
            continue  # side-effect keys (!apply) and SpeechBrain run options
        referenced = f"<{key}>" in text or re.search(rf"<{key}\[", text)
        in_code = re.search(rf"""hparams\[["']{key}["']\]|hparams\.{key}\b""", code)
        if not (referenced or in_code):
            unused.append(key)
    assert not unused, f"{hparams}: keys nobody reads: {unused}"


@pytest.mark.parametrize("recipe", sorted(p.parent for p in RECIPES.glob("*/train.py")))
def test_recipe_has_readme_with_results_table(recipe):
    readme = recipe / "README.md"
    assert readme.is_file(), f"{recipe.name} has no README.md"
    text = readme.read_text()
    assert re.search(r"^\|.*\|\s*$\n^\|\s*:?-{3,}", text, re.MULTILINE), (
        f"{readme} has no markdown results table"
    )


@pytest.mark.parametrize("train_py", sorted(RECIPES.glob("*/train.py")))
def test_train_py_is_short(train_py):
    lines = len(train_py.read_text().splitlines())
    assert lines <= MAX_TRAIN_PY_LINES, f"{train_py} has {lines} lines"
