"""Throughput of the on-the-fly mixer vs SpeechBrain's AddReverb + AddNoise, single thread.

Usage::

    python -m benchmarks.mixing [--audio_dir DIR] [--seconds 20] [--crop_sec 5]

Audio: ``--audio_dir`` (with ``speech/``, ``noise/``, ``rir/`` folders), else
env ``REAL_AUDIO_DIR``, else ``../shared/audio`` from the repository root,
else synthetic files generated into a temporary folder.

Both paths produce one ``crop_sec`` mixture at a time (batch of 1), with
``torch.set_num_threads(1)`` and single-threaded FFTs, on the same files:

* ``sb-enhance``: ``RandomMixtureSampler`` with its default parameters
  (speech and noise each reverberated with probability 0.5, "decay" target,
  so up to three convolutions per example, plus levels, gains, clipping
  policy and metadata).
* ``speechbrain``: the same speech crop (same ``SignalSampler``), then with
  probability 0.5 ``speechbrain.augment.time_domain.AddReverb``, then
  ``AddNoise`` at an SNR in [-5, 5] dB (its noise loader reads whole noise
  files and crops them). It does less work: no reverberant noise, no target.

Rates are given per wall-clock second and per CPU second of this process
(the latter is the fairer figure on a shared machine).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from custom_modules.data.mixing import RandomMixtureSampler
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


def timed_loop(step, seconds: float):
    """Run ``step`` until ``seconds`` of wall time; (count, wall, cpu)."""
    count, wall_start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall_start < seconds:
        step()
        count += 1
    return count, time.perf_counter() - wall_start, time.process_time() - cpu_start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio_dir", default=None)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per path")
    parser.add_argument("--crop_sec", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
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
        print(f"crop {args.crop_sec} s, batch 1, 1 thread, {args.seconds} s per path\n")

        mixer = RandomMixtureSampler(
            SignalSampler(speech, crop_size_sec=args.crop_sec),
            SignalSampler(noises, crop_size_sec=args.crop_sec),
            RirSampler(rirs),
            rng=args.seed,
        )
        for _ in range(10):  # warm-up: RIR cache, RT60 estimates
            mixer.sampler()
        mixer.num_generated = mixer.num_clipped = 0
        ours = timed_loop(mixer.sampler, args.seconds)

        from speechbrain.augment.time_domain import AddNoise, AddReverb

        add_reverb = AddReverb(csv_file=str(write_sb_csv(tmp / "rirs.csv", rirs)))
        add_noise = AddNoise(
            csv_file=str(write_sb_csv(tmp / "noise.csv", noises)), snr_low=-5, snr_high=5
        )
        speech_sampler = SignalSampler(speech, crop_size_sec=args.crop_sec, rng=args.seed)
        coin = np.random.default_rng(args.seed)
        lengths = torch.ones(1)

        def speechbrain_step():
            clean = torch.from_numpy(speech_sampler.sampler()).unsqueeze(0)
            with torch.no_grad():
                if coin.random() < 0.5:
                    clean = add_reverb(clean)
                return add_noise(clean, lengths)

        for _ in range(5):
            speechbrain_step()
        theirs = timed_loop(speechbrain_step, args.seconds)

    rows = [("sb-enhance RandomMixtureSampler", ours), ("speechbrain AddReverb+AddNoise", theirs)]
    print(
        f"{'path':34s} {'mixtures':>8s} {'wall s':>7s} {'CPU s':>7s} {'mix/s wall':>10s} "
        f"{'mix/s CPU':>10s}"
    )
    for name, (count, wall, cpu) in rows:
        print(
            f"{name:34s} {count:8d} {wall:7.2f} {cpu:7.2f} {count / wall:10.1f} {count / cpu:10.1f}"
        )
    ratio_wall = (ours[0] / ours[1]) / (theirs[0] / theirs[1])
    ratio_cpu = (ours[0] / ours[2]) / (theirs[0] / theirs[2])
    print(f"\nratio sb-enhance / speechbrain: {ratio_wall:.2f}x (wall), {ratio_cpu:.2f}x (CPU)")
    print(f"clipped mixtures (sb-enhance): {mixer.num_clipped}/{mixer.num_generated}")
    goal = ours[0] / ours[2] >= 200 and ratio_cpu > 1
    print(
        f"goal (>= 200 mixtures/s per core and faster than SpeechBrain): {'met' if goal else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
