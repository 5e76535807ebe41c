"""Throughput of manifest preparation (files per second) on a generated tree.

Builds a DNS-style root of short noise files in a temporary folder
(``clean_train/read_speech`` speech with reader ids, ``musan/noise`` noises,
``impulse_responses_all/SLR26`` RIRs; a fraction at 48 kHz so they are
resampled), then times ``prepare_folder`` (speech folder only) and
``prepare_dns`` (everything, RT60 included) with several worker counts, each
into a fresh save folder (fastest of ``--repeats`` runs, as the machine may
be shared). Files were just written, so they are in the page cache: the
figures measure CPU work (headers, full sample checks, resampling, RT60,
writing the resampled copies), not disk reads.

Usage (from the repository root)::

    python -m benchmarks.data_prepare --num_files 5000 [--output_json results/bench/prep.json]

CPU model, threads and load before and after are printed and written to
``--output_json`` with the figures.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.machine import BenchmarkRun, add_output_json
from data_prepare.dns import prepare_dns
from data_prepare.folder import prepare_folder


def build_tree(root: Path, num_files: int, seconds: float, frac_48k: float, seed: int) -> dict:
    """Write ``num_files`` files (80 % speech, 19 % noise, 1 % RIRs); return counts."""
    rng = np.random.default_rng(seed)
    num_rirs = max(2, num_files // 100)
    num_noise = max(1, num_files * 19 // 100)
    num_speech = num_files - num_rirs - num_noise
    for index in range(num_files):
        sr = 48000 if rng.random() < frac_48k else 16000
        if index < num_speech:
            rel = (
                f"clean_train/read_speech/book_{index:05d}_chp_0001_"
                f"reader_{index % 200:05d}_{index}_seg_0.wav"
            )
            data = 0.1 * rng.standard_normal(int(seconds * sr))
        elif index < num_speech + num_noise:
            rel = f"musan/noise/free-sound/noise-free-sound-{index:05d}.wav"
            data = 0.1 * rng.standard_normal(int(seconds * sr))
        else:
            room = index % 20
            rel = (
                "impulse_responses_all/SLR26/simulated_rirs_48k/smallroom/"
                f"Room{room:03d}/Room{room:03d}-{index:05d}.wav"
            )
            sr = 48000
            t = np.arange(int(0.4 * sr)) / sr
            data = rng.standard_normal(len(t)) * 10 ** (-3 * t / 0.3) * 0.5
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        # Encode in memory: soundfile fsyncs on close, which would dominate here.
        buffer = io.BytesIO()
        sf.write(buffer, data, sr, format="WAV", subtype="PCM_16")
        path.write_bytes(buffer.getvalue())
    return {"speech": num_speech, "noise": num_noise, "rir": num_rirs}


def time_call(function, **kwargs) -> float:
    start = time.perf_counter()
    function(**kwargs)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_files", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=0.5, help="duration of each file")
    parser.add_argument("--frac_48k", type=float, default=0.1, help="fraction of 48 kHz files")
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per setting; the fastest is reported"
    )
    add_output_json(parser)
    args = parser.parse_args(argv)
    run = BenchmarkRun("data_prepare", args)
    logging.basicConfig(level=logging.WARNING)
    workers = args.workers or sorted({1, 2, os.cpu_count() or 1})

    # One-time imports (seconds for scipy.signal) are not per-file work.
    import scipy.signal  # noqa: F401

    import custom_modules.audio.rir  # noqa: F401

    tmp = Path(tempfile.mkdtemp(prefix="sbe_prep_bench_"))
    try:
        start = time.perf_counter()
        counts = build_tree(tmp / "data", args.num_files, args.seconds, args.frac_48k, args.seed)
        print(f"built {args.num_files} files {counts} in {time.perf_counter() - start:.1f} s")
        rows = []
        for num_workers in workers:
            for name, function, kwargs, num in (
                (
                    "prepare_folder(speech)",
                    prepare_folder,
                    {"data_folder": tmp / "data" / "clean_train", "kind": "speech"},
                    counts["speech"],
                ),
                ("prepare_dns", prepare_dns, {"data_folder": tmp / "data"}, args.num_files),
            ):
                times = []
                for repeat in range(args.repeats):
                    save = tmp / f"save_{repeat}"
                    times.append(
                        time_call(function, save_folder=save, num_workers=num_workers, **kwargs)
                    )
                    shutil.rmtree(save)
                seconds = min(times)
                rows.append(
                    {
                        "function": name,
                        "num_workers": num_workers,
                        "files": num,
                        "seconds": round(seconds, 2),
                        "files_per_second": round(num / seconds, 1),
                    }
                )
                print(
                    f"{name:24s} workers={num_workers}: {num} files in {seconds:6.2f} s "
                    f"= {num / seconds:7.1f} files/s"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run.finish(rows)
    return rows


if __name__ == "__main__":
    main()
