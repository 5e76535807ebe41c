"""One process of ``test_sharded_validation.py``: fit one epoch (lr 0) of a tiny EnhancementBrain.

Run alone (one process) or under ``torch.distributed.run`` (DDP, gloo). Writes
``<out>/rank<r>.json``: the ids this rank scored itself, its own mean loss,
the validation stats every rank logged and the kept checkpoint's metadata.
Usage: ``python tests/training/sharded_validation_worker.py OUT_FOLDER``.
"""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.train_logger import FileTrainLogger

from custom_modules.training.brain import EnhancementBrain

NUM_VALID = 7  # odd, with a partial last batch: uneven shards
BATCH_SIZE = 2


class TinyModel(torch.nn.Module):
    """A 5-tap filter on ``(batch, samples)`` waveforms (same shape out)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 1, kernel_size=5, padding=2)

    def forward(self, mixture):
        return self.conv(mixture.unsqueeze(1)).squeeze(1)


class TinyBrain(EnhancementBrain):
    def compute_objectives(self, predictions, batch, stage):
        target, _ = batch.target
        loss = torch.mean((predictions - target) ** 2)
        if stage != sb.Stage.TRAIN:
            self.evaluate_estimates(batch, predictions.detach(), stage)
        return loss

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.VALID:
            self._resolve_all()
            self.scored_here = [record["id"] for record in self.metric_records]
            self.own_loss = float(stage_loss)
        super().on_stage_end(stage, stage_loss, epoch)


def dataset(num, seed):
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(num):
        length = int(rng.integers(3000, 6000))
        target = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 400) * np.arange(length) / 16000)
        mixture = target + 0.05 * rng.standard_normal(length)
        data[f"u{i}"] = {
            "mixture": torch.tensor(mixture, dtype=torch.float32),
            "target": torch.tensor(target, dtype=torch.float32),
        }
    items = DynamicItemDataset(data)
    items.set_output_keys(["id", "mixture", "target"])
    return items


def main(out):
    out = Path(out)
    run_opts = {"device": "cpu", "distributed_backend": "gloo"}
    if "RANK" in os.environ:
        run_opts["distributed_launch"] = True
        sb.utils.distributed.ddp_init_group(run_opts)
    rank = int(os.environ.get("RANK", 0))
    torch.manual_seed(0)  # the same initial weights in every process (test script)
    model = TinyModel()
    epochs = sb.utils.epoch_loop.EpochCounter(1)
    hparams = SimpleNamespace(
        sample_rate=16000,
        checkpoint_key="si_snr",
        valid_metrics=["si_snr", "snr"],
        test_metrics=["si_snr"],
        metric_workers=0,
        train_logger=FileTrainLogger(str(out / f"train_log_rank{rank}.txt")),
        use_tensorboard=False,
        use_wandb=False,
        log_every_n_steps=1000,
        tensorboard_audio_every=1000,
        test_report_folder=str(out / "report"),
        num_examples_to_save=0,
        num_worst_examples_to_save=0,
        epoch_counter=epochs,
    )
    checkpointer = Checkpointer(str(out / "save"), {"model": model, "counter": epochs})
    brain = TinyBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.SGD(params, lr=0.0),
        hparams=vars(hparams),
        run_opts=run_opts,
        checkpointer=checkpointer,
    )
    brain.fit(
        epochs,
        dataset(4, seed=1),
        dataset(NUM_VALID, seed=2),
        progressbar=False,
        train_loader_kwargs={"batch_size": BATCH_SIZE},
        valid_loader_kwargs={"batch_size": BATCH_SIZE},
    )
    meta = {}
    if sb.utils.distributed.if_main_process():
        meta = checkpointer.find_checkpoint(max_key="si_snr").meta
    report = {
        "scored_here": brain.scored_here,
        "own_loss": brain.own_loss,
        "valid_stats": {k: float(v) for k, v in brain.valid_stats.items()},
        "checkpoint_meta": {k: float(v) for k, v in meta.items() if k != "unixtime"},
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        # Measured here: after a DDP fit the interpreter's shutdown waits 1-2 minutes in native
        # code (no Python frame) before the process ends; everything is written, so end now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
