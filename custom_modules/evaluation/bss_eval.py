"""BSS Eval SDR and permutation-invariant scoring of separated sources.

* :func:`bss_sdr`: the signal-to-distortion ratio of BSS Eval (Vincent,
  Gribonval & Févotte, IEEE TASLP 2006; the ``bss_eval_sources`` definition
  of its v3 toolbox): the estimate is split into the part explained by the
  reference passed through a time-invariant FIR filter of ``filter_length``
  taps (512, as BSS Eval) and the rest;
  ``SDR = 10 log10(|P ŝ|² / |ŝ - P ŝ|²)``. This is the "SDR" of the
  Conv-TasNet paper; unlike SI-SNR it forgives any short linear filtering.
* :func:`best_permutation` and :func:`separation_scores`: utterance-level
  permutation invariance for evaluation (the permutation with the highest
  mean SI-SNR, the training criterion), then per-metric means over sources
  for the estimates and for the unprocessed mixture, and their difference:
  ``si_snr_delta`` is SI-SNRi, ``bss_sdr_delta`` is SDRi.

Scores are computed in the training process (SI-SNR and SDR cost a few
milliseconds per utterance; no PESQ/STOI, which do not apply at 8 kHz).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.linalg import solve_toeplitz
from scipy.signal import fftconvolve

from custom_modules.evaluation.metrics import MetricError, as_signal_pair, si_snr

SEPARATION_METRICS = ("si_snr", "bss_sdr")


def bss_sdr(estimate, reference, filter_length=512) -> float:
    """BSS Eval SDR in dB of ``estimate`` against ``reference`` (1-D, same length).

    The projection ``P ŝ`` is the least-squares fit of the estimate by the
    reference delayed by 0 ... ``filter_length - 1`` samples (both zero-padded
    to ``len + filter_length - 1``): a Toeplitz system of the reference's
    autocorrelation, solved by Levinson recursion.

    Raises ``MetricError`` for a silent reference or mismatched lengths.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> ref = np.concatenate([rng.normal(size=4000), np.zeros(10)])  # ends in silence
    >>> echo = np.convolve(ref, [1.0, 0.0, 0.0, 0.5])[: ref.size]  # filtered, nothing added
    >>> bss_sdr(echo, ref) > 100
    True
    >>> round(bss_sdr(ref + 0.1 * rng.normal(size=ref.size), ref))  # ~ the SNR, 20 dB
    20
    """
    est, ref = as_signal_pair(estimate, reference)
    if not np.any(ref):
        raise MetricError("reference is silent (all zeros); SDR is undefined")
    taps = int(filter_length)
    if taps < 1:
        raise ValueError(f"filter_length must be >= 1, got {filter_length}")
    # Long enough that circular correlations equal the linear ones for lags < taps.
    nfft = next_fast_len(ref.size + taps - 1, real=True)
    ref_spec = rfft(ref, nfft)
    autocorr = irfft(np.abs(ref_spec) ** 2, nfft)[:taps]
    crosscorr = irfft(rfft(est, nfft) * np.conj(ref_spec), nfft)[:taps]
    # Tiny diagonal loading: a reference with (nearly) no energy in some band
    # makes the system singular; 1e-10 relative changes no score that matters.
    autocorr[0] *= 1.0 + 1e-10
    filt = solve_toeplitz(autocorr, crosscorr)
    projection = fftconvolve(ref, filt)
    residual = np.pad(est, (0, taps - 1)) - projection
    target_energy, error_energy = np.dot(projection, projection), np.dot(residual, residual)
    if error_energy == 0.0:
        return math.inf
    if target_energy == 0.0:
        return -math.inf
    return float(10.0 * np.log10(target_energy / error_energy))


def _metric(name):
    if name == "si_snr":
        return si_snr
    if name == "bss_sdr":
        return bss_sdr
    raise ValueError(f"unknown separation metric {name!r}; expected some of {SEPARATION_METRICS}")


def best_permutation(estimates, sources) -> tuple:
    """The assignment of estimates to sources with the highest mean SI-SNR.

    Arguments
    ---------
    estimates, sources : numpy.ndarray
        ``(num_sources, samples)``.

    Returns
    -------
    tuple of int
        ``perm`` such that ``estimates[perm[j]]`` is the estimate of ``sources[j]``.

    Example
    -------
    >>> s = np.stack([np.sin(np.arange(800) / 5.0), np.cos(np.arange(800) / 17.0)])
    >>> best_permutation(s[::-1] * 2.0, s)
    (1, 0)
    """
    num = len(sources)
    if len(estimates) != num:
        raise ValueError(f"{len(estimates)} estimates for {num} sources")
    scores = np.array([[_finite_or(si_snr, e, s) for s in sources] for e in estimates])
    perms = list(itertools.permutations(range(num)))
    means = [np.mean([scores[perm[j], j] for j in range(num)]) for perm in perms]
    return perms[int(np.argmax(means))]


def _finite_or(metric, estimate, reference, fallback=-1e9):
    """Score for choosing a permutation: undefined scores never win."""
    try:
        value = metric(estimate, reference)
    except MetricError:
        return fallback
    return value if math.isfinite(value) else (fallback if value < 0 else 1e9)


def separation_scores(estimates, sources, mixture, metrics=SEPARATION_METRICS) -> dict:
    """PIT scores of one utterance: estimates, unprocessed mixture and improvement.

    Arguments
    ---------
    estimates, sources : numpy.ndarray
        ``(num_sources, samples)``.
    mixture : numpy.ndarray
        ``(samples,)``; scored against every source as the "no processing" baseline.
    metrics : sequence of str
        Some of ``SEPARATION_METRICS``.

    Returns
    -------
    dict
        ``perm`` (see :func:`best_permutation`), and for every metric
        ``<m>_estimate``, ``<m>_mixture`` (means over sources) and
        ``<m>_delta``; a failing metric gives NaN and its reason in ``errors``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.normal(size=(2, 4000))
    >>> scores = separation_scores(s[::-1] + 0.01 * rng.normal(size=(2, 4000)), s, s.sum(0))
    >>> scores["perm"], round(scores["si_snr_mixture"]), round(scores["si_snr_delta"])
    ((1, 0), 0, 40)
    """
    estimates, sources = np.asarray(estimates), np.asarray(sources)
    perm = best_permutation(estimates, sources)
    result, errors = {"perm": perm}, []
    for name in metrics:
        metric = _metric(name)
        for part, inputs in (
            ("estimate", [estimates[perm[j]] for j in range(len(sources))]),
            ("mixture", [mixture] * len(sources)),
        ):
            try:
                value = float(np.mean([metric(x, s) for x, s in zip(inputs, sources, strict=True)]))
            except MetricError as err:
                value = math.nan
                errors.append(f"{name}_{part}: {err}")
            result[f"{name}_{part}"] = value
        result[f"{name}_delta"] = result[f"{name}_estimate"] - result[f"{name}_mixture"]
    result["errors"] = "; ".join(errors)
    return result
