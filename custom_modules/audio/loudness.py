"""Loudness (ITU-R BS.1770-4, via ``pyloudnorm``) of mono signals, short ones included.

The BS.1770 meter integrates 400 ms blocks, so ``pyloudnorm`` refuses
signals shorter than one block. Documented fallback here: such a signal is
measured on a cyclic repetition of itself up to one block, i.e. the loudness
it would have if looped (for a stationary signal, its own loudness). Silent
signals, or signals whose every block is under the -70 LUFS absolute gate,
have no measurable loudness: ``-inf`` / ``gain_db=None``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyloudnorm

# BS.1770 absolute gate: blocks below it do not count; all below = unmeasurable.
ABSOLUTE_GATE_LUFS = -70.0


def integrated_loudness(samples, sr: int, meter=None) -> float:
    """Integrated loudness (LUFS, ITU-R BS.1770-4) of a mono signal.

    Signals shorter than the meter's 400 ms block are measured on a cyclic
    repetition of themselves up to one block. Silent signals give ``-inf``.

    Arguments
    ---------
    samples : numpy.ndarray
        Mono signal, shape ``(n,)``, ``n >= 1``.
    sr : int
        Sample rate.
    meter : pyloudnorm.Meter, optional
        Reused meter (default: a new K-weighting meter at ``sr``).

    Returns
    -------
    float

    Example
    -------
    >>> t = np.arange(16000) / 16000
    >>> tone = 0.1 * np.sin(2 * np.pi * 1000 * t)
    >>> round(integrated_loudness(tone, 16000), 1)  # 1 kHz sine: about 20 log10(RMS) = -23.0
    -23.1
    >>> abs(integrated_loudness(tone[:1600], 16000) - integrated_loudness(tone, 16000)) < 0.1
    True
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"expected a non-empty mono signal, got shape {samples.shape}")
    meter = pyloudnorm.Meter(sr) if meter is None else meter
    block = int(np.ceil(meter.block_size * sr))
    if samples.size < block:
        samples = np.tile(samples, int(np.ceil(block / samples.size)))
    if not np.any(samples):
        return float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) of silent blocks
        return float(meter.integrated_loudness(samples))


def normalize_loudness(samples, sr: int, target_lufs: float, meter=None):
    """Scale ``samples`` to ``target_lufs``; returns ``(scaled, gain_db)``.

    ``gain_db`` is ``None`` (and ``scaled`` the input) when the signal is
    too quiet to measure.

    Example
    -------
    >>> x = np.random.default_rng(0).normal(0, 0.01, 8000)
    >>> y, gain_db = normalize_loudness(x, 16000, -20.0)
    >>> y.shape, round(integrated_loudness(y, 16000), 3)
    ((8000,), -20.0)
    """
    samples = np.asarray(samples, dtype=np.float64)
    measured = integrated_loudness(samples, sr, meter)
    if not np.isfinite(measured) or measured < ABSOLUTE_GATE_LUFS:
        return samples, None
    gain_db = float(target_lufs) - measured
    return samples * 10.0 ** (gain_db / 20.0), gain_db
