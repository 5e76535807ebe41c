"""Multi-process training through torchrun (DDP, gloo backend, CPU).

Runs the UNet-TCM recipe's CPU configuration in debug mode with two
processes and checks that the ranks draw different training mixtures, that
only rank 0 writes checkpoints and logs, and that the run completes.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import ROOT, cpu_size_overrides, resolved_value

TRAIN_PY = ROOT / "recipes" / "unet_tcm" / "train.py"
HPARAMS = ROOT / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"


@pytest.mark.slow
def test_torchrun_two_processes(demo_corpus, tmp_path):
    output = tmp_path / "ddp"
    overrides = cpu_size_overrides(HPARAMS)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(TRAIN_PY), str(HPARAMS),
        "--data_folder", str(demo_corpus), "--output_folder", str(output),
        "--debug", "--debug_persistently", "--noprogressbar", "--distributed_backend", "gloo",
        *overrides,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    # Each rank logs its first training batch of each epoch (debug mode; a log record per rank).
    draws = re.findall(
        r"\[rank (\d)\] epoch (\d+) first training batch: ids=(\[.*?\]) checksum=(\S+)", log
    )
    by_rank = {}
    for rank, epoch, ids, checksum in draws:
        by_rank.setdefault(rank, {})[epoch] = (ids, checksum)
    assert set(by_rank) == {"0", "1"}, draws
    for epoch in by_rank["0"]:
        ids0, sum0 = by_rank["0"][epoch]
        ids1, sum1 = by_rank["1"][epoch]
        assert ids0 != ids1 and sum0 != sum1, f"ranks drew the same mixtures in epoch {epoch}"
        assert "'r0_" in ids0 and "'r1_" in ids1

    # Logs and checkpoints are written once, by rank 0.
    train_log = (output / "train_log.txt").read_text()
    epochs = re.findall(r"^epoch: (\d+),", train_log, re.MULTILINE)
    assert epochs == sorted(set(epochs), key=int) and epochs, train_log
    assert len(list((output / "tensorboard").glob("events.out.tfevents.*"))) == 1
    saved = re.findall(r"Saved an end-of-epoch checkpoint in (\S+)", log)
    assert len(saved) == len(epochs), saved  # one save per epoch, not one per rank
    save_folder = Path(resolved_value(output, "save_folder"))
    for ckpt in save_folder.glob("CKPT+*"):
        assert str(ckpt) in saved, f"{ckpt} was not saved by the main process"
    assert (Path(resolved_value(output, "test_report_folder")) / "per_utterance.csv").is_file()
