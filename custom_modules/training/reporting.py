"""The test report of a run: per-utterance CSV, JSON summary, markdown table, examples.

Written by :class:`custom_modules.training.brain.EnhancementBrain` (and its
subclasses) at the end of the test stage, on the main process, into
``hparams.test_report_folder``:

* ``per_utterance.csv``: one row per test utterance, ``<metric>_{mixture,estimate,delta}``;
* ``summary.json``: means over the finite values (:func:`test_summary`), per
  condition too when the test set has conditions;
* ``results_table.md``: metric | mixture | estimate | improvement (also printed);
* ``examples/<id>/``: mixture, target and estimate wavs and a spectrogram PNG, for
  the utterances an :class:`ExampleChooser` picks (the first and the worst);
* ``examples.json``: the saved examples (id, signal names, why saved, score);
* ``index.html``: all of it as one self-contained web page to listen to the
  examples and sort the utterances
  (:func:`custom_modules.training.report_page.write_report_page`).
"""

from __future__ import annotations

import csv
import heapq
import io
import math
from pathlib import Path

import numpy as np

from custom_modules.audio.files import (
    atomic_write_json,
    atomic_write_text,
    check_safe_id,
    read_json,
    write_audio,
)
from custom_modules.audio.levels import limit_peak
from custom_modules.evaluation.plotting import save_spectrograms_png
from custom_modules.training.report_page import write_report_page

PARTS = ("mixture", "estimate", "delta")
EXAMPLES_FILE = "examples.json"
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


def write_test_report(folder, rows, summary, metrics, checkpoint_key, examples=()) -> None:
    """``per_utterance.csv``, ``summary.json``, ``results_table.md`` and ``index.html`` in ``folder``.

    Prints the table. ``examples`` describes the saved examples for the page
    (:meth:`ExampleChooser.examples`).
    """
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
    examples = list(examples)
    atomic_write_json(folder / EXAMPLES_FILE, examples)
    page = write_report_page(
        folder, rows, summary, metrics, examples, checkpoint_key, labels=METRIC_LABELS
    )
    print(f"Per-utterance results: {folder / 'per_utterance.csv'}")
    print(f"Examples (wavs + spectrogram PNGs): {folder / 'examples'}")
    print(f"Web page (listen, sort): {page}")


