"""Random spectral colouring and time reversal of noise crops (training only).

With a handful of real noise recordings a model learns *those* recordings:
on the real-speech split its validation score peaks early and falls while
the training loss keeps falling. Re-colouring each drawn noise crop with a
random smooth equaliser (and reversing it in time half the time) turns every
recording into a family of noises with the same temporal structure and other
spectral envelopes, which is what differs most between noise recordings of
one kind (fans, traffic, crowds, rooms).

The equaliser: ``num_bands + 1`` anchor frequencies spaced evenly in
log-frequency from ``min_freq`` to Nyquist, each given a gain drawn
uniformly from ``[-max_gain_db, max_gain_db]``; the gain of every FFT bin is
interpolated linearly in dB over log-frequency (bins below ``min_freq`` take
the first anchor's gain). The mixer sets the noise level afterwards, so only
the shape matters.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft


@functools.lru_cache(maxsize=8)
def _log_grid(num_samples: int, sr: int, min_freq: float, num_bands: int):
    """Log-frequency of every rfft bin (floored at ``min_freq``) and of the anchors.

    Cached: training crops all have one length, so the mixer's hot path
    computes the grid once.
    """
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sr)
    anchors = np.geomspace(min_freq, sr / 2, num_bands + 1)
    return np.log(np.maximum(freqs, min_freq)), np.log(anchors)


class RandomNoiseAugmentation:
    """Random smooth equaliser and time reversal of a noise crop.

    Arguments
    ---------
    coloring_prob : float
        Probability of re-colouring a crop (0: never, and no random draw is
        made for it, so mixtures are unchanged from a mixer without it).
    max_gain_db : float
        Anchor gains are uniform in ``[-max_gain_db, max_gain_db]``.
    num_bands : int
        Log-spaced bands between ``min_freq`` and Nyquist (``num_bands + 1``
        anchors).
    min_freq : float
        Lowest anchor frequency (Hz).
    reverse_prob : float
        Probability of reversing the crop in time.
    sr : int
        Sample rate (Hz).

    Example
    -------
    >>> augment = RandomNoiseAugmentation(coloring_prob=1.0, max_gain_db=12.0)
    >>> rng = np.random.default_rng(0)
    >>> crop = rng.normal(size=16000)
    >>> colored = augment(crop, rng)
    >>> colored.shape, colored.dtype
    ((16000,), dtype('float64'))
    >>> bool(np.allclose(colored, crop))
    False
    >>> RandomNoiseAugmentation(coloring_prob=0.0, reverse_prob=0.0)(crop, rng) is crop
    True
    """

    def __init__(
        self,
        coloring_prob=0.5,
        max_gain_db=10.0,
        num_bands=6,
        min_freq=62.5,
        reverse_prob=0.0,
        sr=16000,
    ):
        for name, prob in (("coloring_prob", coloring_prob), ("reverse_prob", reverse_prob)):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {prob}")
        if max_gain_db < 0:
            raise ValueError(f"max_gain_db must be >= 0, got {max_gain_db}")
        if num_bands < 1:
            raise ValueError(f"num_bands must be >= 1, got {num_bands}")
        if not 0.0 < min_freq < sr / 2:
            raise ValueError(f"min_freq must be in (0, {sr / 2}) Hz, got {min_freq}")
        self.coloring_prob = float(coloring_prob)
        self.max_gain_db = float(max_gain_db)
        self.num_bands = int(num_bands)
        self.min_freq = float(min_freq)
        self.reverse_prob = float(reverse_prob)
        self.sr = int(sr)

    def describe(self) -> dict:
        """Parameters, for the mixer's description (fixed-set digests, logs)."""
        return {
            "coloring_prob": self.coloring_prob,
            "max_gain_db": self.max_gain_db,
            "num_bands": self.num_bands,
            "min_freq": self.min_freq,
            "reverse_prob": self.reverse_prob,
        }

    def gain_curve_db(self, anchor_gains_db: np.ndarray, num_samples: int) -> np.ndarray:
        """Gain (dB) of every rfft bin of ``num_samples`` for the given anchor gains.

        >>> augment = RandomNoiseAugmentation(num_bands=2, min_freq=1000.0, sr=16000)
        >>> curve = augment.gain_curve_db(np.array([0.0, 6.0, 12.0]), 16000)
        >>> curve.shape, float(curve[500]), round(float(curve[4000]), 6), float(curve[8000])
        ((8001,), 0.0, 8.0, 12.0)
        """
        log_freqs, log_anchors = _log_grid(num_samples, self.sr, self.min_freq, self.num_bands)
        return np.interp(log_freqs, log_anchors, anchor_gains_db)

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The augmented crop (float64, same length); ``crop`` itself when unchanged."""
        out = crop
        if self.coloring_prob > 0 and rng.random() < self.coloring_prob:
            gains_db = rng.uniform(-self.max_gain_db, self.max_gain_db, self.num_bands + 1)
            curve = 10.0 ** (self.gain_curve_db(gains_db, len(crop)) / 20.0)
            out = scipy.fft.irfft(scipy.fft.rfft(np.asarray(crop, np.float64)) * curve, len(crop))
        if self.reverse_prob > 0 and rng.random() < self.reverse_prob:
            out = np.asarray(out, np.float64)[::-1].copy()
        return out
