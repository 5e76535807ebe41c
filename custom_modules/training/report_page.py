"""The test report as one self-contained web page: ``test_report/index.html``.

Written by :func:`write_report_page` next to the report's other files (see
:mod:`custom_modules.training.reporting`) and opened from disk: no network, no
external style sheet or script (CSS and JS are inline), every link relative.
The page shows

* the summary table (metric | mixture | estimate | improvement), for all
  utterances and per condition when the test set has conditions;
* the saved examples: an audio player per signal (mixture, target, estimate;
  sources and estimates for separation) beside the example's spectrograms,
  each example labelled with why it was saved (among the first, among the
  worst by the checkpoint metric's improvement);
* the per-utterance table, sorted by clicking a column header (numerically
  for numbers; again for the reverse order; missing values stay last).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from urllib.parse import quote

from custom_modules.audio.files import atomic_write_text

PAGE_NAME = "index.html"
EXAMPLES_FOLDER = "examples"
SPECTROGRAMS_FILE = "spectrograms.png"
PARTS = ("mixture", "estimate", "delta")
PART_HEADERS = {"mixture": "mixture", "estimate": "estimate", "delta": "improvement"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
table.sortable thead th { cursor: pointer; user-select: none; position: sticky; top: 0; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
.example { display: flex; gap: 1.5em; align-items: flex-start; margin-bottom: 2em; }
.players figure { margin: 0 0 0.8em; }
.players figcaption { font-size: 0.85em; color: #555; }
.example img { max-width: 60vw; border: 1px solid #ddd; }
.tag { font-size: 0.8em; background: #eef; border-radius: 3px; padding: 0.1em 0.4em; }
.tag.worst { background: #fdd; }
"""

# Sorting of every ``table.sortable`` by its header cells (click or Enter).
SCRIPT = """
(function () {
  "use strict";
  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    if (!numeric) { return raw.trim(); }
    var value = parseFloat(raw);
    return isFinite(value) ? value : null;
  }
  function sortBy(table, header, column) {
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(header.parentNode.cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (row, index) {
      return { key: sortKey(row.cells[column], numeric), index: index, row: row };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        return (a.key === null) - (b.key === null) || a.index - b.index;
      }
      var order = numeric ? a.key - b.key
        : a.key.localeCompare(b.key, undefined, { numeric: true });
      return (ascending ? order : -order) || a.index - b.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, header, column);
        }
      });
    });
  });
})();
"""


def example_link(uid, name, path=None) -> str:
    """Relative URL of ``<path>/<name>`` (default path: ``examples/<uid>``; parts percent-encoded).

    Example
    -------
    >>> example_link("a b#1", "mixture.wav")
    'examples/a%20b%231/mixture.wav'
    >>> example_link("x", "mixture.wav", path="stft/examples/x")
    'stft/examples/x/mixture.wav'
    """
    parts = path.split("/") if path else [EXAMPLES_FOLDER, uid]
    return "/".join(quote(part, safe="") for part in (*parts, name))