def write_merged_report_page(folder, conditions, metrics, checkpoint_key, labels=None) -> Path:
    """``folder/index.html`` over the test reports in ``folder/<condition>/`` (e.g. per corruption).

    Each sub-folder holds a report of :func:`write_test_report`. The page has
    the means over all rows and per condition, every row (id
    ``<condition>/<id>``, the condition in the condition column) and every
    sub-report's examples (files left where they are).
    """
    folder = Path(folder)
    rows, examples = [], []
    for condition in conditions:
        sub = folder / condition
        with open(sub / "per_utterance.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                numbers = {k: as_float(row[k]) for k in row if k.endswith(PARTS + ("_db",))}
                rows.append({**row, **numbers, "id": f"{condition}/{row['id']}",
                             "condition": condition})  # fmt: skip
        for example in read_json(sub / EXAMPLES_FILE):
            path = f"{condition}/examples/{example['id']}"
            examples.append({**example, "id": f"{condition}/{example['id']}", "path": path})
    summary = test_summary(rows, metrics, loss=math.nan)
    return write_report_page(
        folder,
        rows,
        summary,
        metrics,
        examples,
        checkpoint_key,
        labels={**METRIC_LABELS, **(labels or {})},
    )


def write_example(folder, uid, signals, sr) -> None:
    """``folder/<uid>/<name>.wav`` for every signal (peak-limited) and ``spectrograms.png``.

    ``uid`` becomes a folder name: an id reaching outside ``folder`` is refused.
    Every file is written atomically.
    """
    check_safe_id(uid, "test set")
    folder = Path(folder)
    for name, signal in signals.items():
        write_audio(folder / uid / f"{name}.wav", limit_peak(signal), sr)
    save_spectrograms_png(folder / uid / "spectrograms.png", signals, sr=sr, title=uid)


class ExampleChooser:
    """Which test utterances are saved as examples: the first ``num_first`` and the worst ``num_worst``.

    The first ones are known as the test set is read (:meth:`take_first`: save
    them at once); the worst are those with the lowest score (the checkpoint
    metric's improvement; a non-finite score counts as the worst), known only
    once scored: :meth:`offer` keeps the signals of the ``num_worst`` lowest
    seen so far (memory for ``num_worst`` utterances), :meth:`worst` returns
    them at the end. An utterance among both is saved once, with both reasons.

    Example
    -------
    >>> chooser = ExampleChooser(num_first=1, num_worst=2)
    >>> [chooser.take_first(uid) for uid in ("a", "b", "c", "d")]
    [True, False, False, False]
    >>> for uid, score in (("a", -3.0), ("b", 2.0), ("c", math.nan), ("d", 1.0)):
    ...     chooser.offer(uid, score, {"estimate": uid})
    >>> [(uid, signals) for uid, _, signals in chooser.worst()]
    [('c', {'estimate': 'c'}), ('a', None)]
    >>> chooser.record("a", ["estimate"]); chooser.record("c", ["estimate"])
    >>> [(e["id"], e["reasons"]) for e in chooser.examples()]
    [('a', ['first', 'worst']), ('c', ['worst'])]
    """

    def __init__(self, num_first: int, num_worst: int):
        if int(num_first) < 0 or int(num_worst) < 0:
            raise ValueError(f"example counts must be >= 0, got {num_first} and {num_worst}")
        self.num_first, self.num_worst = int(num_first), int(num_worst)
        self.first_ids = []
        self.scores = {}
        self.saved = {}
        self._heap = []  # (-score, -order, uid, signals): the highest of the kept scores on top
        self._order = 0

    def take_first(self, uid) -> bool:
        """Whether ``uid`` (the next utterance of the test set) is among the first: save it now."""
        if len(self.first_ids) < self.num_first:
            self.first_ids.append(uid)
            return True
        return False

    def offer(self, uid, score, signals) -> None:
        """A scored utterance; its ``signals`` are kept while it is among the worst.

        Signals of an utterance already saved as one of the first are not kept.
        """
        score = float(score) if math.isfinite(as_float(score)) else -math.inf
        self.scores[uid] = score
        if self.num_worst == 0:
            return
        item = (-score, -self._order, uid, None if uid in self.first_ids else signals)
        self._order += 1
        if len(self._heap) < self.num_worst:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:  # lower score (or equal and earlier) than the kept highest
            heapq.heapreplace(self._heap, item)

    def worst(self) -> list:
        """``(uid, score, signals or None when already saved)``, lowest score first."""
        return [(uid, -neg, signals) for neg, _, uid, signals in sorted(self._heap, reverse=True)]

    def record(self, uid, signal_names) -> None:
        """Note that ``uid`` was saved with these signals (``examples/<uid>/<name>.wav``)."""
        self.saved[uid] = list(signal_names)

    def examples(self) -> list:
        """The saved examples for the web page: ``id``, ``signals``, ``reasons``, ``score``."""
        worst_ids = [uid for uid, _, _ in self.worst()]
        result = []
        for uid in dict.fromkeys([*self.first_ids, *worst_ids]):
            if uid not in self.saved:
                continue
            reasons = [
                r for r, ids in (("first", self.first_ids), ("worst", worst_ids)) if uid in ids
            ]
            score = self.scores.get(uid, math.nan)
            result.append(
                {
                    "id": uid,
                    "signals": self.saved[uid],
                    "reasons": reasons,
                    "score": score if math.isfinite(score) else None,
                }
            )
        return result


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
