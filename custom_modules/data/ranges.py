"""``(low, high)`` ranges of the data options (gains, SNRs, TIRs) and uniform draws in them."""

from __future__ import annotations

import numpy as np


def check_range(bounds, name) -> tuple:
    """``bounds`` as a finite ``(low, high)`` float pair with ``low <= high`` (else ``ValueError``).

    Example
    -------
    >>> check_range([-5, 5], "snr_db_range")
    (-5.0, 5.0)
    >>> check_range((3, 1), "snr_db_range")
    Traceback (most recent call last):
    ...
    ValueError: snr_db_range must be a finite (low, high) range, got (3, 1)
    """
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a (low, high) pair, got {bounds!r}") from err
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"{name} must be a finite (low, high) range, got {bounds!r}")
    return low, high


def draw_uniform(rng, bounds, name) -> float:
    """One uniform draw in ``bounds`` from ``rng``; ``low`` itself (no draw) when ``low == high``.

    Example
    -------
    >>> draw_uniform(np.random.default_rng(0), (2.0, 2.0), "gain")
    2.0
    """
    low, high = check_range(bounds, name)
    return float(rng.uniform(low, high)) if high > low else low
