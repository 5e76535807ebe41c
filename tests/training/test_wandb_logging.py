"""Weights & Biases logging (``use_wandb``), offline only, and the examples of a recipe's report.

A tiny UNet-TCM run (2 epochs of 4 steps, 6 test utterances) with
``--use_wandb True`` under ``WANDB_MODE=offline`` (every W&B folder in the
test's temporary folder; nothing reaches the network) must leave an offline
run whose history holds every scalar the run wrote to TensorBoard with the
same values, the training and validation audio, and the test means. Its test
report must save the first and the worst utterances (by the improvement of
``checkpoint_key``) and its page must pass the browser check. With
``use_wandb: False`` nothing of W&B is built or imported.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.check_report_page import check_report_page, find_chromium

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "unet_tcm"
NUM_FIRST, NUM_WORST = 1, 2
RUN_OPTIONS = {
    "batch_size": 2, "crop_sec": 1.0, "eval_crop_sec": 1.5, "num_valid_examples": 2,
    "num_test_examples": 6, "num_examples_to_save": NUM_FIRST,
    "num_worst_examples_to_save": NUM_WORST, "metric_workers": 0, "train_batches_per_epoch": 4,
    "number_of_epochs": 2, "max_train_minutes": 0, "log_every_n_steps": 1,
    "tensorboard_audio_every": 2, "use_wandb": True,
}  # fmt: skip
BLOCK = 32768  # W&B's transaction log: LevelDB-style blocks and record headers


def wandb_records(path):
    """The protobuf records of an offline run's ``run-<id>.wandb`` (W&B's LevelDB-style log)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", 7  # 7-byte file header
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or last of a split record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            records.append(record)
            pending = b""
        elif kind in (2, 3):  # first, middle
            pending += chunk
    return records


def _key(item):
    return item.key or "/".join(item.nested_key)


@pytest.fixture(scope="module")
def wandb_run(demo_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wandb_run")
    output = tmp / "run"
    options = [str(part) for key, value in RUN_OPTIONS.items() for part in (f"--{key}", value)]
    command = [
        sys.executable, str(RECIPE / "train.py"), str(RECIPE / "hparams" / "unet_cpu.yaml"),
        "--data_folder", str(demo_corpus), "--output_folder", str(output), "--noprogressbar",
        *options,
    ]  # fmt: skip
    home = tmp / "wandb_home"
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline", "WANDB_DIR": str(home), "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_DATA_DIR": str(home / "data"),
    }  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((output / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run under {output / 'wandb'}: {runs}"
    history, summary = [], {}
    for record in wandb_records(next(runs[0].glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return {"output": output, "wandb": runs[0], "history": history, "summary": summary}


def tensorboard_scalars(output):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (output / "tensorboard").glob("events.out.*")
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@pytest.mark.slow
def test_wandb_offline_run_holds_the_tensorboard_scalars(wandb_run):
    scalars = tensorboard_scalars(wandb_run["output"])
    assert any(t.startswith("train_step/") for t in scalars), scalars.keys()
    assert {"loss/train", "loss/valid", "stoi/valid"} <= scalars.keys()
    history = wandb_run["history"]
    for tag, points in scalars.items():
        rows = [row for row in history if tag in row]
        assert rows, f"W&B has no {tag!r} (TensorBoard has {points})"
        if tag.startswith("train_step/"):
            # TensorBoard's step is the optimizer step, W&B's x-axis field too.
            ours = {row["optimizer_step"]: row[tag] for row in rows}
        elif tag == "epoch":
            ours = {i + 1: row[tag] for i, row in enumerate(rows)}
        else:  # "<stat>/<stage>" once per epoch; TensorBoard counts the epochs from 1
            ours = {row["epoch"]: row[tag] for row in rows}
        theirs = dict(points)
        assert ours.keys() == theirs.keys(), (tag, ours, theirs)
        for step, value in theirs.items():  # TensorBoard keeps float32
            assert ours[step] == pytest.approx(value, rel=1e-6, abs=1e-6), (tag, step)


@pytest.mark.slow
def test_wandb_offline_run_holds_audio_and_test_results(wandb_run):
    history, media = wandb_run["history"], wandb_run["wandb"] / "files"
    # Media are stored flattened: "<key>/_type", "<key>/path" (relative to files/).
    for tag in ("train", "valid", "test"):
        for key in [f"{tag}_audio/{name}" for name in ("mixture", "target", "estimate")]:
            rows = [row for row in history if f"{key}/path" in row]
            assert rows, f"no {key} in the W&B history"
            for row in rows:
                assert row[f"{key}/_type"] == "audio-file"
                assert (media / row[f"{key}/path"]).stat().st_size > 44  # more than a WAV header
        assert any(row.get(f"{tag}_spectrogram/_type") == "image-file" for row in history)
    test_rows = [row for row in history if "test_audio/estimate/path" in row]
    examples = list((wandb_run["output"] / "test_report" / "examples").iterdir())
    assert len(test_rows) == len(examples)
    report = json.loads((wandb_run["output"] / "test_report" / "summary.json").read_text())
    for key in ("si_snr", "stoi", "pesq"):
        for part in ("mixture", "estimate", "delta"):
            stored = wandb_run["summary"][f"{key}_{part}/test"]
            assert stored == pytest.approx(report[f"{key}_{part}"]), (key, part)


@pytest.mark.slow
def test_the_report_saves_the_first_and_the_worst_utterances(wandb_run):
    report = wandb_run["output"] / "test_report"
    with open(report / "per_utterance.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == RUN_OPTIONS["num_test_examples"]

    def rank(item):  # lowest STOI improvement first, a failed score the lowest
        index, row = item
        delta = float(row["stoi_delta"])
        return (-math.inf if math.isnan(delta) else delta, index)

    worst = [row["id"] for _, row in sorted(enumerate(rows), key=rank)[:NUM_WORST]]
    first = [row["id"] for row in rows[:NUM_FIRST]]
    saved = sorted(p.name for p in (report / "examples").iterdir())
    assert saved == sorted(set(first + worst))
    page = (report / "index.html").read_text()
    for uid in worst:
        section = re.search(rf"<section id='example-{uid}'>(.*?)</section>", page)
        assert section and "among the worst" in section.group(1), uid


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed")
def test_the_recipe_report_page_works_in_headless_chromium(wandb_run):
    assert check_report_page(wandb_run["output"] / "test_report") == []


def test_nothing_of_wandb_is_built_or_imported_when_off():
    """Every training YAML loads with the logger as a partial; a Brain's loggers build without wandb."""
    script = """
import functools, sys
from types import SimpleNamespace
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.train_logger import WandBLogger
from custom_modules.training.brain import EnhancementBrain
for path in sys.argv[1:]:
    with open(path) as handle:
        hparams = load_hyperpyyaml(handle, {"data_folder": "/nonexistent", "output_folder": "/tmp/x"})
    assert hparams["use_wandb"] is False, path
    partial = hparams["wandb_logger"]
    assert isinstance(partial, functools.partial) and partial.func is WandBLogger, path
brain = EnhancementBrain.__new__(EnhancementBrain)
brain.hparams = SimpleNamespace(use_tensorboard=False, use_wandb=False)
brain.ensure_tensorboard()
assert brain.wandb_run is None and not brain.logs_media()
assert "wandb" not in sys.modules, "wandb was imported"
print("ok", len(sys.argv) - 1)
"""
    from tests.recipes.test_recipes import discover

    yamls = [str(h) for _, h in discover()] + [str(ROOT / "recipes/_template/hparams/train.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, *yamls], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", str(len(yamls))]
