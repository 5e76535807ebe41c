"""Open a test report's ``index.html`` in headless Chromium, check it, and take a screenshot.

    python -m scripts.check_report_page results/unet_tcm_cpu/1234/test_report \\
        --screenshot results/test_report.png

The page is opened from disk (``file://``) in a fresh headless Chromium driven
through the Chrome DevTools Protocol over a pipe (``--remote-debugging-pipe``:
no port, no network, no extra package). Checked:

* no console error, no uncaught exception, no failed resource load;
* every ``<audio>`` and ``<img>`` references a file by a relative path inside
  the report folder that exists, and the browser loads it (audio metadata with
  a positive duration, images with a positive width);
* no reference leaves the page's folder to the network (``http:``, ``//``);
* sorting: a real mouse click on each header of the per-utterance table
  (``#utterances``) orders its rows ascending (numerically for number columns,
  missing values last), a second click descending, rows kept.

Prints the problems and exits 1 when there are any (0 otherwise). Chromium is
the Debian package ``chromium`` (``scripts/ensure_chromium.sh``); the
``CHROMIUM`` environment variable names another binary.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from custom_modules.audio.files import atomic_write_bytes

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60.0
WINDOW = (1280, 900)

# Waits for every <audio>/<img> to load (or fail) and reports it.
MEDIA_SCRIPT = """
(async () => {
  const settle = (el) => new Promise((resolve) => {
    const done = (ok) => resolve(ok);
    setTimeout(() => done(false), %d);
    if (el.tagName === "IMG") {
      if (el.complete) { return done(el.naturalWidth > 0); }
      el.addEventListener("load", () => done(el.naturalWidth > 0));
      el.addEventListener("error", () => done(false));
      return;
    }
    if (el.error) { return done(false); }
    if (el.readyState >= 1) { return done(el.duration > 0); }
    el.addEventListener("loadedmetadata", () => done(el.duration > 0));
    el.addEventListener("error", () => done(false));
    el.load();
  });
  const result = [];
  for (const el of document.querySelectorAll("audio, img")) {
    result.push({tag: el.tagName.toLowerCase(), src: el.getAttribute("src"),
                 url: el.currentSrc || el.src, loaded: await settle(el)});
  }
  return result;
})()
"""


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` or the first of ``BROWSERS`` on the PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium driven through the DevTools Protocol on a pipe (a context manager).

    ``session`` commands go to one page (:meth:`open`); :attr:`events` collects
    every event of it.
    """

    def __init__(self, binary=None, timeout=TIMEOUT_S):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError(
                "Chromium not found (apt-get install -y chromium, or set CHROMIUM)"
            )
        self.timeout = timeout
        self.events, self.session = [], None
        self._next_id, self._replies = 0, queue.Queue()

    def __enter__(self):
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        command = [
            self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--mute-audio", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={self._profile.name}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip

        def wire_pipes():  # in the child: the protocol's fds 3 (in) and 4 (out)
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            command,
            pass_fds=(3, 4),  # kept open after wire_pipes put the pipes there
            preexec_fn=wire_pipes,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(self, *exc):
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        self._profile.cleanup()

    def _read(self):
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    data = json.loads(message)
                    if "id" in data:
                        self._replies.put(data)
                    else:
                        self.events.append(data)
        self._replies.put(None)  # the browser went away

    def send(self, method, params=None, session=True, timeout=None):
        """Send one command and return its result (raises on a protocol error)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"Chromium did not answer {method}") from None
            if reply is None:
                raise RuntimeError(f"Chromium exited during {method}")
            if reply["id"] == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url):
        """Open ``url`` in a new page, attach to it and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, False
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
        )
        self.send("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired")

    def wait_for_event(self, method):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(event.get("method") == method for event in self.events):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no {method} from Chromium")

    def evaluate(self, expression):
        """The value of a JavaScript expression (promises awaited); raises on an exception."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector):
        """A real left click (mouse events) at the centre of the element ``selector`` matches."""
        x, y = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            "el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            "return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def screenshot(self, path):
        """A PNG of the whole page (written atomically)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        height = min(int(math.ceil(size["height"])), 16000)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        atomic_write_bytes(path, base64.b64decode(data["data"]))

    def console_errors(self):
        """Console errors, uncaught exceptions and failed loads of the page so far."""
        problems = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                problems.append("console error: " + " ".join(texts))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                problems.append(f"uncaught exception: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                problems.append(f"browser error: {entry['text']} {entry.get('url', '')}".strip())
        return problems


def _reference_problems(folder, media):
    problems = []
    for item in media:
        src = item["src"] or ""
        parts = urlsplit(src)
        if parts.scheme or parts.netloc or src.startswith("/"):
            problems.append(f"<{item['tag']}> {src!r} is not a relative path")
            continue
        path = (folder / unquote(parts.path)).resolve()
        if not path.is_relative_to(folder.resolve()):
            problems.append(f"<{item['tag']}> {src!r} points outside {folder}")
        elif not path.is_file():
            problems.append(f"<{item['tag']}> {src!r}: no such file {path}")
        if not item["loaded"]:
            problems.append(f"<{item['tag']}> {src!r} did not load in the browser")
    return problems


def _ordered(values, numeric, ascending):
    """Whether the column's texts are in order (numbers parsed, missing values last; texts in
    natural order, digits as numbers, as JavaScript's ``localeCompare(..., {numeric: true})``)."""
    if not numeric:
        keys = [_natural(text) for text in values]
        return keys == sorted(keys, reverse=not ascending)
    numbers = []
    for text in values:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        numbers.append(number)
    finite = [n for n in numbers if math.isfinite(n)]
    if numbers[: len(finite)] != finite:  # a missing value before a number
        return False
    return finite == sorted(finite, reverse=not ascending)


def _natural(text):
    return [
        (0, int(t), "") if t.isdigit() else (1, 0, t.casefold()) for t in re.split(r"(\d+)", text)
    ]


def _sort_problems(browser):
    headers = browser.evaluate(
        "Array.from(document.querySelectorAll('#utterances thead th'))"
        ".map(th => [th.textContent.trim(), th.getAttribute('data-type')])"
    )
    if not headers:
        return ["no per-utterance table (#utterances) with headers"]
    read_rows = (
        "Array.from(document.querySelectorAll('#utterances tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    before = browser.evaluate(read_rows)
    problems = []
    for column, (title, kind) in enumerate(headers):
        if title == "errors":
            continue
        for ascending in (True, False):
            browser.click(f"#utterances thead th:nth-child({column + 1})")
            rows = browser.evaluate(read_rows)
            order = "ascending" if ascending else "descending"
            if sorted(map(tuple, rows)) != sorted(map(tuple, before)):
                problems.append(f"sorting by {title!r} changed the rows")
            elif not _ordered([r[column] for r in rows], kind == "number", ascending):
                values = [r[column] for r in rows]
                problems.append(f"click {order} on {title!r} gave the order {values}")
    return problems


def check_report_page(folder, screenshot=None, binary=None, timeout=TIMEOUT_S) -> list:
    """Problems of ``folder/index.html`` in headless Chromium (empty: none); writes ``screenshot``.

    Arguments
    ---------
    folder : str or Path
        A test report folder (``index.html`` and the ``examples/`` it references).
    screenshot : str or Path, optional
        Where to write a PNG of the whole page (taken after the checks).
    binary : str, optional
        The Chromium binary (default: :func:`find_chromium`).
    timeout : float
        Seconds to wait for the browser at each step.
    """
    folder = Path(folder)
    page = folder / "index.html"
    if not page.is_file():
        return [f"{page} does not exist"]
    text = page.read_text(encoding="utf-8")
    problems = [
        f"the page references the network ({token!r})"
        for token in ("http://", "https://", "src='//", 'src="//')
        if token in text
    ]
    with Chromium(binary, timeout) as browser:
        browser.open(page.resolve().as_uri())
        media = browser.evaluate(MEDIA_SCRIPT % int(timeout * 1000 / 2))
        problems += _reference_problems(folder, media)
        problems += _sort_problems(browser)
        if screenshot is not None:
            browser.evaluate("window.scrollTo(0, 0)")
            browser.screenshot(screenshot)
        problems += browser.console_errors()
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="test report folder (with index.html)")
    parser.add_argument("--screenshot", help="write a PNG of the whole page here")
    args = parser.parse_args(argv)
    problems = check_report_page(args.folder, screenshot=args.screenshot)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if args.screenshot:
        print(f"Screenshot: {args.screenshot}")
    print(f"{Path(args.folder) / 'index.html'}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
