"""The time budget of a training run and the learning-rate schedule that follows it."""

from __future__ import annotations

import math
import time

import pytest
from speechbrain.utils.checkpoints import Checkpointer

from custom_modules.training.schedules import TimeLimitedEpochCounter, WarmupCosineSchedule


def test_time_budget_continues_across_a_resume(tmp_path, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr("custom_modules.training.schedules.time.monotonic", lambda: clock["now"])
    counter = TimeLimitedEpochCounter(limit=100, max_minutes=10)
    checkpointer = Checkpointer(tmp_path, {"counter": counter})
    assert next(counter) == 1
    clock["now"] += 6 * 60  # six minutes of training
    assert next(counter) == 2
    assert counter.progress(0, 10) == pytest.approx(0.6)
    checkpointer.save_checkpoint()

    # A new process (the clock keeps going: the pause does not count).
    clock["now"] += 3600
    resumed = TimeLimitedEpochCounter(limit=100, max_minutes=10)
    Checkpointer(tmp_path, {"counter": resumed}).recover_if_possible()
    assert resumed.current == 2 and resumed.progress(0, 10) == pytest.approx(0.6)
    assert next(resumed) == 3
    clock["now"] += 3 * 60
    assert next(resumed) == 4  # 9 minutes so far
    clock["now"] += 2 * 60
    with pytest.raises(StopIteration):  # 11 > 10 minutes: the budget is used up
        next(resumed)


def test_counters_saved_without_a_time_still_load(tmp_path):
    (tmp_path / "counter.ckpt").write_text("7")
    counter = TimeLimitedEpochCounter(limit=10, max_minutes=5)
    counter._recover(tmp_path / "counter.ckpt")
    assert counter.current == 7 and counter.elapsed_seconds() == 0.0


def test_cpu_clock_counts_compute_not_waiting(monkeypatch):
    """clock="cpu": only CPU time spends the budget (a busy machine makes it no smaller)."""
    cpu = {"seconds": 50.0}
    wall = {"now": 1000.0}
    monkeypatch.setattr("custom_modules.training.schedules.cpu_seconds", lambda: cpu["seconds"])
    monkeypatch.setattr("custom_modules.training.schedules.time.monotonic", lambda: wall["now"])
    counter = TimeLimitedEpochCounter(limit=100, max_minutes=2, clock="cpu")
    counter.start()  # e.g. before speaker pretraining
    cpu["seconds"] += 60  # one CPU minute of pretraining
    wall["now"] += 600  # ten wall-clock minutes: waiting for the CPU
    assert next(counter) == 1
    assert counter.progress(0, 10) == pytest.approx(0.5)
    cpu["seconds"] += 61
    with pytest.raises(StopIteration):
        next(counter)


def test_cpu_seconds_grows_with_work_and_not_with_sleep():
    from custom_modules.training import schedules

    before = schedules.cpu_seconds()
    time.sleep(0.2)
    slept = schedules.cpu_seconds() - before
    total = 0.0
    start = time.process_time()
    while time.process_time() - start < 0.3:
        total += math.sqrt(total + 1.0)
    worked = schedules.cpu_seconds() - before - slept
    assert slept < 0.1 and worked >= 0.25


def test_unknown_budget_clock_is_refused():
    with pytest.raises(ValueError, match="budget clock"):
        TimeLimitedEpochCounter(limit=1, max_minutes=1, clock="gpu")


def test_progress_without_a_budget_counts_epochs():
    counter = TimeLimitedEpochCounter(limit=4, max_minutes=0)
    next(counter)
    next(counter)  # epoch 2 of 4
    assert counter.progress(step_in_epoch=5, batches_per_epoch=10) == pytest.approx(1.5 / 4)


def test_warmup_then_cosine_to_the_final_ratio():
    schedule = WarmupCosineSchedule(warmup_steps=100, final_ratio=0.05)
    assert schedule.factor(1, 0.0) == pytest.approx(0.01)
    assert schedule.factor(50, 0.0) == pytest.approx(0.5)
    assert schedule.factor(100, 0.0) == pytest.approx(1.0)
    assert schedule.factor(500, 0.5) == pytest.approx(0.05 + 0.95 * 0.5)
    assert schedule.factor(500, 1.0) == pytest.approx(0.05)
    values = [schedule.factor(500, p / 10) for p in range(11)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert WarmupCosineSchedule(0, 1.0).factor(1, 0.7) == 1.0  # constant
    with pytest.raises(ValueError):
        WarmupCosineSchedule(warmup_steps=-1)
    assert math.isclose(WarmupCosineSchedule(0, 0.0).factor(10, 0.5), 0.5)
