"""Throughput of the on-the-fly mixer vs SpeechBrain's AddReverb + AddNoise, single thread.

Usage::

    python -m benchmarks.mixing [--audio_dir DIR] [--seconds 20] [--crop_sec 5] \\
        [--output_json results/bench/mixing.json] [--profile]

Audio: ``--audio_dir`` (with ``speech/``, ``noise/``, ``rir/`` folders), else
env ``REAL_AUDIO_DIR``, else ``../shared/audio`` from the repository root,
else synthetic files generated into a temporary folder.

Every path produces one ``crop_sec`` mixture at a time (batch of 1), with
``torch.set_num_threads(1)`` and single-threaded FFTs, on the same files:

* ``sb-enhance full``: ``RandomMixtureSampler`` with its default parameters
  (speech and noise each reverberated with probability 0.5, "decay" target,
  so up to three convolutions per example, plus levels, gains, clipping
  policy and metadata): the PoCoNet-style mixture the recipes train on.
* ``sb-enhance like-for-like``: the same sampler doing SpeechBrain's work:
  speech reverberated with probability 0.5, noise never
  (``prob_rir_noise=0``), the reverberant speech as the target (no target
  convolution), noise at an SNR in [-5, 5] dB.
* ``speechbrain``: the same speech crops (same ``SignalSampler``), then with
  probability 0.5 ``speechbrain.augment.time_domain.AddReverb``, then
  ``AddNoise`` at an SNR in [-5, 5] dB (its noise loader reads whole noise
  files and crops them).

The paths take turns in ``--rounds`` rounds (so that a change of load on a
shared machine hits them alike); rates are per CPU second of this process
(``time.process_time``, the figure the goals are stated in) and per wall
second. Printed and written to ``--output_json``: both ratios to SpeechBrain
(goals: >= 1.5x like-for-like, >= 1.0x full), the clipped (rescaled)
fraction of the full mixtures and what it would be with a lower upper bound
of the mixture gain, and the machine (CPU, threads, load before and after).
``--profile`` adds a cProfile of the full mixer (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.machine import BenchmarkRun, add_output_json
from custom_modules.data.mixing import CLIP_HEADROOM, RandomMixtureSampler
from custom_modules.data.sampling import RirSampler, SignalSampler

REPO_ROOT = Path(__file__).resolve().parents[1]

SR = 16000


def find_audio_dir(requested):
    """The folder to benchmark on, or None when synthetic files are needed."""
    candidates = [requested, os.environ.get("REAL_AUDIO_DIR"), REPO_ROOT.parent / "shared/audio"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "speech").is_dir():
            return Path(candidate)
    if requested:
        raise SystemExit(f"--audio_dir {requested}: no speech/ folder there")
    return None


def generate_audio(folder: Path, rng: np.random.Generator) -> Path:
    """Synthetic speech-like, noise and RIR files (when no real audio is available)."""
    for kind in ("speech", "noise", "rir"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for i in range(20):
        seconds = rng.uniform(2.0, 12.0)
        t = np.arange(int(seconds * SR)) / SR
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None)  # syllables
        carrier = np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.3 * rng.normal(size=t.size)
        sf.write(str(folder / "speech" / f"s{i}.wav"), 0.1 * envelope * carrier, SR)
    for i in range(5):
        sf.write(str(folder / "noise" / f"n{i}.wav"), 0.05 * rng.normal(size=30 * SR), SR)
    for i in range(5):
        length = int(rng.uniform(0.3, 1.5) * SR)
        rt60 = rng.uniform(0.2, 0.8)
        decay = 10 ** (-3 * np.arange(length) / SR / rt60)
        rir = rng.normal(size=length) * decay
        rir[0] = 5.0
        sf.write(str(folder / "rir" / f"r{i}.wav"), rir / np.max(np.abs(rir)), SR)
    return folder


def write_sb_csv(path: Path, files) -> Path:
    """SpeechBrain CSV (ID, duration, wav, wav_format, wav_opts)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
        for i, file in enumerate(files):
            writer.writerow([f"f{i}", sf.info(str(file)).duration, str(file), "wav", ""])
    return path


