"""The test report's web page (``index.html``) in a real browser, and the choice of its examples.

A report folder is written by the shared writer (:func:`write_test_report`,
:func:`write_example`) from synthetic rows and signals, then opened from disk
in headless Chromium (:mod:`scripts.check_report_page`): no console error,
every player and image loads an existing file, clicking headers sorts the
per-utterance table numerically. Each check is also shown to fail on a page
broken on purpose. A screenshot is written. Recipe pages are checked the same
way by the recipe harness (``tests/recipes/test_recipes.py``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from custom_modules.training import reporting
from custom_modules.training.report_page import write_report_page
from custom_modules.training.reporting import ExampleChooser, write_example, write_test_report
from scripts.check_report_page import check_report_page, find_chromium

SR = 16000
METRICS = ["si_snr", "stoi"]
# Values whose text order differs from their numeric order (10 < 9 < -3 as text).
SI_SNR_DELTAS = [10.5, 9.25, -3.0, math.nan, 100.0, -12.75]

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (make test installs it: scripts/ensure_chromium.sh)",
)


def synthetic_rows():
    rows = []
    for i, delta in enumerate(SI_SNR_DELTAS):
        rows.append(
            {
                "id": f"utt{i + 1}",  # utt1 ... utt6: natural order differs from text order only at 10+
                "input_snr_db": float(5 - 2 * i),
                "condition": "dry" if i % 2 else "reverberant",
                "si_snr_mixture": 1.0,
                "si_snr_estimate": 1.0 + delta,
                "si_snr_delta": delta,
                "stoi_mixture": 0.6,
                "stoi_estimate": 0.6 + 0.01 * i,
                "stoi_delta": 0.01 * i,
                "errors": "estimate si_snr: silent" if math.isnan(delta) else "",
            }
        )
    return rows


@pytest.fixture
def report(tmp_path):
    """A report folder: 6 utterances, the first 1 and the worst 2 by SI-SDR improvement saved."""
    rng = np.random.default_rng(0)
    rows = synthetic_rows()
    chooser = ExampleChooser(num_first=1, num_worst=2)
    t = np.arange(SR // 2) / SR
    for row in rows:
        target = 0.3 * np.sin(2 * np.pi * 220 * t)
        signals = {
            "mixture": target + 0.1 * rng.standard_normal(t.size),
            "target": target,
            "estimate": target + 0.01 * rng.standard_normal(t.size),
        }
        if chooser.take_first(row["id"]):
            write_example(tmp_path / "examples", row["id"], signals, SR)
            chooser.record(row["id"], signals)
            signals = None
        chooser.offer(row["id"], row["si_snr_delta"], signals)
    for uid, _, signals in chooser.worst():
        if signals is not None:
            write_example(tmp_path / "examples", uid, signals, SR)
            chooser.record(uid, signals)
    summary = reporting.test_summary(rows, METRICS, loss=0.5)
    write_test_report(tmp_path, rows, summary, METRICS, "si_snr", chooser.examples())
    return tmp_path


def test_the_page_lists_the_first_and_the_worst_examples(report):
    page = (report / "index.html").read_text()
    # NaN (a failed estimate) ranks worst, then -12.75 (utt6); utt1 is the first.
    sections = re.findall(r"<section id='example-(\w+)'>(.*?)</section>", page)
    assert [uid for uid, _ in sections] == ["utt1", "utt4", "utt6"]
    assert "among the first" in sections[0][1] and "among the worst" not in sections[0][1]
    assert all("among the worst" in body for _, body in sections[1:])
    assert sorted(p.name for p in (report / "examples").iterdir()) == ["utt1", "utt4", "utt6"]
    for uid in ("utt1", "utt4", "utt6"):
        for name in ("mixture", "target", "estimate"):
            assert f"src='examples/{uid}/{name}.wav'" in page
        assert f"src='examples/{uid}/spectrograms.png'" in page
    # Summary per condition, self-contained (no network, inline style and script).
    assert "<h3>dry (3 utterances)</h3>" in page and "<h3>reverberant (3 utterances)</h3>" in page
    assert not re.search(r"https?://|<link rel='stylesheet'|<script src", page)


def test_the_page_escapes_ids_and_encodes_links(tmp_path):
    rows = [{"id": "a<b> #1", "input_snr_db": 0.0, "stoi_mixture": 0.5, "stoi_estimate": 0.6,
             "stoi_delta": 0.1, "errors": ""}]  # fmt: skip
    examples = [{"id": "a<b> #1", "signals": ["mixture"], "reasons": ["first"], "score": 0.1}]
    summary = reporting.test_summary(rows, ["stoi"], loss=0.0)
    page = write_report_page(tmp_path, rows, summary, ["stoi"], examples, "stoi").read_text()
    assert "src='examples/a%3Cb%3E%20%231/mixture.wav'" in page
    assert "<h3>a&lt;b&gt; #1" in page and "a<b>" not in page


def test_example_chooser_keeps_only_the_worst_signals():
    chooser = ExampleChooser(num_first=0, num_worst=3)
    scores = np.random.default_rng(1).normal(size=50)
    for i, score in enumerate(scores):
        chooser.offer(f"u{i}", score, {"estimate": np.full(4, i)})
        assert len(chooser.worst()) == min(i + 1, 3)
    expected = [f"u{i}" for i in np.argsort(scores)[:3]]
    assert [uid for uid, _, _ in chooser.worst()] == expected
    with pytest.raises(ValueError, match="example counts"):
        ExampleChooser(num_first=-1, num_worst=0)


@pytest.mark.slow
@needs_chromium
def test_the_page_works_in_headless_chromium(report, tmp_path_factory):
    shot = Path(tmp_path_factory.mktemp("screenshot")) / "report.png"
    assert check_report_page(report, screenshot=shot) == []
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height > 900  # the whole page, taller than the window


def _break(report, old, new):
    page = report / "index.html"
    text = page.read_text()
    assert old in text
    page.write_text(text.replace(old, new, 1))


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("missing_audio", r"examples/utt4/target\.wav'?: no such file"),
        ("missing_image", r"spectrograms\.png' did not load"),
        ("text_sort", r"click ascending on 'SI-SDR improvement' gave the order"),
        ("no_sorting", r"click ascending on 'input SNR \(dB\)' gave the order"),
        ("console_error", r"console error: broken on purpose"),
        ("exception", r"uncaught exception: .*ReferenceError"),
        ("network", r"references the network"),
    ],
)
def test_the_browser_check_finds_a_broken_page(report, damage, expected):
    if damage == "missing_audio":
        (report / "examples" / "utt4" / "target.wav").unlink()
    elif damage == "missing_image":
        (report / "examples" / "utt6" / "spectrograms.png").unlink()
    elif damage == "text_sort":  # sort numbers as text
        _break(report, 'var numeric = header.getAttribute("data-type") === "number";',
               "var numeric = false;")  # fmt: skip
    elif damage == "no_sorting":
        _break(report, 'header.addEventListener("click"', 'header.addEventListener("dblclick"')
    elif damage == "console_error":
        _break(report, "</body>", "<script>console.error('broken on purpose')</script></body>")
    elif damage == "exception":
        _break(report, "</body>", "<script>undefinedFunction()</script></body>")
    elif damage == "network":
        _break(report, "<h2>Summary</h2>", "<a href='https://example.org/'>x</a><h2>Summary</h2>")
    problems = check_report_page(report)
    assert any(re.search(expected, p) for p in problems), problems
