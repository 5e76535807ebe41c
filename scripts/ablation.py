#!/usr/bin/env python3
"""Run recipe variants at an equal wall-clock budget and tabulate their results.

Usage::

    python -m scripts.ablation --train recipes/unet_tcm/train.py \\
        --hparams recipes/unet_tcm/hparams/unet_cpu.yaml --out results/ablation \\
        --budget_minutes 15 --parallel 2 --threads 1 \\
        --common "--data_folder ../shared/real_corpus --test_patterns [noise/*,rir/*]" \\
        --variant baseline= \\
        --variant compressed_loss="--loss_compress_exponent 0.3"

    # SpEx+: equal CPU time (fair under load), its own metrics and diagnostics
    python -m scripts.ablation --train recipes/spex_plus/train.py \\
        --hparams recipes/spex_plus/hparams/spex_plus_cpu.yaml --out results/tse_ablation \\
        --budget_minutes 10 --budget_clock cpu --key si_snr \\
        --metrics si_snr pesq si_snr_zero_ref --train_stats speaker_acc \\
        --variant baseline= --variant no_ce="--ce_weight 0"

Every variant is one training run of the recipe (``<out>/<name>``) with the
common overrides, then its own, then ``--max_train_minutes <budget>`` (and
``--budget_clock cpu`` when asked: the budget is then CPU time, equal compute
for every variant however busy the machine is). Runs go ``--parallel`` at a
time, each pinned to ``--threads`` threads (``OMP_NUM_THREADS``; with 2 runs of
1 thread on 2 cores each run has a core, so the budget is equal wall-clock
*and* equal CPU). A run that already has a test summary is not run again
(delete its folder to redo it).

The table (``<out>/ablation.md``, ``<out>/ablation.json``) gives per variant:
the validation metrics of its best checkpoint (by the recipe's
``checkpoint_key``: the figure to choose on), the test-set summary of that
checkpoint (deltas of ``--metrics``), training statistics of the last epoch
(``--train_stats``, from the train log), optimizer steps and epochs done, and
the exact command. The machine's CPU and load are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import yaml
from speechbrain.utils.run_opts import RunOptions

from benchmarks.machine import cpu_model, load_average
from custom_modules.audio.files import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

METRICS = ("si_snr", "stoi", "pesq")  # default --metrics (enhancement recipes)


def parse_variant(text: str):
    """``name=overrides`` -> (name, [overrides...])."""
    name, _, overrides = text.partition("=")
    if not name or any(c in name for c in "/ "):
        raise argparse.ArgumentTypeError(f"bad variant {text!r}: expected name=--key value ...")
    return name, shlex.split(overrides)


def merge_overrides(common, overrides):
    """``--key value ...`` of ``common`` with those of ``overrides`` replacing the same keys.

    >>> merge_overrides(["--lr", "1", "--seed", "2"], ["--lr", "3"])
    ['--seed', '2', '--lr', '3']
    """
    replaced = {token for token in overrides if token.startswith("--")}
    merged, skipping = [], False
    for token in common:
        if token.startswith("--"):
            skipping = token in replaced
        if not skipping:
            merged.append(token)
    return merged + list(overrides)


def run_variant(args, name, overrides):
    """Train one variant (unless done); return its command."""
    output = Path(args.out) / name
    command = [
        sys.executable, args.train, args.hparams,
        *merge_overrides(shlex.split(args.common), overrides),
        "--output_folder", str(output), "--max_train_minutes", str(args.budget_minutes),
        *(["--budget_clock", args.budget_clock] if args.budget_clock else []),
        "--noprogressbar",
    ]  # fmt: skip
    if not list(output.rglob("test_report*/summary.json")):
        output.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
        with open(output / "ablation_stdout.log", "w", encoding="utf-8") as log:
            start = time.monotonic()
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            (output / "ablation_wall_seconds.txt").write_text(f"{time.monotonic() - start:.1f}\n")
        if proc.returncode:
            print(f"{name}: failed (exit {proc.returncode}), see {output / 'ablation_stdout.log'}")
    return command


def last_train_stats(log_text: str, names) -> dict:
    """``names`` from the train part of the last ``epoch:`` line of a SpeechBrain train log.

    >>> line = "epoch: 3, lr: 1e-3 - train loss: -2.1, train speaker_acc: 9.3e-01 - valid loss: 1"
    >>> last_train_stats(line, ["speaker_acc", "missing"])
    {'speaker_acc': 0.93, 'missing': None}
    """
    epochs = [line for line in log_text.splitlines() if line.startswith("epoch:")]
    stats = {name: None for name in names}
    if epochs:
        for name in names:
            match = re.search(rf"train {re.escape(name)}: ([-+0-9.eE]+)", epochs[-1])
            stats[name] = float(match.group(1)) if match else None
    return stats


def collect(output: Path, key: str, metrics=METRICS, train_stats=()) -> dict:
    """Best-checkpoint validation metrics, test summary and progress of one run."""
    result = {"valid": None, "test": None, "train": None, "epochs": None, "steps": None}
    best = None
    for meta_path in output.glob("save/CKPT+*/CKPT.yaml"):
        meta = yaml.safe_load(meta_path.read_text())
        if key in meta and (best is None or meta[key] > best[key]):
            best = meta
    if best is not None:
        result["valid"] = {m: best.get(m) for m in metrics}
    summaries = sorted(output.rglob("test_report*/summary.json"))
    if summaries:
        summary = json.loads(summaries[0].read_text())
        # Recipes tested under several corruptions (DCUNet) nest their figures: the first one.
        if "per_corruption" in summary and f"{metrics[0]}_delta" not in summary:
            summary = next(iter(summary["per_corruption"].values()))
        result["test"] = {m: summary.get(f"{m}_delta") for m in metrics}
        result["test_mixture"] = {m: summary.get(f"{m}_mixture") for m in metrics}
    log = output / "train_log.txt"
    if log.is_file():
        text = log.read_text()
        result["epochs"] = sum(line.startswith("epoch:") for line in text.splitlines())
        result["train"] = last_train_stats(text, train_stats)
    brain = sorted(output.glob("save/CKPT+*/brain.ckpt"))
    if brain:
        state = yaml.safe_load(brain[-1].read_text())
        result["steps"] = state.get("optimizer_step") if isinstance(state, dict) else None
    return result


def table(results: dict, metrics=METRICS, train_stats=()) -> str:
    """Markdown table of the variants: valid and test (delta) ``metrics``, ``train_stats``."""
    digits = {"stoi": 3, "pesq": 3}
    header = (
        [f"valid {m}" for m in metrics]
        + [f"test Δ{m}" for m in metrics]
        + [f"train {name} (last epoch)" for name in train_stats]
        + ["epochs", "steps"]
    )
    lines = ["| variant | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]

    def fmt(value, digits, sign=""):
        return "–" if value is None else f"{value:{sign}.{digits}f}"

    for name, result in results.items():
        valid = result["valid"] or {}
        test = result["test"] or {}
        train = result.get("train") or {}
        cells = (
            [fmt(valid.get(m), digits.get(m, 2)) for m in metrics]
            + [fmt(test.get(m), digits.get(m, 2), "+") for m in metrics]
            + [fmt(train.get(n), 3) for n in train_stats]
            + [str(result["epochs"] or "–"), str(result["steps"] or "–")]
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="recipe train.py")
    parser.add_argument("--hparams", required=True, help="recipe YAML")
    parser.add_argument("--out", required=True, help="folder of the runs and the table")
    parser.add_argument("--budget_minutes", type=float, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--common", default="", help="overrides of every variant")
    parser.add_argument("--key", default="stoi", help="checkpoint key (max)")
    parser.add_argument(
        "--budget_clock", choices=("wall", "cpu"), default=None,
        help="clock of the budget (the YAML's budget_clock; cpu: equal compute under load)",
    )  # fmt: skip
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), help="test summary keys")
    parser.add_argument(
        "--train_stats", nargs="*", default=[], help="train-log fields of the last epoch"
    )
    parser.add_argument("--variant", action="append", type=parse_variant, required=True)
    args = parser.parse_args(argv)
    known = set(re.findall(r"^([A-Za-z_]\w*)\s*:", Path(args.hparams).read_text(), re.MULTILINE))
    known |= {f.name for f in fields(RunOptions)}
    for name, overrides in [("common", shlex.split(args.common)), *args.variant]:
        unknown = [o[2:] for o in overrides if o.startswith("--") and o[2:] not in known]
        if unknown:  # an override of a key the YAML does not have would change nothing
            parser.error(f"{name}: {unknown} are not top-level keys of {args.hparams}")
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must be unique: {names}")
    machine = {"cpu_model": cpu_model(), "load_before": load_average()}
    with ThreadPoolExecutor(args.parallel) as pool:
        commands = dict(
            zip(names, pool.map(lambda v: run_variant(args, *v), args.variant), strict=True)
        )
    machine["load_after"] = load_average()
    results = {
        name: collect(Path(args.out) / name, args.key, args.metrics, args.train_stats)
        for name in names
    }
    for name in names:
        results[name]["command"] = shlex.join(commands[name])
    text = table(results, args.metrics, args.train_stats)
    print(text)
    print(
        f"\nCPU: {machine['cpu_model']}; load before {machine['load_before']}, after {machine['load_after']}"
    )
    out = Path(args.out)
    atomic_write_text(out / "ablation.md", text + "\n")
    atomic_write_json(
        out / "ablation.json",
        {"machine": machine, "budget_minutes": args.budget_minutes,
         "budget_clock": args.budget_clock or "wall", "threads": args.threads,
         "parallel": args.parallel, "results": results},
    )  # fmt: skip


if __name__ == "__main__":
    main()
