"""Validation split across DDP ranks, with results equal to a single-process run.

Under DDP every rank used to score the whole validation set. Here each rank
takes one contiguous block of whole batches (``ContiguousShardSampler``), so
its batches are exactly the batches a single process would form; at the end
of the stage the per-utterance records are gathered in rank order
(``gather_in_rank_order``), which is the single-process order, and the stage
loss is the mean over all batches of all ranks (``mean_over_ranks``). The
checkpoint key and the logged metrics are then identical on every rank and
equal to a single-process run (the loss to float rounding of the mean).

Without an initialised process group (or with one process) everything is the
identity: one shard holding the whole set.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def rank_and_world_size() -> tuple:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(num_items: int, batch_size: int, rank: int, world_size: int) -> tuple:
    """``[start, stop)`` item indices of rank ``rank``'s block of whole batches.

    The ``ceil(num_items / batch_size)`` batches are split into ``world_size``
    contiguous blocks whose sizes differ by at most one batch; only the last
    batch of the set may be partial, as in a single process.

    Example
    -------
    >>> [shard_bounds(10, 2, rank, 2) for rank in range(2)]
    [(0, 4), (4, 10)]
    >>> [shard_bounds(3, 4, rank, 2) for rank in range(2)]
    [(0, 0), (0, 3)]
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"shard_bounds: need batch_size >= 1 and 0 <= rank < world_size, got "
            f"batch_size={batch_size}, rank={rank}, world_size={world_size}"
        )
    num_batches = -(-num_items // batch_size)
    first = rank * num_batches // world_size
    last = (rank + 1) * num_batches // world_size
    return min(first * batch_size, num_items), min(last * batch_size, num_items)


class ContiguousShardSampler(Sampler):
    """This rank's contiguous block of whole batches of a dataset, in order (no padding).

    Arguments
    ---------
    num_items : int
        Length of the dataset.
    batch_size : int
        Batch size of the loader (blocks hold whole batches).
    rank, world_size : int or None
        Defaults: those of the default process group (``(0, 1)`` without one).

    Example
    -------
    >>> list(ContiguousShardSampler(5, batch_size=2, rank=1, world_size=2))
    [2, 3, 4]
    """

    def __init__(self, num_items: int, batch_size: int = 1, rank=None, world_size=None):
        default_rank, default_world = rank_and_world_size()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)
        self.start, self.stop = shard_bounds(
            int(num_items), int(batch_size), self.rank, self.world_size
        )

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def gather_in_rank_order(items: list) -> list:
    """Every rank's list, concatenated in rank order, on every rank (``items`` alone without DDP)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return list(items)
    gathered = [None] * world_size
    torch.distributed.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def mean_over_ranks(mean: float, count: int) -> float:
    """The mean over all ranks of per-rank means of ``count`` values each (``mean`` without DDP).

    Example
    -------
    >>> mean_over_ranks(2.5, 4)
    2.5
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return float(mean)
    total = torch.tensor([float(mean) * count, float(count)], dtype=torch.float64)
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")
