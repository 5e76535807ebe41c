"""Per-utterance evaluation metrics: SNR, SI-SNR, STOI and wide-band PESQ.

* ``snr``, ``si_snr``, ``stoi``, ``pesq_wb`` score one estimate against its
  reference (1-D signals of equal length, numpy float64 internally). They raise
  ``MetricError`` (a ``ValueError``) with the reason when a score is undefined:
  silent reference, too little speech for STOI, PESQ finding no utterance...
* ``MetricComputer`` scores many utterances in a reusable pool of worker
  processes (PESQ takes ~0.1-0.3 s per utterance, which would otherwise
  dominate validation). Per-utterance failures never raise: the score is NaN
  and ``"<metric>_error"`` holds the reason, e.g.
  ``{"pesq": nan, "pesq_error": "NoUtterancesError: ..."}``.
* ``compute_metrics`` is the one-shot form; ``summarize`` averages records,
  ignoring NaN and counting failures.

Argument order is always ``(estimate, reference)``; note that pystoi and pesq
themselves take the reference first.
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pesq as pesq_lib
import pystoi

from custom_modules.audio.levels import as_signal, eval_snr

METRIC_NAMES = ("snr", "si_snr", "stoi", "pesq")


class MetricError(ValueError):
    """A metric that is undefined for the given signals (the message says why)."""


def as_signal_pair(estimate, reference):
    """Both signals as checked 1-D float64 arrays of equal length (else ``MetricError``).

    Example
    -------
    >>> est, ref = as_signal_pair([1.0, 0.0], [0.5, 0.5])
    >>> est.dtype, ref.shape
    (dtype('float64'), (2,))
    """
    est = as_signal(estimate, "estimate", error=MetricError, one_d=True)
    ref = as_signal(reference, "reference", error=MetricError, one_d=True)
    if est.shape != ref.shape:
        raise MetricError(f"estimate has {est.size} samples but reference has {ref.size}")
    return est, ref


def _check_not_silent(reference: np.ndarray) -> None:
    if not np.any(reference):
        raise MetricError("reference is silent (all zeros); the score is undefined")


def snr(estimate, reference) -> float:
    """SNR in dB: ``10 log10(|ref|² / |est - ref|²)`` (``+inf`` for a perfect estimate).

    Example
    -------
    >>> ref = np.array([1.0, -1.0, 1.0, -1.0])
    >>> round(snr(ref * 1.1, ref), 6)
    20.0
    """
    est, ref = as_signal_pair(estimate, reference)
    _check_not_silent(ref)
    return float(eval_snr(est, ref))


def si_snr(estimate, reference) -> float:
    """Scale-invariant SNR in dB (both signals made zero-mean first).

    The reference is scaled by the least-squares gain ``<est, ref> / |ref|²``;
    SI-SNR is the SNR of the estimate against that scaled reference: ``+inf``
    when the residual is exactly zero, ``-inf`` when the estimate is exactly
    orthogonal to the reference (rounding usually gives large finite values).

    Example
    -------
    >>> ref = np.sin(np.arange(100) / 3.0)
    >>> noisy = ref + 0.1 * np.cos(np.arange(100) * 1.3)
    >>> round(si_snr(5 * noisy, ref), 9) == round(si_snr(noisy, ref), 9)
    True
    """
    est, ref = as_signal_pair(estimate, reference)
    est, ref = est - est.mean(), ref - ref.mean()
    if not np.any(ref):
        raise MetricError("reference is constant (silent once zero-mean); SI-SNR is undefined")
    gain = np.dot(est, ref) / np.dot(ref, ref)
    if gain == 0.0:
        return -math.inf
    # eval_snr(estimate, signal) = 10 log10(|signal|² / |estimate - signal|²).
    return float(eval_snr(est, gain * ref))


def stoi(estimate, reference, sr=16000, extended=False) -> float:
    """STOI (or extended STOI) from pystoi, in [0, 1] (ESTOI may be slightly negative).

    Raises ``MetricError`` when the reference is silent or, after pystoi drops
    frames 40 dB below the loudest, fewer than 30 frames (~384 ms) remain
    (pystoi itself would only warn and return 1e-5).
    """
    est, ref = as_signal_pair(estimate, reference)
    _check_not_silent(ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = pystoi.stoi(ref, est, sr, extended=extended)
    for warning in caught:
        if "Not enough STFT frames" in str(warning.message):
            raise MetricError(
                "too little speech for STOI (fewer than 30 non-silent 25.6 ms frames)"
            )
    return float(score)


def pesq_wb(estimate, reference, sr=16000) -> float:
    """Wide-band PESQ (ITU-T P.862.2 MOS-LQO, about 1.04 to 4.64) from the pesq package.

    Raises ``MetricError`` naming the pesq error (``NoUtterancesError``,
    ``BufferTooShortError``...) when PESQ cannot score the pair.
    """
    if sr != 16000:
        raise MetricError(f"wide-band PESQ needs 16000 Hz audio, got {sr} Hz")
    est, ref = as_signal_pair(estimate, reference)
    try:
        return float(pesq_lib.pesq(sr, ref, est, "wb"))
    except pesq_lib.PesqError as err:
        # A silent reference gives "NoUtterancesError: No utterances detected".
        raise MetricError(f"{type(err).__name__}: {_message(err)}") from err


def _message(err: Exception) -> str:
    """Text of an exception (the pesq C extension gives bytes)."""
    if len(err.args) == 1 and isinstance(err.args[0], bytes):
        return err.args[0].decode("utf-8", errors="replace")
    return str(err)


def _metric_function(name):
    if name == "snr":
        return lambda est, ref, sr: snr(est, ref)
    if name == "si_snr":
        return lambda est, ref, sr: si_snr(est, ref)
    if name == "stoi":
        return lambda est, ref, sr: stoi(est, ref, sr)
    if name == "pesq":
        return lambda est, ref, sr: pesq_wb(est, ref, sr)
    raise ValueError(f"unknown metric {name!r}; expected some of {METRIC_NAMES}")


def utterance_metrics(utterance_id, estimate, reference, sr, metrics=METRIC_NAMES) -> dict:
    """Scores of one utterance: ``{"id": ..., name: float, name + "_error": reason}``.

    Never raises for a failing metric: its value is NaN and the reason is
    recorded (the ``MetricError`` message, else ``"ExceptionType: message"``).
    Runs in the worker processes.
    """
    record = {"id": utterance_id}
    for name in metrics:
        try:
            record[name] = _metric_function(name)(estimate, reference, sr)
        except Exception as err:  # reported, never fatal (see module docstring)
            record[name] = math.nan
            reason = _message(err)
            if not isinstance(err, MetricError):
                reason = f"{type(err).__name__}: {reason}"
            record[f"{name}_error"] = reason
    return record


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class MetricComputer:
    """Scores utterances in a reusable pool of worker processes.

    Arguments
    ---------
    num_workers : int
        Worker processes; 0 computes serially in the calling process.
    sr : int
        Sample rate of the signals (wide-band PESQ needs 16000).
    metrics : sequence of str
        Some of ``METRIC_NAMES``.
    mp_context : str
        Start method of the workers. "spawn" (default) is safe after torch or
        CUDA were initialised in the parent; the pool is created on the first
        call and reused until ``close``.

    Example
    -------
    >>> ref = np.sin(np.arange(8000) / 5.0)
    >>> with MetricComputer(num_workers=0, metrics=("snr", "si_snr")) as computer:
    ...     records = computer.compute([ref * 0.5], [ref], ids=["utt1"])
    >>> records[0]["id"], round(records[0]["snr"], 3)
    ('utt1', 6.021)
    """

    def __init__(self, num_workers=2, sr=16000, metrics=METRIC_NAMES, mp_context="spawn"):
        self.metrics = tuple(metrics)
        for name in self.metrics:
            _metric_function(name)  # unknown names fail here, not in a worker
        if "pesq" in self.metrics and sr != 16000:
            raise ValueError(f"wide-band PESQ needs sr=16000, got {sr}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = num_workers
        self.sr = sr
        self.mp_context = mp_context
        self._pool = None

    def _executor(self):
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.num_workers,
                mp_context=multiprocessing.get_context(self.mp_context),
            )
        return self._pool

    def compute(self, estimates, references, ids=None, lengths=None) -> list:
        """Scores of every (estimate, reference) pair, in input order.

        Arguments
        ---------
        estimates, references : sequence of 1-D arrays/tensors, or (batch, samples) tensors
            Paired signals of equal lengths.
        ids : sequence of str, optional
            Utterance ids (default: "0", "1", ...).
        lengths : sequence of float, optional
            Relative lengths (SpeechBrain style) to crop padded batches.

        Returns
        -------
        list of dict
            One record per utterance (see ``utterance_metrics``).
        """
        return self.collect(self.submit(estimates, references, ids=ids, lengths=lengths))

    def submit(self, estimates, references, ids=None, lengths=None) -> list:
        """Start scoring without waiting; ``collect`` the returned handles later.

        Lets a caller keep the workers busy across many small batches (e.g. a
        test set evaluated one utterance at a time). Same arguments as
        ``compute``. With ``num_workers=0`` the work is done here, at once.
        """
        estimates = [_to_numpy(x) for x in estimates]
        references = [_to_numpy(x) for x in references]
        if len(estimates) != len(references):
            raise ValueError(f"{len(estimates)} estimates but {len(references)} references")
        ids = [str(i) for i in range(len(estimates))] if ids is None else list(ids)
        if len(ids) != len(estimates):
            raise ValueError(f"{len(ids)} ids for {len(estimates)} utterances")
        if lengths is not None:
            lengths = [float(x) for x in _to_numpy(lengths)]
            if len(lengths) != len(estimates):
                raise ValueError(f"{len(lengths)} lengths for {len(estimates)} utterances")
            crop = [
                int(round(rel * ref.shape[-1]))
                for rel, ref in zip(lengths, references, strict=True)
            ]
            estimates = [est[..., :n] for est, n in zip(estimates, crop, strict=True)]
            references = [ref[..., :n] for ref, n in zip(references, crop, strict=True)]
        jobs = list(zip(ids, estimates, references, strict=True))
        if self.num_workers == 0:
            return [
                (uid, utterance_metrics(uid, est, ref, self.sr, self.metrics))
                for uid, est, ref in jobs
            ]
        return [
            (uid, self._executor().submit(utterance_metrics, uid, est, ref, self.sr, self.metrics))
            for uid, est, ref in jobs
        ]

    def collect(self, handles) -> list:
        """Records of handles returned by ``submit``, in order (waits for them)."""
        records, broken = [], False
        for uid, handle in handles:
            if isinstance(handle, dict):
                records.append(handle)
                continue
            try:
                records.append(handle.result())
            except BrokenProcessPool as err:
                # A worker died (e.g. killed for memory): report, and start afresh next call.
                broken = True
                reason = f"BrokenProcessPool: worker process died ({err})"
                record = {"id": uid}
                for name in self.metrics:
                    record[name], record[f"{name}_error"] = math.nan, reason
                records.append(record)
        if broken:
            self.close()
        return records

    def close(self) -> None:
        """Shut the worker pool down (a later ``compute`` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def compute_metrics(
    estimates, references, sr=16000, metrics=METRIC_NAMES, num_workers=2, ids=None, lengths=None
) -> list:
    """One-shot ``MetricComputer(...).compute(...)`` (the pool is closed afterwards).

    For repeated calls (every validation epoch), keep one ``MetricComputer``.

    Example
    -------
    >>> ref = np.sin(np.arange(4000) / 7.0)
    >>> records = compute_metrics([ref], [ref * 0.0], metrics=("snr",), num_workers=0)
    >>> records[0]["snr"], records[0]["snr_error"]
    (nan, 'reference is silent (all zeros); the score is undefined')
    """
    with MetricComputer(num_workers=num_workers, sr=sr, metrics=metrics) as computer:
        return computer.compute(estimates, references, ids=ids, lengths=lengths)


def summarize(records) -> dict:
    """Mean of every numeric field over the records, ignoring NaN, with counts.

    Returns ``{name: mean, name + "_failures": number of NaN values, ...,
    "num_utterances": len(records)}``; a metric with no finite value (only
    NaN) has mean NaN. ``+inf``/``-inf`` scores (a perfect SNR) are kept.

    Example
    -------
    >>> summary = summarize([{"id": "a", "pesq": 2.0}, {"id": "b", "pesq": float("nan")}])
    >>> summary["pesq"], summary["pesq_failures"], summary["num_utterances"]
    (2.0, 1, 2)
    """
    names = []
    for record in records:
        for key, value in record.items():
            numeric = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
            if key != "id" and numeric and key not in names:
                names.append(key)
    summary = {}
    for name in names:
        values = np.array([float(r[name]) for r in records if name in r], dtype=np.float64)
        valid = values[~np.isnan(values)]
        summary[name] = float(np.mean(valid)) if valid.size else math.nan
        summary[f"{name}_failures"] = int(np.isnan(values).sum())
    summary["num_utterances"] = len(records)
    return summary