GOAL_LIKE_FOR_LIKE = 1.5
GOAL_FULL = 1.0


def timed_loop(step, seconds: float):
    """Run ``step`` until ``seconds`` of wall time; (count, wall, cpu)."""
    count, wall_start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall_start < seconds:
        step()
        count += 1
    return count, time.perf_counter() - wall_start, time.process_time() - cpu_start


def build_mixer(speech, noises, rirs, crop_sec: float, seed: int, like_for_like: bool):
    """The full PoCoNet-style mixer, or the one doing SpeechBrain's work (module docstring)."""
    options = {"prob_rir_noise": 0.0, "reverb_target": "reverberant"} if like_for_like else {}
    return RandomMixtureSampler(
        SignalSampler(speech, crop_size_sec=crop_sec),
        SignalSampler(noises, crop_size_sec=crop_sec),
        RirSampler(rirs),
        rng=seed,
        **options,
    )


def speechbrain_path(speech, noises, rirs, crop_sec: float, seed: int, tmp: Path):
    """One step of SpeechBrain's AddReverb (probability 0.5) + AddNoise on our speech crops."""
    from speechbrain.augment.time_domain import AddNoise, AddReverb

    add_reverb = AddReverb(csv_file=str(write_sb_csv(tmp / "rirs.csv", rirs)))
    add_noise = AddNoise(
        csv_file=str(write_sb_csv(tmp / "noise.csv", noises)), snr_low=-5, snr_high=5
    )
    speech_sampler = SignalSampler(speech, crop_size_sec=crop_sec, rng=seed)
    coin = np.random.default_rng(seed)
    lengths = torch.ones(1)

    def step():
        clean = torch.from_numpy(speech_sampler.sampler()).unsqueeze(0)
        with torch.no_grad():
            if coin.random() < 0.5:
                clean = add_reverb(clean)
            return add_noise(clean, lengths)

    return step


def rescaled_fraction_by_upper_gain(mixer, uppers=(5.0, 0.0, -5.0, -10.0), count=300) -> dict:
    """Expected share of rescaled (would-clip) mixtures if the mixture gain's upper bound were each of ``uppers``.

    From ``count`` mixtures of ``mixer``: each one's peak before the clipping
    policy, referred to a 0 dB mixture gain (``p`` dBFS), clips for gains above
    ``-p``; with the gain uniform in ``[low, upper]`` that is a known share of
    the range. The mean share over the mixtures is returned per upper bound.
    """
    low = mixer.mixture_gain_range_db[0]
    peaks_db = []
    for _ in range(count):
        mixture, _, meta = mixer.sampler(return_metadata=True)
        peak = float(np.max(np.abs(mixture))) / meta["clip_scale"]
        peaks_db.append(20 * np.log10(peak) - meta["mixture_gain_db"])
    peaks_db = np.array(peaks_db)
    shares = {}
    for upper in uppers:
        clipping = np.clip(upper - np.maximum(low, -peaks_db), 0.0, None) / (upper - low)
        shares[f"{upper:g}"] = float(np.mean(clipping))
    return shares


