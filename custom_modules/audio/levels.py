"""Levels, gains and SNRs of numpy signals.

Conventions
-----------
* Levels are in dB relative to a reference RMS of 1, i.e. a full-scale square
  wave is 0 dB and a full-scale sine is about -3.01 dB.
* Everything is computed in float64 and array outputs are float64 whatever the
  input dtype, so that levels are exact to ~1e-12 dB (the mixer casts to
  float32 at the very end).
* Signals may have any shape; levels are taken over all samples.
* Silent input (all zeros) never yields NaN: ``eval_rms_db`` returns ``-inf``,
  ``eval_snr`` returns ``+inf`` for a perfect estimate, and functions that
  would have to divide by the level of a silent signal (``normalize_to_rms``,
  ``mix_speech_with_noise``, ``eval_snr`` with a silent reference) raise a
  ``ValueError`` saying so. Empty or non-finite (NaN/Inf) input raises a
  ``ValueError``.
"""

from __future__ import annotations

import numpy as np

# Highest magnitude written as 16-bit PCM (-0.009 dBFS): louder outputs are scaled down.
PEAK_LIMIT = 0.999
# Sums of squares above this are exact to float64 precision despite underflowed squares.
_SAFE_ENERGY = 1e-280


def as_signal(
    x, name: str, error=ValueError, one_d: bool = False, check_finite: bool = True
) -> np.ndarray:
    """``x`` (numpy array, list or CPU/GPU torch tensor) as float64, checked.

    Arguments
    ---------
    x : array-like or torch.Tensor
        The signal.
    name : str
        Named in the error message.
    error : type
        The exception raised (a ``ValueError`` subclass, e.g. a metric's error).
    one_d : bool
        Require a 1-D ``(samples,)`` signal.
    check_finite : bool
        Raise on NaN/Inf samples (``False``: the caller checks, e.g. through a
        sum that is NaN or Inf exactly when a sample is).

    Returns
    -------
    numpy.ndarray
        Non-empty, finite, float64.

    Example
    -------
    >>> as_signal([0.5, -0.25], "x")
    array([ 0.5 , -0.25])
    >>> as_signal([[0.0]], "x", one_d=True)
    Traceback (most recent call last):
    ...
    ValueError: x must be 1-D (samples,), got shape (1, 1)
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if one_d and array.ndim != 1:
        raise error(f"{name} must be 1-D (samples,), got shape {array.shape}")
    if array.size == 0:
        raise error(f"{name} is empty")
    if check_finite and not np.all(np.isfinite(array)):
        raise error(f"{name} contains NaN or Inf values")
    return array


def peak_gain(peak: float, limit: float = PEAK_LIMIT) -> float:
    """The gain (<= 1) that brings a signal of magnitude ``peak`` down to ``limit``.

    Example
    -------
    >>> peak_gain(0.5), peak_gain(2.0, limit=0.5)
    (1.0, 0.25)
    """
    return limit / peak if peak > limit else 1.0


def limit_peak(signal, limit: float = PEAK_LIMIT):
    """``signal`` scaled down once (never clipped) when its peak exceeds ``limit``.

    Example
    -------
    >>> limit_peak(np.array([0.5, -2.0]), limit=0.5)
    array([ 0.125, -0.5  ])
    """
    peak = float(np.max(np.abs(signal))) if len(signal) else 0.0
    return signal * (limit / peak) if peak > limit else signal


def _energy_db(x: np.ndarray) -> float:
    """10·log10(sum x²) of a finite float64 array without overflow/underflow; ``-inf`` for zeros.

    One dot product when the sum of squares is safely inside the float64 range
    (then no square can have overflowed, and those that underflowed are
    negligible); otherwise the signal is divided by its peak first, which
    keeps the squares in range for any scale (1e-200 or 1e200).
    """
    flat = x.ravel()
    energy = float(np.dot(flat, flat))
    if _SAFE_ENERGY < energy < np.inf:
        return float(10.0 * np.log10(energy))
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return -np.inf
    with np.errstate(invalid="ignore"):  # NaN/Inf samples give NaN (eval_rms_db raises)
        scaled = x / peak
        return float(20.0 * np.log10(peak) + 10.0 * np.log10(np.sum(scaled * scaled)))


def eval_mean_square(x) -> float:
    """Mean of the squared samples (the power of ``x``, reference RMS 1).

    Arguments
    ---------
    x : array_like
        Signal of any shape (non-empty, finite).

    Returns
    -------
    float
        ``mean(x ** 2)`` computed in float64; 0.0 for a silent signal.

    Example
    -------
    >>> eval_mean_square(np.array([1.0, -1.0, 1.0, -1.0]))
    1.0
    """
    array = as_signal(x, "signal")
    return float(np.mean(array * array))


def power_to_db(p):
    """Power ratio to dB: ``10·log10(p)``.

    Arguments
    ---------
    p : float or array_like
        Non-negative, finite power(s). 0 maps to ``-inf`` (no warning).

    Returns
    -------
    float or numpy.ndarray
        dB value(s), float for a scalar input.

    Example
    -------
    >>> power_to_db(100.0)
    20.0
    >>> power_to_db(np.array([1.0, 0.1])).shape
    (2,)
    """
    array = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("power contains NaN or Inf values")
    if np.any(array < 0):
        raise ValueError("power must be non-negative")
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(array)
    return float(db) if db.ndim == 0 else db


def eval_rms_db(x) -> float:
    """RMS level of ``x`` in dB re RMS 1 (full-scale square wave = 0 dB).

    Arguments
    ---------
    x : array_like
        Signal of any shape (non-empty, finite).

    Returns
    -------
    float
        ``10·log10(mean(x²))``; ``-inf`` for a silent (all-zero) signal.

    Example
    -------
    >>> round(eval_rms_db(np.sin(np.linspace(0, 200 * np.pi, 16000, endpoint=False))), 2)
    -3.01
    >>> eval_rms_db(np.zeros(4))
    -inf
    """
    array = as_signal(x, "signal", check_finite=False)
    energy_db = _energy_db(array)
    if not np.isfinite(energy_db) and energy_db != -np.inf:
        as_signal(array, "signal")  # NaN or Inf samples: the usual error
    return energy_db - float(10.0 * np.log10(array.size))


def gain_to_mult(gain_db):
    """Amplitude multiplier of a gain in dB: ``10 ** (gain_db / 20)``.

    Arguments
    ---------
    gain_db : float or array_like
        Gain(s) in dB; ``-inf`` gives 0 (mute), NaN and ``+inf`` raise.

    Returns
    -------
    float or numpy.ndarray
        Multiplier(s), float for a scalar input.

    Example
    -------
    >>> gain_to_mult(20.0)
    10.0
    """
    array = np.asarray(gain_db, dtype=np.float64)
    if np.any(np.isnan(array)) or np.any(array == np.inf):
        raise ValueError("gain_db must not be NaN or +inf")
    mult = np.power(10.0, array / 20.0)
    return float(mult) if mult.ndim == 0 else mult


def mult_to_gain(mult):
    """Gain in dB of an amplitude multiplier: ``20·log10(mult)``.

    Arguments
    ---------
    mult : float or array_like
        Non-negative, finite multiplier(s); 0 gives ``-inf``.

    Returns
    -------
    float or numpy.ndarray
        Gain(s) in dB, float for a scalar input.

    Example
    -------
    >>> mult_to_gain(0.1)
    -20.0
    """
    array = np.asarray(mult, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("multiplier contains NaN or Inf values")
    if np.any(array < 0):
        raise ValueError("multiplier must be non-negative (a gain has no sign)")
    with np.errstate(divide="ignore"):
        gain = 20.0 * np.log10(array)
    return float(gain) if gain.ndim == 0 else gain


def apply_gain(x, gain_db) -> np.ndarray:
    """Scale ``x`` by ``gain_db`` dB.

    Arguments
    ---------
    x : array_like
        Signal of any shape (non-empty, finite).
    gain_db : float
        Gain in dB (``-inf`` mutes).

    Returns
    -------
    numpy.ndarray
        float64 array of the shape of ``x``.

    Example
    -------
    >>> apply_gain(np.ones(3, dtype=np.float32), 6.0).shape
    (3,)
    """
    array = as_signal(x, "signal")
    return array * gain_to_mult(gain_db)


def normalize_to_rms(x, target_rms_db: float):
    """Scale ``x`` so that its RMS level is ``target_rms_db`` dB.

    Arguments
    ---------
    x : array_like
        Signal of any shape (non-empty, finite, not silent).
    target_rms_db : float
        Wanted RMS level in dB re RMS 1 (finite).

    Returns
    -------
    (numpy.ndarray, float)
        The scaled signal (float64) and the gain applied in dB.

    Raises
    ------
    ValueError
        If ``x`` is silent (all zeros): no gain can reach a finite level.

    Example
    -------
    >>> scaled, gain_db = normalize_to_rms(np.full(8, 0.5), 0.0)
    >>> scaled.shape, round(gain_db, 6)
    ((8,), 6.0206)
    """
    if not np.isfinite(target_rms_db):
        raise ValueError(f"target_rms_db must be finite, got {target_rms_db}")
    array = as_signal(x, "signal")
    level_db = eval_rms_db(array)
    if level_db == -np.inf:
        raise ValueError("signal is silent (all zeros); cannot normalize it to an RMS level")
    gain_db = float(target_rms_db) - level_db
    return array * gain_to_mult(gain_db), gain_db


def eval_snr(estimate, signal) -> float:
    """SNR of ``estimate`` against the reference ``signal`` in dB.

    ``10·log10(‖signal‖² / ‖estimate − signal‖²)``.

    Arguments
    ---------
    estimate : array_like
        Estimated signal, same shape as ``signal``.
    signal : array_like
        Reference (clean) signal, not silent.

    Returns
    -------
    float
        SNR in dB; ``+inf`` when ``estimate`` equals ``signal`` exactly.

    Raises
    ------
    ValueError
        On shape mismatch, or if ``signal`` is silent (the SNR is undefined).

    Example
    -------
    >>> s = np.array([1.0, -1.0, 1.0, -1.0])
    >>> round(eval_snr(s * 1.1, s), 6)
    20.0
    """
    est = as_signal(estimate, "estimate")
    ref = as_signal(signal, "signal")
    if est.shape != ref.shape:
        raise ValueError(f"estimate shape {est.shape} differs from signal shape {ref.shape}")
    signal_db = _energy_db(ref)
    if signal_db == -np.inf:
        raise ValueError("signal is silent (all zeros); cannot evaluate an SNR against it")
    return signal_db - _energy_db(est - ref)


def mix_speech_with_noise(signal, noise, rms_signal_db: float, snr_db: float):
    """Mix ``signal`` and ``noise`` at a given signal level and SNR.

    The signal is scaled to ``rms_signal_db`` and the noise to
    ``rms_signal_db - snr_db``, then they are added.

    Arguments
    ---------
    signal : array_like
        Clean signal (not silent).
    noise : array_like
        Noise of the same shape as ``signal`` (not silent).
    rms_signal_db : float
        RMS level of the scaled signal in dB re RMS 1.
    snr_db : float
        Wanted signal-to-noise ratio in dB (finite).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``(mixture, scaled_signal, scaled_noise)``, float64, with
        ``mixture == scaled_signal + scaled_noise``.

    Raises
    ------
    ValueError
        On shape mismatch, or if the signal or the noise is silent.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> mix, s, n = mix_speech_with_noise(rng.normal(size=100), rng.normal(size=100), -20.0, 5.0)
    >>> mix.shape, round(eval_rms_db(s), 9), round(eval_rms_db(n), 9)
    ((100,), -20.0, -25.0)
    """
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    if not np.isfinite(rms_signal_db):
        raise ValueError(f"rms_signal_db must be finite, got {rms_signal_db}")
    sig = as_signal(signal, "signal")
    noi = as_signal(noise, "noise")
    if sig.shape != noi.shape:
        raise ValueError(
            f"signal shape {sig.shape} and noise shape {noi.shape} differ; "
            "crop or pad them to the same length before mixing"
        )
    if eval_rms_db(sig) == -np.inf:
        raise ValueError("signal is silent (all zeros); cannot mix it at a given level")
    if eval_rms_db(noi) == -np.inf:
        raise ValueError("noise is silent (all zeros); cannot mix it at a given SNR")
    scaled_signal, _ = normalize_to_rms(sig, rms_signal_db)
    scaled_noise, _ = normalize_to_rms(noi, rms_signal_db - snr_db)
    return scaled_signal + scaled_noise, scaled_signal, scaled_noise
