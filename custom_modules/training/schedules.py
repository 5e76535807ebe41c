"""Training budgets and learning-rate schedules of the recipes (built by their YAMLs).

* :class:`TimeLimitedEpochCounter`: SpeechBrain's epoch counter with a time
  budget (``max_train_minutes``, wall-clock or CPU time) that survives resuming;
* :class:`WarmupCosineSchedule`: linear warm-up, then cosine decay over the
  training progress (of the time budget when there is one).
"""

from __future__ import annotations

import logging
import math
import os
import time

from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.epoch_loop import EpochCounter

logger = logging.getLogger(__name__)


BUDGET_CLOCKS = ("wall", "cpu")


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes.

    DataLoader workers and metric workers are children: their time counts once
    they have exited (a DataLoader's workers exit at the end of each epoch).
    """
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@register_checkpoint_hooks
class TimeLimitedEpochCounter(EpochCounter):
    """An ``EpochCounter`` that also stops once ``max_minutes`` of training have passed.

    The training time is saved with the counter in every checkpoint, so a
    resumed run continues its budget instead of starting a fresh one (a run
    interrupted after 40 of 60 minutes trains 20 more). ``max_minutes <= 0``
    disables the limit. :meth:`progress` tells the learning-rate schedule how
    far training is.

    ``clock="wall"`` counts wall-clock time; ``clock="cpu"`` counts CPU time
    (:func:`cpu_seconds`), so that runs compared "at equal budget" get equal
    compute however busy the machine is (one thread: CPU time = wall-clock time
    on a quiet core). The clock starts at the first epoch or at :meth:`start`,
    whichever comes first (work done before the first epoch, such as
    speaker-branch pretraining, calls :meth:`start` so it counts too).

    Example
    -------
    >>> counter = TimeLimitedEpochCounter(limit=3, max_minutes=0)
    >>> list(counter)
    [1, 2, 3]
    >>> counter.progress(step_in_epoch=10, batches_per_epoch=10)
    1.0
    >>> TimeLimitedEpochCounter(limit=3, max_minutes=1, clock="cpu").elapsed_seconds()
    0.0
    """

    def __init__(self, limit, max_minutes=0.0, clock="wall"):
        super().__init__(limit)
        if clock not in BUDGET_CLOCKS:
            raise ValueError(f"budget clock must be one of {BUDGET_CLOCKS}, got {clock!r}")
        self.max_minutes = float(max_minutes)
        self.clock = clock
        self._start = None
        self._elapsed_before = 0.0  # seconds trained by earlier processes of this run

    def _now(self) -> float:
        return cpu_seconds() if self.clock == "cpu" else time.monotonic()

    def start(self):
        """Start the budget's clock now (no effect once it runs)."""
        if self._start is None:
            self._start = self._now()

    def elapsed_seconds(self) -> float:
        """Training time of this run so far, earlier (resumed) processes included."""
        since = 0.0 if self._start is None else self._now() - self._start
        return self._elapsed_before + since

    def progress(self, step_in_epoch: int, batches_per_epoch: int) -> float:
        """Fraction of training done, in [0, 1]: of the time budget, else of the epochs."""
        if self.max_minutes > 0:
            fraction = self.elapsed_seconds() / (60.0 * self.max_minutes)
        else:
            done = max(self.current - 1, 0) + step_in_epoch / max(batches_per_epoch, 1)
            fraction = done / max(self.limit, 1)
        return min(max(fraction, 0.0), 1.0)

    def __next__(self):
        self.start()
        if self.max_minutes > 0 and self.elapsed_seconds() / 60 > self.max_minutes:
            logger.info(
                f"Time budget of {self.max_minutes} min ({self.clock} clock) used up: "
                "stopping training"
            )
            raise StopIteration
        return super().__next__()

    @mark_as_saver
    def _save(self, path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{self.current}\n{self.elapsed_seconds():.3f}\n")

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        with open(path, encoding="utf-8") as handle:
            fields = handle.read().split()
        self.current = int(fields[0]) if end_of_epoch else int(fields[0]) - 1
        # Counters saved before the time was recorded hold the epoch only.
        self._elapsed_before = float(fields[1]) if len(fields) > 1 else 0.0
        self._start = None


class WarmupCosineSchedule:
    """Learning-rate factor: linear warm-up, then cosine decay over the training progress.

    ``factor(step, progress)`` is ``step / warmup_steps`` during the first
    ``warmup_steps`` optimizer steps, then
    ``final_ratio + (1 - final_ratio) * (1 + cos(pi * progress)) / 2`` where
    ``progress`` in [0, 1] is the fraction of the training budget used
    (:meth:`TimeLimitedEpochCounter.progress`: of the time budget when there
    is one, so the decay ends when the wall-clock budget does). Stateless: a
    resumed run gets the learning rate it had.

    Example
    -------
    >>> schedule = WarmupCosineSchedule(warmup_steps=10, final_ratio=0.1)
    >>> schedule.factor(step=5, progress=0.0), schedule.factor(step=50, progress=0.0)
    (0.5, 1.0)
    >>> round(schedule.factor(step=50, progress=1.0), 6)
    0.1
    """

    def __init__(self, warmup_steps=0, final_ratio=0.0):
        if warmup_steps < 0 or not 0.0 <= final_ratio <= 1.0:
            raise ValueError(
                f"need warmup_steps >= 0 and 0 <= final_ratio <= 1, got {warmup_steps}, "
                f"{final_ratio}"
            )
        self.warmup_steps = int(warmup_steps)
        self.final_ratio = float(final_ratio)

    def factor(self, step: int, progress: float) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (1-based)."""
        if step < self.warmup_steps:
            return max(step, 1) / self.warmup_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.final_ratio + (1.0 - self.final_ratio) * cosine
