"""Fault injection on the real recipe: kill -9, concurrent trainings, files removed after prep.

The UNet-TCM CPU recipe (``unet_cpu.yaml``) trains on the tiny demo corpus
(``demo_corpus``, tests/conftest.py) with the harness' CPU-size overrides and a
few more (3 epochs of 8 steps, an intra-epoch checkpoint after every step,
no time budget, data loading in the training process). See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from custom_modules.data.mixing import OnTheFlyDataset
from custom_modules.data.recipe_data import build_mixer

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "recipes" / "unet_tcm" / "train.py"
HPARAMS = ROOT / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"
NUM_KILLS = 12
SMALL = {
    "batch_size": 2,
    "crop_sec": 1.0,
    "eval_crop_sec": 1.5,
    "num_valid_examples": 4,
    "num_test_examples": 2,
    "num_examples_to_save": 1,
    "num_worst_examples_to_save": 1,
    "metric_workers": 0,
    "num_train_workers": 0,
    "train_batches_per_epoch": 8,
    "number_of_epochs": 3,
    "max_train_minutes": 0,
    "use_tensorboard": False,
    "valid_metrics": "[si_snr, stoi]",
    "test_metrics": "[si_snr, stoi]",
    # SpeechBrain run options: an intra-epoch checkpoint after every optimizer step.
    "ckpt_interval_minutes": 0,
    "ckpt_interval_steps": 1,
}


def command(data_folder, output, **changes):
    options = {**SMALL, **changes}
    args = [sys.executable, str(TRAIN_PY), str(HPARAMS), "--data_folder", str(data_folder),
            "--output_folder", str(output), "--noprogressbar"]  # fmt: skip
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return args


def environment():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def run(args, timeout=300):
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=environment(), cwd=ROOT
    )


def checkpoints(save: Path) -> list:
    """(meta, folder) of every checkpoint, oldest first."""
    found = []
    for folder in save.glob("CKPT+*"):
        found.append((yaml.safe_load((folder / "CKPT.yaml").read_text()), folder))
    return sorted(found, key=lambda pair: pair[0]["unixtime"])


def final_state(output: Path) -> dict:
    """What must not depend on interruptions: steps, metrics, logged losses, test results."""
    meta, newest = checkpoints(output / "save")[-1]
    brain = yaml.safe_load((newest / "brain.ckpt").read_text())
    epochs = {}
    for line in (output / "train_log.txt").read_text().splitlines():
        match = re.match(r"epoch: (\d+),", line)
        if match:
            epochs[int(match.group(1))] = line  # a re-run epoch logs its line again
    return {
        "optimizer_step": brain["optimizer_step"],
        "valid": {k: v for k, v in meta.items() if k not in ("unixtime", "end-of-epoch")},
        "epoch_lines": epochs,
        "test": json.loads((output / "test_report" / "summary.json").read_text()),
    }


def temporaries(save: Path) -> list:
    try:
        return sorted(e.name for e in os.scandir(save) if e.name.startswith(".CKPT"))
    except FileNotFoundError:
        return []


def kill_at_nth_save(proc, save: Path, nth: int, extra_delay=0.0, deadline=120.0) -> bool:
    """SIGKILL ``proc`` when its ``nth`` checkpoint save starts (a new temporary folder).

    ``extra_delay`` seconds later (then the kill lands in the training step,
    the deletion of old checkpoints, or validation that follow), or at
    ``deadline`` seconds after the start, whichever comes first. Returns
    whether the kill landed while that save's temporary folder still existed
    (the save was cut half-way).
    """
    seen, kill_at, watched = set(), time.monotonic() + deadline, []
    while proc.poll() is None and time.monotonic() < kill_at:
        new = [name for name in temporaries(save) if name.endswith(".tmp") and name not in seen]
        seen.update(new)
        if new and not watched and len(seen) >= nth:
            watched = new
            kill_at = min(kill_at, time.monotonic() + extra_delay)
        time.sleep(0.001)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return bool(watched) and any(name in temporaries(save) for name in watched)


def kill_when(proc, condition, timeout=240.0) -> None:
    """SIGKILL ``proc`` as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_kill_9_at_random_moments_always_resumes_to_the_same_result(demo_corpus, tmp_path):
    reference = tmp_path / "reference"
    proc = run(command(demo_corpus, reference))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = final_state(reference)
    assert (
        expected["optimizer_step"] == SMALL["number_of_epochs"] * SMALL["train_batches_per_epoch"]
    )

    output = tmp_path / "interrupted"
    save = output / "save"
    rng = random.Random(14)
    cut_saves, log = 0, []

    def start(attempt):
        sink = open(tmp_path / f"attempt{attempt}.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            command(demo_corpus, output), stdout=sink, stderr=subprocess.STDOUT,
            env=environment(), cwd=ROOT,
        )  # fmt: skip
        proc.sink = sink
        return proc

    # At most 12 of the 24 steps are done during these kills (saves #1-#2 of a
    # process, a step lost when its save is cut): the run never ends by itself.
    for attempt in range(NUM_KILLS):
        proc = start(attempt)
        mode = attempt % 3
        if mode == 0:  # the moment a checkpoint save starts: cut it half-way
            nth = rng.randint(1, 2)
            cut = kill_at_nth_save(proc, save, nth)
            cut_saves += cut
            log.append(f"kill {attempt}: at the start of save #{nth}; cut half-way: {cut}")
        elif mode == 1:  # just after a save: training step, deletion of old ones, validation
            nth, delay = rng.randint(1, 2), rng.uniform(0.0, 0.4)
            kill_at_nth_save(proc, save, nth, extra_delay=delay)
            log.append(f"kill {attempt}: {delay:.2f} s after save #{nth} started")
        else:  # start-up: lock, preparation, fixed sets, model construction, resuming
            delay = rng.uniform(0.2, 3.0)
            kill_at_nth_save(proc, save, 1, deadline=delay)
            log.append(f"kill {attempt}: {delay:.2f} s after the start (or its first save)")
        proc.sink.close()
        assert proc.returncode == -signal.SIGKILL, (
            f"the run ended by itself (status {proc.returncode}) before kill {attempt}: "
            + (tmp_path / f"attempt{attempt}.log").read_text()[-3000:]
        )
    # One more: let it finish training and kill it in the test stage.
    proc = start(NUM_KILLS)
    kill_when(proc, lambda: (output / "test_report").is_dir())
    proc.sink.close()
    log.append(f"kill {NUM_KILLS}: in the test stage (status {proc.returncode})")
    print("\n".join(log))  # shown with -s or on failure
    assert proc.returncode == -signal.SIGKILL, log

    proc = run(command(demo_corpus, output))
    assert proc.returncode == 0, "\n".join(log) + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert cut_saves >= 1, log  # at least one save was really cut half-way
    assert temporaries(save) == []  # stale temporary folders removed, none left
    got = final_state(output)
    assert got["optimizer_step"] == expected["optimizer_step"], log
    assert got["valid"] == expected["valid"], log  # bit-identical validation metrics
    assert got["epoch_lines"] == expected["epoch_lines"], log  # train losses: whole epochs
    assert got["test"] == expected["test"], log
    log_text = (output / "log.txt").read_text()
    assert "Loading a checkpoint from" in log_text