def _number(value, signed=False) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(value):
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _summary_table(summary, metrics, labels) -> str:
    head = "".join(f"<th>{PART_HEADERS[p]}</th>" for p in PARTS)
    lines = [f"<table class='summary'><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for key in metrics:
        cells = "".join(
            f"<td>{_number(summary.get(f'{key}_{p}'), signed=p == 'delta')}</td>" for p in PARTS
        )
        lines.append(f"<tr><td>{html.escape(labels.get(key, key))}</td>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _example_section(example, labels, checkpoint_key) -> str:
    uid = example["id"]
    tags = []
    for reason in example["reasons"]:
        text = "among the first" if reason == "first" else "among the worst"
        tags.append(f"<span class='tag {reason}'>{text}</span>")
    score = example.get("score")
    label = labels.get(checkpoint_key, checkpoint_key)
    path = example.get("path")
    players = "".join(
        f"<figure><figcaption>{html.escape(name)}</figcaption><audio controls preload='metadata' "
        f"src='{example_link(uid, name + '.wav', path)}'></audio></figure>"
        for name in example["signals"]
    )
    image = example_link(uid, SPECTROGRAMS_FILE, path)
    return (
        f"<section id='{html.escape('example-' + uid, quote=True)}'>"
        f"<h3>{html.escape(uid)} {' '.join(tags)} "
        f"<small>{html.escape(label)} improvement {_number(score, signed=True)}</small></h3>"
        f"<div class='example'><div class='players'>{players}</div>"
        f"<img src='{image}' alt='spectrograms of {html.escape(uid, quote=True)}'></div></section>"
    )


def _utterance_table(rows, metrics, labels, example_ids) -> str:
    has_condition = any(row.get("condition") is not None for row in rows)
    columns = [("id", "id", "text"), ("input_snr_db", "input SNR (dB)", "number")]
    if has_condition:
        columns.append(("condition", "condition", "text"))
    for key in metrics:
        for part in PARTS:
            name = f"{html.escape(labels.get(key, key))} {PART_HEADERS[part]}"
            columns.append((f"{key}_{part}", name, "number"))
    columns.append(("errors", "errors", "text"))
    head = "".join(f"<th data-type='{kind}'>{title}</th>" for _, title, kind in columns)
    lines = [f"<table class='sortable' id='utterances'><thead><tr>{head}</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for field, _, kind in columns:
            value = row.get(field)
            if field == "id" and value in example_ids:
                anchor = html.escape("#example-" + value, quote=True)
                cells.append(f"<td><a href='{anchor}'>{html.escape(value)}</a></td>")
            elif kind == "number":
                signed = field.endswith("_delta")
                cells.append(
                    f"<td data-value='{html.escape(_raw(value))}'>{_number(value, signed)}</td>"
                )
            else:
                cells.append(f"<td>{html.escape('' if value is None else str(value))}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _raw(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return repr(value) if math.isfinite(value) else ""


def report_page_html(rows, summary, metrics, examples, checkpoint_key, labels, title) -> str:
    """The page's HTML (see :func:`write_report_page` for the arguments)."""
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<link rel='icon' href='data:,'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{summary.get('num_utterances', len(rows))} test utterances, best "
        f"{html.escape(labels.get(checkpoint_key, checkpoint_key))} checkpoint; "
        f"test loss {_number(summary.get('loss'))}.</p>",
        "<h2>Summary</h2>",
        _summary_table(summary, metrics, labels),
    ]
    for condition, part in summary.get("by_condition", {}).items():
        parts.append(
            f"<h3>{html.escape(str(condition))} ({part['num_utterances']} utterances)</h3>"
        )
        parts.append(_summary_table(part, metrics, labels))
    parts.append(f"<h2>Examples ({len(examples)})</h2>")
    if not examples:
        parts.append("<p>No examples were saved.</p>")
    parts += [_example_section(example, labels, checkpoint_key) for example in examples]
    parts.append("<h2>Per utterance</h2><p>Click a column header to sort (again: reverse).</p>")
    parts.append(_utterance_table(rows, metrics, labels, {e["id"] for e in examples}))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_report_page(
    folder, rows, summary, metrics, examples, checkpoint_key, labels=None, title="Test report"
) -> Path:
    """Write ``folder/index.html`` atomically; returns its path.

    Arguments
    ---------
    folder : str or Path
        The test report folder (its ``examples/<id>/`` hold the example files).
    rows : list of dict
        Per-utterance rows (``id``, ``input_snr_db``, optional ``condition``,
        ``<metric>_{mixture,estimate,delta}``, ``errors``).
    summary : dict
        :func:`custom_modules.training.reporting.test_summary` of the rows.
    metrics : list of str
        Metric keys, in table order.
    examples : list of dict
        Saved examples: ``id``, ``signals`` (names of ``<name>.wav`` in
        ``examples/<id>/``, or in the relative folder ``path`` when given),
        ``reasons`` (``"first"`` and/or ``"worst"``) and ``score`` (the
        checkpoint metric's improvement).
    checkpoint_key : str
        The metric that chose the checkpoint and the worst examples.
    labels : dict, optional
        Display names of the metrics.
    title : str
        Page title.

    Example
    -------
    >>> import tempfile
    >>> rows = [{"id": "u1", "input_snr_db": 0.0, "stoi_mixture": 0.6, "stoi_estimate": 0.7,
    ...          "stoi_delta": 0.1, "errors": ""}]
    >>> summary = {"num_utterances": 1, "loss": 0.5, "stoi_mixture": 0.6, "stoi_estimate": 0.7,
    ...            "stoi_delta": 0.1}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     page = write_report_page(tmp, rows, summary, ["stoi"], [], "stoi").read_text()
    >>> "<td>+0.100</td>" in page, "http" in page
    (True, False)
    """
    path = Path(folder) / PAGE_NAME
    text = report_page_html(rows, summary, metrics, examples, checkpoint_key, labels or {}, title)
    atomic_write_text(path, text)
    return path
