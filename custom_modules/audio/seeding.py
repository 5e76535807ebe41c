"""Pure derivation of independent random seeds (one root seed -> reproducible children)."""

from __future__ import annotations

import numpy as np


def derive_seed_sequences(seed, count: int) -> list:
    """``count`` independent child ``SeedSequence`` objects of ``seed``.

    Unlike ``SeedSequence.spawn`` this is a pure function: the same ``seed``
    (int, ``SeedSequence`` or sequence of ints) always gives the same children,
    however often it has been spawned before.

    Arguments
    ---------
    seed : int, sequence of int, numpy.random.SeedSequence or None
        Root seed (``None``: fresh OS entropy).
    count : int
        Number of children.

    Returns
    -------
    list of numpy.random.SeedSequence

    Example
    -------
    >>> a = derive_seed_sequences(3, 2)
    >>> b = derive_seed_sequences(3, 2)
    >>> len(a), bool(a[1].generate_state(1)[0] == b[1].generate_state(1)[0])
    (2, True)
    """
    if isinstance(seed, np.random.SeedSequence):
        root = seed
    else:
        root = np.random.SeedSequence(seed)
    return [
        np.random.SeedSequence(
            root.entropy, spawn_key=tuple(root.spawn_key) + (i,), pool_size=root.pool_size
        )
        for i in range(count)
    ]