@pytest.mark.slow
def test_a_second_training_on_the_same_folder_fails_fast_and_the_first_is_unharmed(
    demo_corpus, tmp_path
):
    output = tmp_path / "run"
    lock = output / ".lock"
    with open(tmp_path / "first.log", "w") as sink:
        first = subprocess.Popen(
            command(demo_corpus, output, ckpt_interval_steps=0), stdout=sink,
            stderr=subprocess.STDOUT, env=environment(), cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # "Fast" as work done, not wall time (a loaded machine stretches the latter): the
        # CPU time of the second process, the only child waited for in between.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        second = run(command(demo_corpus, output, ckpt_interval_steps=0), timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        second_cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        assert first.poll() is None, "the first training ended before the second started"
        first.wait(timeout=300)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: output folder {output.resolve()} is in use by another training "
        f"(PID {first.pid} holds {lock.resolve()}); wait for it to end or choose another "
        "--output_folder (--debug shows the traceback)"
    )
    # Imports only (speechbrain, torch: ~5 s); data preparation or training would take far more.
    assert "Traceback" not in second.stderr and second_cpu_seconds < 20
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    lines = (output / "train_log.txt").read_text().splitlines()
    assert len(lines) == len(set(lines)) == SMALL["number_of_epochs"] + 1  # + the test line
    assert len(checkpoints(output / "save")) >= 1


@pytest.mark.slow
def test_a_training_file_removed_after_prep_is_skipped_and_prep_redoes_itself(
    demo_corpus, tmp_path
):
    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus)
    output = tmp_path / "run"
    first = run(command(corpus, output, number_of_epochs=1, train_batches_per_epoch=2))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    # The speech file that the first mixture of epoch 2 reads: remove it from the corpus.
    from custom_modules.inference.run_loading import load_run_hparams

    hparams = load_run_hparams(output)
    dataset = OnTheFlyDataset(build_mixer(hparams, "train"), length=4, seed=hparams["seed"],
                              return_metadata=True)  # fmt: skip
    dataset.set_epoch(2)
    victim = dataset[0]["metadata"]["speech"][0]["path"]
    assert victim.startswith(str(corpus))
    os.remove(victim)

    # Resumed training with the preparation skipped: the file is skipped and logged.
    args = command(corpus, output, number_of_epochs=2, train_batches_per_epoch=2)
    resumed = run([*args, "--skip_prep", "True"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"skipping bad file {victim}" in resumed.stdout + resumed.stderr

    # Preparation run again: it notices the vanished input and redoes the manifests.
    again = run([*command(corpus, output, number_of_epochs=2, train_batches_per_epoch=2)])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "preparing again: the input files changed" in again.stdout + again.stderr
    manifests = (output / "prepared").glob("speech_*.json")
    assert all(victim not in path.read_text() for path in manifests)


@pytest.mark.slow
def test_bad_override_fails_before_data_preparation(demo_corpus, tmp_path):
    output = tmp_path / "run"
    started = time.monotonic()
    proc = run(command(demo_corpus, output, lr="abc"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: override --lr abc: expected a number like the YAML's 0.001 "
        "(--debug shows the traceback)"
    )
    assert not output.exists()  # nothing written, no preparation started
    assert time.monotonic() - started < 60