def profile_mixer(mixer, count: int = 300) -> str:
    """cProfile of ``count`` full mixtures: the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        mixer.sampler()
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(12)
    return stream.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio_dir", default=None)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per path")
    parser.add_argument("--rounds", type=int, default=4, help="turns the paths take")
    parser.add_argument("--crop_sec", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="cProfile the full mixer")
    add_output_json(parser)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be > 0 and --rounds >= 1")

    run = BenchmarkRun("mixing", args, threads=1)
    # SpeechBrain's augmenters draw from torch's global generator; seed it here
    # (a benchmark script, not library code) so runs are comparable.
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        audio_dir = find_audio_dir(args.audio_dir)
        source = str(audio_dir)
        if audio_dir is None:
            audio_dir = generate_audio(tmp / "audio", np.random.default_rng(args.seed))
            source = "synthetic files (no real audio found)"
        speech = sorted((audio_dir / "speech").glob("*.wav"))
        noises = sorted((audio_dir / "noise").glob("*.wav"))
        rirs = sorted((audio_dir / "rir").glob("*.wav"))
        print(f"audio: {source} ({len(speech)} speech, {len(noises)} noise, {len(rirs)} RIR files)")
        print(
            f"crop {args.crop_sec} s, batch 1, 1 thread, {args.seconds} s per path "
            f"in {args.rounds} rounds\n"
        )
        full = build_mixer(speech, noises, rirs, args.crop_sec, args.seed, like_for_like=False)
        like = build_mixer(speech, noises, rirs, args.crop_sec, args.seed, like_for_like=True)
        paths = {
            "sb-enhance full": full.sampler,
            "sb-enhance like-for-like": like.sampler,
            "speechbrain AddReverb+AddNoise": speechbrain_path(
                speech, noises, rirs, args.crop_sec, args.seed, tmp
            ),
        }
        for step in paths.values():  # warm-up: RIR caches, RT60 estimates, first calls
            for _ in range(10):
                step()
        full.num_generated = full.num_clipped = 0
        totals = {name: [0, 0.0, 0.0] for name in paths}
        for _ in range(args.rounds):
            for name, step in paths.items():
                measured = timed_loop(step, args.seconds / args.rounds)
                totals[name] = [a + b for a, b in zip(totals[name], measured, strict=True)]
        profile = profile_mixer(full) if args.profile else None
        clipped_by_upper = rescaled_fraction_by_upper_gain(
            build_mixer(speech, noises, rirs, args.crop_sec, args.seed + 1, like_for_like=False)
        )

    rows = {}
    print(
        f"{'path':32s} {'mixtures':>8s} {'wall s':>7s} {'CPU s':>7s} {'mix/s wall':>10s} "
        f"{'mix/s CPU':>10s}"
    )
    for name, (count, wall, cpu) in totals.items():
        rows[name] = {
            "mixtures": count,
            "wall_s": wall,
            "cpu_s": cpu,
            "per_s_wall": count / wall,
            "per_s_cpu": count / cpu,
        }
        print(
            f"{name:32s} {count:8d} {wall:7.2f} {cpu:7.2f} {count / wall:10.1f} {count / cpu:10.1f}"
        )
    reference = rows["speechbrain AddReverb+AddNoise"]
    ratios = {}
    for mode, name, goal in (
        ("like_for_like", "sb-enhance like-for-like", GOAL_LIKE_FOR_LIKE),
        ("full", "sb-enhance full", GOAL_FULL),
    ):
        ratio_cpu = rows[name]["per_s_cpu"] / reference["per_s_cpu"]
        ratio_wall = rows[name]["per_s_wall"] / reference["per_s_wall"]
        ratios[mode] = {
            "cpu": ratio_cpu,
            "wall": ratio_wall,
            "goal": goal,
            "met": ratio_cpu >= goal,
        }
        print(
            f"ratio {name} / speechbrain: {ratio_cpu:.2f}x (CPU), {ratio_wall:.2f}x (wall); "
            f"goal >= {goal}x CPU: {'met' if ratio_cpu >= goal else 'NOT met'}"
        )
    clipped = full.num_clipped / max(full.num_generated, 1)
    print(
        f"clipped full mixtures (scaled to peak {CLIP_HEADROOM}): "
        f"{full.num_clipped}/{full.num_generated} = {100 * clipped:.1f} % "
        f"(mixture gain {list(full.mixture_gain_range_db)} dB)"
    )
    print(
        "  expected share rescaled with the mixture gain in [low, upper] dB: "
        + ", ".join(f"upper {k}: {100 * v:.1f} %" for k, v in clipped_by_upper.items())
    )
    if profile:
        print("\nwhere the full mixer's time goes (cProfile, 300 mixtures):\n" + profile)
    results = {
        "audio": source,
        "crop_sec": args.crop_sec,
        "paths": rows,
        "ratios": ratios,
        "clipped_fraction": clipped,
        "rescaled_fraction_by_upper_gain_db": clipped_by_upper,
        "mixer_full": full.describe(),
    }
    run.finish(results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
