"""The test report of a run: per-utterance CSV, JSON summary, markdown table, examples.

Written by :class:`custom_modules.training.brain.EnhancementBrain` (and its
subclasses) at the end of the test stage, on the main process, into
``hparams.test_report_folder``:

* ``per_utterance.csv``: one row per test utterance, ``<metric>_{mixture,estimate,delta}``;
* ``summary.json``: means over the finite values (:func:`test_summary`), per
  condition too when the test set has conditions;
* ``results_table.md``: metric | mixture | estimate | improvement (also printed);
* ``examples/<id>/``: mixture, target and estimate wavs and a spectrogram PNG.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from custom_modules.audio.files import (
    atomic_write_json,
    atomic_write_text,
    check_safe_id,
    write_audio,
)
from custom_modules.audio.levels import limit_peak
from custom_modules.evaluation.plotting import save_spectrograms_png

PARTS = ("mixture", "estimate", "delta")
# Display names; every metric is higher-is-better, the table shows estimate − mixture.
METRIC_LABELS = {
    "snr": "SNR",
    "si_snr": "SI-SDR",
    "stoi": "STOI",
    "pesq": "PESQ",
    "bss_sdr": "SDR (BSS Eval)",
    "wsdr": "wSDR",
    "si_snr_zero_ref": "SI-SDR, zero reference",
    "si_snr_other_ref": "SI-SDR, other speaker's reference",
}


def test_summary(rows, metrics, loss) -> dict:
    """Means of every ``<metric>_{mixture,estimate,delta}`` over the finite values of the rows.

    Also ``num_utterances``, ``loss``, ``<metric>_failures`` (non-finite estimates) and,
    when rows carry a ``condition``, ``by_condition`` (:func:`summarize_by_condition`).

    Example
    -------
    >>> rows = [{"stoi_mixture": 0.6, "stoi_estimate": 0.8, "stoi_delta": 0.2},
    ...         {"stoi_mixture": 0.5, "stoi_estimate": math.nan, "stoi_delta": math.nan}]
    >>> s = test_summary(rows, ["stoi"], loss=1.5)
    >>> s["num_utterances"], s["stoi_estimate"], s["stoi_failures"]
    (2, 0.8, 1)
    """
    summary = {"num_utterances": len(rows), "loss": float(loss)}
    for key in metrics:
        for part in PARTS:
            values = np.array([r[f"{key}_{part}"] for r in rows], dtype=float)
            finite = values[np.isfinite(values)]
            summary[f"{key}_{part}"] = float(finite.mean()) if finite.size else math.nan
            if part == "estimate":
                summary[f"{key}_failures"] = int(values.size - finite.size)
    by_condition = summarize_by_condition(rows, metrics)
    if by_condition:
        summary["by_condition"] = by_condition
    return summary


def write_test_report(folder, rows, summary, metrics, checkpoint_key) -> None:
    """``per_utterance.csv``, ``summary.json`` and ``results_table.md`` in ``folder``; prints the table."""
    folder = Path(folder)
    by_condition = summary.get("by_condition", {})
    fields = (
        ["id", "input_snr_db"]
        + (["condition"] if by_condition else [])
        + [f"{k}_{p}" for k in metrics for p in PARTS]
        + ["errors"]
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    atomic_write_text(folder / "per_utterance.csv", buffer.getvalue())
    atomic_write_json(folder / "summary.json", summary)
    table = format_results_table(summary, metrics)
    atomic_write_text(folder / "results_table.md", table + "\n")
    print(f"\nTest set ({len(rows)} utterances, best {checkpoint_key} checkpoint)")
    print(table)
    for condition, part in by_condition.items():
        print(f"\n{condition} ({part['num_utterances']} utterances)")
        print(format_results_table(part, metrics))
    print(f"Per-utterance results: {folder / 'per_utterance.csv'}")
    print(f"Examples (wavs + spectrogram PNGs): {folder / 'examples'}")


def write_example(folder, uid, signals, sr) -> None:
    """``folder/<uid>/<name>.wav`` for every signal (peak-limited) and ``spectrograms.png``.

    ``uid`` becomes a folder name: an id reaching outside ``folder`` is refused.
    """
    check_safe_id(uid, "test set")
    folder = Path(folder)
    for name, signal in signals.items():
        write_audio(folder / uid / f"{name}.wav", limit_peak(signal), sr)
    save_spectrograms_png(folder / uid / "spectrograms.png", signals, sr=sr, title=uid)


def summarize_by_condition(rows, metrics, key="condition") -> dict:
    """Means of every metric part per ``condition`` of the rows (e.g. dry / reverberant speech).

    ``key`` names another grouping field of the rows (e.g. the noise source).

    Example
    -------
    >>> rows = [{"condition": "dry", "stoi_mixture": 0.6, "stoi_estimate": 0.8, "stoi_delta": 0.2},
    ...         {"condition": "reverberant", "stoi_mixture": 0.5, "stoi_estimate": 0.5,
    ...          "stoi_delta": 0.0}]
    >>> summarize_by_condition(rows, ["stoi"])["dry"]["stoi_delta"]
    0.2
    """
    groups = {}
    for row in rows:
        if row.get(key) is not None:
            groups.setdefault(row[key], []).append(row)
    result = {}
    for condition in sorted(groups):
        part = {"num_utterances": len(groups[condition])}
        for key in metrics:
            for which in ("mixture", "estimate", "delta"):
                values = np.array([r[f"{key}_{which}"] for r in groups[condition]], dtype=float)
                finite = values[np.isfinite(values)]
                part[f"{key}_{which}"] = float(finite.mean()) if finite.size else math.nan
        result[condition] = part
    return result


def format_results_table(summary, metrics):
    """Markdown table: metric | mixture | estimate | improvement.

    Example
    -------
    >>> s = {"stoi_mixture": 0.7, "stoi_estimate": 0.8, "stoi_delta": 0.1}
    >>> print(format_results_table(s, ["stoi"]).splitlines()[2])
    | STOI | 0.700 | 0.800 | +0.100 |
    """
    lines = ["| metric | mixture | estimate | improvement |", "|---|---|---|---|"]
    for key in metrics:
        label = METRIC_LABELS.get(key, key)
        mix, est, delta = (summary[f"{key}_{p}"] for p in ("mixture", "estimate", "delta"))
        lines.append(f"| {label} | {mix:.3f} | {est:.3f} | {delta:+.3f} |")
    return "\n".join(lines)


def as_float(value):
    """``float(value)``, NaN when it has none (``None``, a string)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else value
