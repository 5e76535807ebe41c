"""Validation under DDP: each rank scores its own block, the results equal one process.

``sharded_validation_worker.py`` fits one epoch (learning rate 0, so the
weights are those of the seed) of a tiny ``EnhancementBrain`` with a
7-utterance validation set in batches of 2, once alone and once as two
processes under ``torch.distributed.run`` (gloo). The validation stats and
the kept checkpoint's metadata must be equal to float precision, and the two
ranks must have scored disjoint blocks that together are the whole set.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from custom_modules.training.sharding import ContiguousShardSampler, shard_bounds

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sharded_validation_worker.py")


@pytest.mark.parametrize("num_items", [0, 1, 6, 7, 33])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_are_whole_batches_covering_the_set_once(num_items, batch_size, world_size):
    blocks = [shard_bounds(num_items, batch_size, r, world_size) for r in range(world_size)]
    covered = [i for start, stop in blocks for i in range(start, stop)]
    assert covered == list(range(num_items))
    for start, stop in blocks[:-1]:
        assert start % batch_size == 0 and (stop - start) % batch_size == 0
    sizes = [-(-(stop - start) // batch_size) for start, stop in blocks]
    assert max(sizes) - min(sizes) <= 1  # batches per rank differ by at most one
    sampler = ContiguousShardSampler(
        num_items, batch_size, rank=world_size - 1, world_size=world_size
    )
    assert list(sampler) == list(range(*blocks[-1])) and len(sampler) == len(list(sampler))


def test_shard_bounds_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        shard_bounds(10, 2, rank=2, world_size=2)


def run_worker(out: Path, processes: int) -> list:
    out.mkdir()
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [*launch, str(WORKER), str(out)],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.mark.slow
def test_two_process_validation_equals_one_process(tmp_path):
    (single,) = run_worker(tmp_path / "one", 1)
    ranks = run_worker(tmp_path / "ddp", 2)

    all_ids = [f"u{i}" for i in range(7)]
    assert single["scored_here"] == all_ids
    # Each rank scored its own block (4 and 3 of 7: whole batches of 2), together the whole set.
    assert ranks[0]["scored_here"] == all_ids[:4] and ranks[1]["scored_here"] == all_ids[4:]
    assert ranks[0]["own_loss"] != ranks[1]["own_loss"]  # the ranks did see different data

    for rank in ranks:  # every rank logs the stats of the whole set
        assert rank["valid_stats"].keys() == single["valid_stats"].keys()
        for key, value in single["valid_stats"].items():
            assert rank["valid_stats"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    meta = ranks[0]["checkpoint_meta"]  # written by rank 0 only
    assert set(meta) == set(single["checkpoint_meta"]) and "si_snr" in meta
    for key, value in single["checkpoint_meta"].items():
        assert meta[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
