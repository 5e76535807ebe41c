"""Shared pieces of source-separation recipes: BSS Eval SDR, PIT scoring, a Brain.

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
* :class:`SeparationBrain`: :class:`custom_modules.training.brain.EnhancementBrain`
  (logging, TensorBoard, checkpoint by ``checkpoint_key``, the test CSV,
  summary and table) for ``C`` sources ``s1 ... sC`` instead of one target,
  plus the validation-loss learning-rate scheduler ``hparams.lr_scheduler``.

Scores are computed in the training process (SI-SNR and SDR cost a few
milliseconds per utterance; no PESQ/STOI, which do not apply at 8 kHz).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from scipy.fft import irfft, next_fast_len, rfft
from scipy.linalg import solve_toeplitz
from scipy.signal import fftconvolve
from speechbrain.utils.distributed import ddp_all_reduce, if_main_process

from custom_modules.audio.files import check_safe_id, write_audio
from custom_modules.evaluation.metrics import MetricError, si_snr
from custom_modules.evaluation.plotting import save_spectrograms_png
from custom_modules.training.brain import EnhancementBrain, _as_float, _peak_safe, trim_batch

SEPARATION_METRICS = ("si_snr", "bss_sdr")
PARTS = ("mixture", "estimate", "delta")


def _as_signal(x, name) -> np.ndarray:
    array = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise MetricError(f"{name} must be a non-empty 1-D signal, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise MetricError(f"{name} contains NaN or Inf values")
    return array


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
    est, ref = _as_signal(estimate, "estimate"), _as_signal(reference, "reference")
    if est.size != ref.size:
        raise MetricError(f"estimate has {est.size} samples but reference has {ref.size}")
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


class SeparationBrain(EnhancementBrain):
    """EnhancementBrain for ``num_sources`` sources ``s1 ... sC`` with PIT scoring.

    Batches carry ``id``, ``mixture`` and ``s1`` ... ``sC`` (padded
    waveforms), optionally ``tir_db`` (reported in the CSV's
    ``input_snr_db`` column: the level of ``s1`` relative to ``s2``).
    Recipes write ``compute_forward`` (estimates ``(batch, samples, C)``)
    and ``compute_objectives``, which gets the references from
    :meth:`batch_sources` and, on validation and test, calls
    :meth:`evaluate_separation`.

    Hyperparameters read, besides EnhancementBrain's (except
    ``metric_workers``: scores are computed in this process):
    ``num_sources``, ``lr_scheduler`` (called with the validation loss after
    every epoch, e.g. ``speechbrain.nnet.schedulers.ReduceLROnPlateau``).
    """

    def batch_sources(self, batch):
        """Reference sources ``(batch, samples, C)`` on the device, and relative lengths."""
        keys = [f"s{i + 1}" for i in range(self.hparams.num_sources)]
        sources = torch.stack([getattr(batch, key).data for key in keys], dim=-1)
        return sources.to(self.device), getattr(batch, keys[0]).lengths

    def _utterances(self, batch, estimates, metrics):
        """Per utterance: (id, PIT scores, named signals with estimates matched to sources)."""
        mixture, lengths = batch.mixture
        sources, _ = self.batch_sources(batch)
        num = sources.shape[-1]
        mixtures = trim_batch(mixture, lengths)
        refs = [trim_batch(sources[..., j], lengths) for j in range(num)]
        ests = [trim_batch(estimates[..., j], lengths) for j in range(num)]
        for b, uid in enumerate(batch.id):
            src = np.stack([r[b] for r in refs])
            est = np.stack([e[b] for e in ests])
            scores = separation_scores(est, src, mixtures[b], metrics=metrics)
            signals = {"mixture": mixtures[b]}
            signals.update({f"source{j + 1}": src[j] for j in range(num)})
            signals.update({f"estimate{j + 1}": est[scores["perm"][j]] for j in range(num)})
            yield uid, scores, signals

    def evaluate_separation(self, batch, estimates, stage):
        """Score a validation/test batch; on TEST, fill the report rows and write examples."""
        test = stage == sb.Stage.TEST
        metrics = self.hparams.test_metrics if test else self.hparams.valid_metrics
        levels = getattr(batch, "tir_db", None)
        levels = [None] * len(batch.id) if levels is None else list(levels)
        for (uid, scores, signals), level in zip(
            self._utterances(batch, estimates, metrics), levels, strict=True
        ):
            if test:
                row = {"id": uid, "input_snr_db": _as_float(level), "errors": scores["errors"]}
                row.update({f"{k}_{p}": scores[f"{k}_{p}"] for k in metrics for p in PARTS})
                self.test_rows.append(row)
                self.save_example(uid, signals)
            else:
                self.metric_records.append(
                    {"id": uid, **{k: scores[f"{k}_estimate"] for k in metrics}}
                )
                if not self.valid_audio_logged:
                    self._log_audio("valid", signals, self.current_epoch)
                    self.valid_audio_logged = True

    def save_example(self, uid, signals):
        """Wavs + spectrogram PNG of one test utterance (the first ``num_examples_to_save``)."""
        if not if_main_process() or self.examples_written >= self.hparams.num_examples_to_save:
            return
        folder = Path(self.hparams.test_report_folder) / "examples" / check_safe_id(uid, "test set")
        for name, signal in signals.items():
            write_audio(folder / f"{name}.wav", _peak_safe(signal), self.hparams.sample_rate)
        save_spectrograms_png(
            folder / "spectrograms.png", signals, sr=self.hparams.sample_rate, title=uid
        )
        self.examples_written += 1

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Every ``tensorboard_audio_every`` steps: a training example (sources and estimates)."""
        if self.tb_writer is None or self.optimizer_step % self.hparams.tensorboard_audio_every:
            return
        _, _, signals = next(self._utterances(batch, outputs.detach(), ("si_snr",)))
        self._log_audio("train", signals, self.optimizer_step)

    def on_stage_start(self, stage, epoch=None):
        """As EnhancementBrain, without metric worker processes (scores are computed here)."""
        if not hasattr(self, "metric_computer"):
            self.metric_computer = None  # EnhancementBrain builds one only when absent
        super().on_stage_start(stage, epoch)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Update the learning rate from the validation loss, then log/checkpoint/report."""
        if stage == sb.Stage.VALID:
            # Every rank scored its own share: average so all ranks keep one learning rate.
            mean_loss = stage_loss
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                total = ddp_all_reduce(
                    torch.tensor(float(stage_loss)), torch.distributed.ReduceOp.SUM
                )
                mean_loss = float(total) / torch.distributed.get_world_size()
            _, next_lr = self.hparams.lr_scheduler([self.optimizer], epoch, mean_loss)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, next_lr)
        super().on_stage_end(stage, stage_loss, epoch)
