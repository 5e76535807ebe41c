"""The fixed STFT-corruption procedure, a dataset wrapper applying it, report merging.

STFT corruption (``StftCorruption``), on one clean signal:

1. the clean signal is scaled to RMS ``rms_db`` (dB re RMS 1; ``None`` keeps
   its level): the procedure sets bins to an *absolute* magnitude, so its
   strength depends on the level, and a fixed level makes it comparable
   across signals (the scaled clean signal is the target);
2. its STFT is taken (periodic Hann window of ``n_fft``, hop ``hop_length``,
   ``center=True`` with zero padding, unnormalized: a full-scale sinusoid
   peaks at about ``n_fft / 4``);
3. among all time-frequency bins, the ``loud_fraction`` (10 %) with the
   largest magnitude are found, and a random ``loud_zero_fraction`` (20 %)
   of them are set to zero;
4. among the ``rest_fraction`` (90 %) bins of smallest magnitude (by default
   exactly the bins not in step 3; ``loud_fraction + rest_fraction <= 1``), a
   random ``rest_set_fraction`` (50 %) are set to magnitude ``set_magnitude``
   (1) with their phase kept (a bin of magnitude exactly 0 has phase 0);
5. the inverse STFT, at the input length, is the corrupted signal.

Counts are rounded to the nearest integer; bins of equal magnitude are
ranked by index (stable sort), so the result only depends on the signal and
the random generator. Randomness only comes from the
``numpy.random.Generator`` passed in.

``StftCorruptedDataset`` wraps a dataset of clean targets (e.g. the on-the-fly
mixer's training examples, or a fixed validation/test set) and replaces each
item's input by the STFT-corrupted target, with a per-item generator seeded
by ``SeedSequence([seed, index, crc32(id)])``: fixed for a fixed set (same
ids every epoch), new each epoch for the on-the-fly training set (its ids
carry the epoch).

``merge_test_reports`` combines the test reports that ``EnhancementBrain``
wrote for several conditions (e.g. one per corruption type) into one CSV with
a condition column, one summary and one markdown table.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from custom_modules.audio.files import atomic_write_json, atomic_write_text, read_json
from custom_modules.audio.levels import eval_snr, normalize_to_rms


def _fraction(value, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


class StftCorruption:
    """The fixed STFT-corruption procedure (see the module docstring).

    Arguments
    ---------
    n_fft, hop_length : int
        STFT size and hop.
    loud_fraction : float
        Fraction of bins, the loudest, among which some are zeroed (0.10).
    loud_zero_fraction : float
        Fraction of those loud bins set to zero (0.20).
    rest_fraction : float
        Fraction of bins, the quietest, among which some are raised (0.90).
    rest_set_fraction : float
        Fraction of those quiet bins set to ``set_magnitude`` (0.50).
    set_magnitude : float
        Magnitude given to them, phase kept (1.0).
    rms_db : float or None
        Level of the clean signal before corruption (None: keep it).

    Example
    -------
    >>> corruption = StftCorruption(n_fft=256, hop_length=64, rms_db=-25.0)
    >>> clean = np.sin(np.arange(8000) * 0.05) * np.hanning(8000)
    >>> corrupted, target, info = corruption(clean, np.random.default_rng(0))
    >>> corrupted.shape, target.dtype, info["num_zeroed"] > 0
    ((8000,), dtype('float32'), True)
    """

    def __init__(
        self,
        n_fft=1024,
        hop_length=256,
        loud_fraction=0.10,
        loud_zero_fraction=0.20,
        rest_fraction=0.90,
        rest_set_fraction=0.50,
        set_magnitude=1.0,
        rms_db=-25.0,
    ):
        if not 0 < int(hop_length) <= int(n_fft):
            raise ValueError(f"need 0 < hop_length ({hop_length}) <= n_fft ({n_fft})")
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.loud_fraction = _fraction(loud_fraction, "loud_fraction")
        self.loud_zero_fraction = _fraction(loud_zero_fraction, "loud_zero_fraction")
        self.rest_fraction = _fraction(rest_fraction, "rest_fraction")
        self.rest_set_fraction = _fraction(rest_set_fraction, "rest_set_fraction")
        if self.loud_fraction + self.rest_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"loud_fraction ({loud_fraction}) + rest_fraction ({rest_fraction}) must be <= 1 "
                "(the loud and the quiet bins are disjoint sets)"
            )
        if not (math.isfinite(float(set_magnitude)) and float(set_magnitude) >= 0):
            raise ValueError(f"set_magnitude must be finite and >= 0, got {set_magnitude}")
        self.set_magnitude = float(set_magnitude)
        if rms_db is not None and not math.isfinite(float(rms_db)):
            raise ValueError(f"rms_db must be finite or None, got {rms_db}")
        self.rms_db = None if rms_db is None else float(rms_db)

    def _window(self) -> torch.Tensor:
        return torch.hann_window(self.n_fft, dtype=torch.float64)

    def stft(self, signal: np.ndarray) -> np.ndarray:
        """Complex STFT (freqs, frames) of a 1-D signal."""
        spec = torch.stft(
            torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float64)),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self._window(),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec.numpy()

    def istft(self, spectrogram: np.ndarray, length: int) -> np.ndarray:
        """Inverse of ``stft`` at ``length`` samples."""
        signal = torch.istft(
            torch.from_numpy(spectrogram),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self._window(),
            center=True,
            length=length,
        )
        return signal.numpy()

    def corrupt_spectrogram(self, spectrogram: np.ndarray, rng: np.random.Generator):
        """Steps 3-4 on a complex spectrogram; returns (corrupted copy, zeroed, raised) indices.

        The indices are into the flattened spectrogram.

        Example
        -------
        >>> spec = np.arange(1, 101, dtype=np.complex128).reshape(10, 10)
        >>> out, zeroed, raised = StftCorruption().corrupt_spectrogram(spec, np.random.default_rng(1))
        >>> len(zeroed), len(raised), bool(np.all(np.abs(out.ravel()[raised]) == 1.0))
        (2, 45, True)
        >>> bool(np.all(np.abs(spec.ravel()[zeroed]) > 90))
        True
        """
        flat = np.array(spectrogram, dtype=np.complex128).ravel()
        total = flat.size
        order = np.argsort(-np.abs(flat), kind="stable")  # loudest first
        num_loud = int(round(self.loud_fraction * total))
        num_rest = min(int(round(self.rest_fraction * total)), total - num_loud)
        loud, rest = order[:num_loud], order[total - num_rest :]
        zeroed = rng.choice(
            loud, size=int(round(self.loud_zero_fraction * num_loud)), replace=False
        )
        raised = rng.choice(rest, size=int(round(self.rest_set_fraction * num_rest)), replace=False)
        flat[zeroed] = 0.0
        flat[raised] = self.set_magnitude * np.exp(1j * np.angle(flat[raised]))
        return flat.reshape(np.shape(spectrogram)), np.sort(zeroed), np.sort(raised)

    def __call__(self, clean, rng: np.random.Generator):
        """Corrupt one clean signal.

        Arguments
        ---------
        clean : array-like
            1-D signal (any level, not silent, finite).
        rng : numpy.random.Generator
            Source of the random choices.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray, dict)
            Corrupted signal and target (the clean signal at ``rms_db``), both
            float32 of the input's length, and ``{"snr_db": target vs
            corrupted - target, "num_zeroed", "num_raised", "gain_db"}``.
        """
        signal = np.asarray(clean, dtype=np.float64)
        if signal.ndim != 1 or signal.size == 0:
            raise ValueError(f"clean signal must be 1-D and non-empty, got shape {signal.shape}")
        if not np.all(np.isfinite(signal)):
            raise ValueError("clean signal contains NaN or Inf values")
        gain_db = 0.0
        if self.rms_db is not None:
            signal, gain_db = normalize_to_rms(signal, self.rms_db)  # raises if silent
        elif not np.any(signal):
            raise ValueError("clean signal is silent (all zeros); nothing to corrupt")
        spec, zeroed, raised = self.corrupt_spectrogram(self.stft(signal), rng)
        corrupted = self.istft(spec, signal.size)
        info = {
            "snr_db": float(eval_snr(corrupted, signal)),
            "num_zeroed": int(zeroed.size),
            "num_raised": int(raised.size),
            "gain_db": float(gain_db),
        }
        return corrupted.astype(np.float32), signal.astype(np.float32), info

    def describe(self) -> dict:
        """The parameters (for logs and set descriptions)."""
        return {
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "loud_fraction": self.loud_fraction,
            "loud_zero_fraction": self.loud_zero_fraction,
            "rest_fraction": self.rest_fraction,
            "rest_set_fraction": self.rest_set_fraction,
            "set_magnitude": self.set_magnitude,
            "rms_db": self.rms_db,
        }


def item_seed(seed: int, index: int, item_id: str) -> np.random.SeedSequence:
    """Seed of one item: ``SeedSequence([seed, index, crc32(id)])`` (stable across processes).

    Example
    -------
    >>> a = item_seed(7, 3, "test_000003").generate_state(1)
    >>> b = item_seed(7, 3, "test_000003").generate_state(1)
    >>> bool(a[0] == b[0])
    True
    """
    return np.random.SeedSequence([int(seed), int(index), zlib.crc32(str(item_id).encode())])


class StftCorruptedDataset(torch.utils.data.Dataset):
    """Items of ``dataset`` with the input replaced by the STFT-corrupted target.

    Arguments
    ---------
    dataset : torch Dataset
        Items are dicts with ``"id"`` and ``"target"`` (1-D tensor or array),
        e.g. ``OnTheFlyDataset`` or a fixed validation/test set.
    corruption : StftCorruption
    seed : int
        Combined with each item's index and id (``item_seed``).

    Items are ``{"id", "mixture": corrupted, "target": target at the
    corruption's level, "snr_db"}`` (float32 tensors); collate them with
    SpeechBrain's ``PaddedBatch``. ``set_epoch`` is passed on to ``dataset``.

    Example
    -------
    >>> clean = [{"id": f"u{i}", "target": torch.randn(4000)} for i in range(3)]
    >>> data = StftCorruptedDataset(clean, StftCorruption(n_fft=256, hop_length=64), seed=0)
    >>> item = data[1]
    >>> item["id"], item["mixture"].shape, bool(torch.equal(item["mixture"], data[1]["mixture"]))
    ('u1', torch.Size([4000]), True)
    """

    def __init__(self, dataset, corruption: StftCorruption, seed: int):
        self.dataset = dataset
        self.corruption = corruption
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the wrapped dataset (new on-the-fly examples each epoch)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index):
        item = self.dataset[index]
        uid = str(item["id"])
        target = item["target"]
        if hasattr(target, "detach"):
            target = target.detach().cpu().numpy()
        rng = np.random.default_rng(item_seed(self.seed, index, uid))
        try:
            corrupted, target, info = self.corruption(target, rng)
        except ValueError as err:
            raise ValueError(
                f"item {uid!r} (index {index}): cannot corrupt its target: {err}"
            ) from err
        return {
            "id": uid,
            "mixture": torch.from_numpy(corrupted),
            "target": torch.from_numpy(target),
            "snr_db": info["snr_db"],
        }


def _read_csv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def merge_test_reports(folder, conditions, metrics, column="corruption", labels=None) -> dict:
    """Combine ``<folder>/<condition>/`` test reports into ``<folder>/``.

    Each ``<folder>/<condition>`` holds an ``EnhancementBrain`` test report
    (``per_utterance.csv``, ``summary.json``). Written atomically in
    ``folder``:

    * ``per_utterance.csv``: all rows, ``column`` first;
    * ``summary.json``: ``{"num_utterances": total, column + "s": conditions,
      "per_" + column: {condition: its summary}}``;
    * ``results_table.md``: ``| column | metric | input | enhanced |
      improvement |``, one row per condition and metric.

    Arguments
    ---------
    folder : str or Path
    conditions : sequence of str
        Sub-folder names, in table order.
    metrics : sequence of str
        Metric keys (``<key>_mixture``/``_estimate``/``_delta`` in the summaries).
    column : str
        Name of the condition column.
    labels : dict, optional
        Display names of the metrics in the table.

    Returns
    -------
    dict
        The combined summary.
    """
    folder = Path(folder)
    labels = labels or {}
    rows, fields, per_condition = [], [column], {}
    for condition in conditions:
        sub = folder / condition
        missing = [p for p in (sub / "per_utterance.csv", sub / "summary.json") if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"test report of {column} {condition!r} incomplete: {missing}")
        condition_rows = _read_csv(sub / "per_utterance.csv")
        for row in condition_rows:
            fields.extend(k for k in row if k not in fields)
            rows.append({column: condition, **row})
        per_condition[condition] = read_json(sub / "summary.json")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "per_utterance.csv", buffer.getvalue())
    summary = {
        "num_utterances": len(rows),
        f"{column}s": list(conditions),
        f"per_{column}": per_condition,
    }
    atomic_write_json(folder / "summary.json", summary)
    lines = [f"| {column} | metric | input | enhanced | improvement |", "|---|---|---|---|---|"]
    for condition in conditions:
        stats = per_condition[condition]
        for key in metrics:
            values = [stats.get(f"{key}_{p}", math.nan) for p in ("mixture", "estimate", "delta")]
            mix, est, delta = (float(v) if v is not None else math.nan for v in values)
            label = labels.get(key, key)
            lines.append(f"| {condition} | {label} | {mix:.3f} | {est:.3f} | {delta:+.3f} |")
    atomic_write_text(folder / "results_table.md", "\n".join(lines) + "\n")
    return summary
