"""Streamed vs offline output of the UNet-TCM, per backend, on real speech plus real noise.

Usage::

    REAL_AUDIO_DIR=../shared/audio python -m benchmarks.streaming_equivalence [--run FOLDER ...] \\
        [--output_json results/bench/equivalence.json]

Prints max |streamed - offline| (aligned by the 159-sample latency) on 10.5 s
of real speech + real noise (``REAL_AUDIO_DIR``, as in
``custom_modules/streaming/equivalence.py``) for the recipe configurations ``unet.yaml`` and
``unet_cpu.yaml`` with their seeded random initialisation, and for the best
checkpoint of each ``--run`` (a ``recipes/unet_tcm`` output folder), for the
eager, onnx and native backends. The requirement is <= 1e-4. The machine
(CPU, threads, load) is printed before and after and written with the
figures to ``--output_json``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks.machine import BenchmarkRun, add_output_json
from custom_modules.inference.run_loading import load_run
from custom_modules.streaming import StreamingEnhancer
from custom_modules.streaming.engine import BACKENDS
from custom_modules.streaming.equivalence import (
    noisy_speech,
    offline,
    recipe_model,
    stream_chunks,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

FULL_YAML = REPO_ROOT / "recipes" / "unet_tcm" / "hparams" / "unet.yaml"
CPU_YAML = REPO_ROOT / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", nargs="*", default=[], help="recipe output folders")
    parser.add_argument("--seconds", type=float, default=10.5)
    add_output_json(parser)
    args = parser.parse_args(argv)
    audio_dir = os.environ.get("REAL_AUDIO_DIR")
    if not audio_dir or not Path(audio_dir).is_dir():
        parser.error("set REAL_AUDIO_DIR to the shared recordings (../shared/audio)")
    run = BenchmarkRun("streaming_equivalence", args, threads=1)
    signal = noisy_speech(Path(audio_dir), seconds=args.seconds)
    models = {"unet.yaml, random": recipe_model(FULL_YAML)}
    models["unet_cpu.yaml, random"] = recipe_model(CPU_YAML)
    for run in args.run:
        models[f"{run}, best checkpoint"] = load_run(run).model
    print(f"{args.seconds:g} s of real speech + noise from {audio_dir}; max |streamed - offline|")
    print(f"| model | {' | '.join(BACKENDS)} | max \\|offline\\| |")
    print(f"| --- |{' --- |' * (len(BACKENDS) + 1)}")
    results = {}
    for name, model in models.items():
        expected = offline(model, signal)
        diffs = {}
        for backend in BACKENDS:
            enhancer = StreamingEnhancer.from_model(model, backend=backend)
            delay = enhancer.latency_samples
            streamed = stream_chunks(enhancer, signal)[delay : delay + signal.size]
            diffs[backend] = float(np.abs(streamed - expected).max())
        results[name] = diffs
        cells = " | ".join(f"{diffs[b]:.1e}" for b in BACKENDS)
        print(f"| {name} | {cells} | {np.abs(expected).max():.2f} |")
    run.finish(results)
    return results


if __name__ == "__main__":
    main()
