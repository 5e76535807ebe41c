"""README figure rows from the JSON reports of ``benchmarks.mixing`` and ``benchmarks.streaming``.

Usage::

    python -m benchmarks.readme_rows results/bench/mixing.json results/bench/streaming.json

Prints one Markdown table row per figure (what | figure | command), each naming
the CPU and the load before/after from the report, so that the README's table
is rebuilt from measured runs rather than typed in.
"""

from __future__ import annotations

import argparse
import shlex

from custom_modules.audio.files import read_json


def _machine(report: dict) -> str:
    before, after = report["machine_before"], report["machine_after"]
    load = "/".join(str(v) for v in before["load_average"][:1] + after["load_average"][:1])
    return f"{before['cpu_model']}, {report['threads'] or 'default'} thread(s), load {load} (before/after)"


def _command(report: dict) -> str:
    return "`" + " ".join(shlex.quote(part) for part in report["command"]) + "`"


def mixing_rows(report: dict) -> list:
    """Rows of a ``benchmarks.mixing`` report."""
    results = report["results"]
    paths, ratios = results["paths"], results["ratios"]
    sb = paths["speechbrain AddReverb+AddNoise"]["per_s_cpu"]
    figure = (
        f"like-for-like **{paths['sb-enhance like-for-like']['per_s_cpu']:.0f}/s**, full PoCoNet "
        f"mixture **{paths['sb-enhance full']['per_s_cpu']:.0f}/s**, SpeechBrain AddReverb+AddNoise "
        f"{sb:.0f}/s per CPU second: **{ratios['like_for_like']['cpu']:.2f}x** like-for-like (goal "
        f">= {ratios['like_for_like']['goal']}: {'met' if ratios['like_for_like']['met'] else 'NOT met'}), "
        f"**{ratios['full']['cpu']:.2f}x** full (goal >= {ratios['full']['goal']}: "
        f"{'met' if ratios['full']['met'] else 'NOT met'}); {100 * results['clipped_fraction']:.0f} % "
        f"of the full mixtures rescaled to avoid clipping; {_machine(report)}"
    )
    what = f"on-the-fly mixer, {results['crop_sec']:g}-s mixtures ({results['audio']}), 1 thread"
    return [f"| {what} | {figure} | {_command(report)} |"]


def streaming_rows(report: dict) -> list:
    """Rows of a ``benchmarks.streaming`` report: one per configuration, one for the ratios."""
    results, rows = report["results"], []
    for config, paths in results["configs"].items():
        cells = ", ".join(
            f"{name} {paths[name]['rtf_cpu']:.4f}"
            for name in ("native", "onnx", "eager", "offline")
        )
        rows.append(
            f"| streaming UNet-TCM `{config}`, 10-ms chunks, RTF by CPU time | {cells} "
            f"(native median {paths['native']['median_ms']:.3f} ms per chunk); {_machine(report)} "
            f"| {_command(report)} |"
        )
    peers = results["peers"]
    if peers:
        cells = "; ".join(
            f"{name} {row['rtf_cpu']:.4f} (16<->48 kHz resampling apart: {row['resample_rtf_cpu']:.4f})"
            for name, row in peers.items()
        )
        rows.append(
            f"| peers in the same run, 48 kHz, 10-ms frames, RTF by CPU time | {cells}; "
            f"{_machine(report)} | {_command(report)} |"
        )
    if results["ratios"]:
        cells = "; ".join(
            f"{name} **{ratio['cpu']:.2f}x** (goal {ratio['goal']}: "
            f"{'met' if ratio['met'] else 'NOT met'})"
            for name, ratio in results["ratios"].items()
        )
        rows.append(f"| streaming ratios (CPU time) | {cells} | {_command(report)} |")
    steps = {c: paths["step"] for c, paths in results["configs"].items() if "step" in paths}
    if steps:
        cells = "; ".join(
            f"`{config}`: onnx step {s['onnx_step_us']:.0f} us ({s['onnx_nodes']} nodes, "
            f"one-node run {s['onnxruntime_run_floor_us']:.1f} us, each further node >= "
            f"{s['onnxruntime_node_us']:.2f} us), native step "
            f"{s['native_step_us']:.0f} us, host side {s['host_us']:.0f} us per chunk; "
            f"1.5x needs an onnx step <= {s['onnx_budget_us']:.0f} us"
            for config, s in steps.items()
        )
        rows.append(
            f"| where a chunk's CPU time goes (same run) | {cells}; {_machine(report)} "
            f"| {_command(report)} |"
        )
    return rows


ROWS = {"mixing": mixing_rows, "streaming": streaming_rows}


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="JSON files written with --output_json")
    args = parser.parse_args(argv)
    rows = []
    for path in args.reports:
        report = read_json(path)
        name = report.get("benchmark")
        if name not in ROWS:
            raise SystemExit(f"{path}: a report of {name!r}; rows are made for {sorted(ROWS)}")
        rows += ROWS[name](report)
    print("\n".join(rows))
    return rows


if __name__ == "__main__":
    main()
