"""Offline demo corpus: ``python -m data_prepare.demo --out data/demo``.

Generates, from one seed and without network, a small corpus laid out exactly
like the real ones, so that recipes run unchanged with ``--data_folder data/demo``
(the ``data_prepare`` functions see the same trees as for real data):

* **Speech** (espeak-ng, resampled 22.05 -> 16 kHz): each speaker is a distinct
  espeak-ng voice (English accent x voice variant x pitch x rate) with numeric
  ids from 9001, reading varied sentences (~2-6 s) spread over several chapters.

  - ``LibriSpeech/train-clean-100/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac`` with
    ``<spk>-<chapter>.trans.txt`` (UPPERCASE, LibriSpeech style) for the train
    voices; ``dev-clean`` and ``test-clean`` hold other, disjoint voices.
    ``LibriSpeech/SPEAKERS.TXT`` gives each voice's definition.
  - ``clean_train/read_speech/book_<b:05d>_chp_<c:04d>_reader_<spk:05d>_<utt>_seg_1.wav``:
    the same recordings (train, dev and test voices alike), because the DNS
    recipe splits ``clean_train`` itself by reader id.

* **Noise** under MUSAN's layout ``musan/noise/{free-sound,sound-bible}/noise-<source>-<NNNN>.wav``
  (16 kHz): white, pink, brown, mains hum with harmonics, babble (3-6 voices that
  are never speakers), impulsive clatter and slowly modulated traffic-like noise,
  at varied levels. Each source folder's ``ANNOTATIONS`` names the kind of each file.

* **RIRs**: pyroomacoustics shoebox rooms, random geometry, RT60 drawn in 0.2-0.8 s
  with the absorption calibrated so the measured RT60 (T30) matches the target:
  ``impulse_responses_all/SLR26/simulated_rirs_48k/smallroom/RoomNNN/RoomNNN-NNNNN.wav``
  at 48 kHz like the real SLR26 (so the resampling path of data preparation is
  exercised), with ``rir_info.json`` (target and measured RT60, geometry) and a
  Kaldi-style ``rir_list`` beside them; plus a few two-microphone 16 kHz RIRs in
  ``impulse_responses_all/SLR28/RIRS_NOISES/real_rirs_isotropic_noises/`` (simulated
  stand-ins for the real ones; they exercise the channel-0 policy).

The tree is byte-identical for a given seed and size (any number of workers).
A completion marker ``.demo_complete.json`` holding the options is written last;
a rerun with the same options returns at once, a partial tree (no marker) or one
made with other options is regenerated (only the demo's own folders are removed;
a non-empty folder that is not a demo corpus is refused). ``demo_info.json``
describes the speakers, noise clips and RIRs.

Example
-------
>>> import tempfile
>>> out = generate_demo_corpus(tempfile.mkdtemp(), size="tiny", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

from tqdm import tqdm

from custom_modules.audio.files import atomic_write_json, read_json
from data_prepare.demo.layout import build_plan, write_sidecars
from data_prepare.demo.speech import espeak_version, find_espeak
from data_prepare.demo.tasks import run_task

FORMAT_VERSION = 1
MARKER = ".demo_complete.json"
IN_PROGRESS = ".demo_in_progress.json"
# Everything the generator creates at the top of --out (removed before a regeneration).
OWNED_ENTRIES = (
    "clean_train",
    "LibriSpeech",
    "musan",
    "impulse_responses_all",
    "demo_info.json",
    MARKER,
    IN_PROGRESS,
)


@dataclass(frozen=True)
class DemoSize:
    """Size of the demo corpus (see ``SIZES`` for the presets).

    Attributes
    ----------
    train_speakers, dev_speakers, test_speakers : int
        Voices in LibriSpeech train-clean-100, dev-clean and test-clean.
    utts_per_speaker : int
        Utterances per voice, spread over ``chapters_per_speaker`` chapters.
    babble_voices : int
        Extra voices used only inside babble noise (at least 3).
    noise_clips : int
        Clips per noise kind (7 kinds).
    noise_seconds : tuple of float
        Range of the clip durations.
    rirs, rirs_per_room : int
        SLR26-style RIRs in total, and per simulated room (source positions).
    real_rirs : int
        Two-microphone RIRs in the SLR28 ``real_rirs_isotropic_noises`` folder.
    """

    train_speakers: int
    dev_speakers: int
    test_speakers: int
    utts_per_speaker: int
    chapters_per_speaker: int
    babble_voices: int
    noise_clips: int
    noise_seconds: tuple
    rirs: int
    rirs_per_room: int
    real_rirs: int

    def validate(self):
        """Raise ``ValueError`` naming the first impossible value."""
        for name in ("train_speakers", "utts_per_speaker", "noise_clips", "rirs"):
            if getattr(self, name) < 1:
                raise ValueError(f"demo corpus: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("dev_speakers", "test_speakers", "real_rirs"):
            if getattr(self, name) < 0:
                raise ValueError(f"demo corpus: {name} must be >= 0, got {getattr(self, name)}")
        if self.babble_voices < 3:
            raise ValueError("demo corpus: babble needs at least 3 babble_voices")
        # Chapter ids are <speaker id> * 100 + <chapter index>.
        if not 1 <= self.chapters_per_speaker <= min(self.utts_per_speaker, 100):
            raise ValueError(
                "demo corpus: chapters_per_speaker must be between 1 and min(utts_per_speaker, 100)"
            )
        low, high = self.noise_seconds
        if not 0 < low <= high:
            raise ValueError(f"demo corpus: bad noise_seconds range {self.noise_seconds}")
        return self


SIZES = MappingProxyType(
    {
        # For tests: a few seconds.
        "tiny": DemoSize(
            train_speakers=4,
            dev_speakers=2,
            test_speakers=2,
            utts_per_speaker=2,
            chapters_per_speaker=2,
            babble_voices=3,
            noise_clips=1,
            noise_seconds=(3.0, 4.0),
            rirs=2,
            rirs_per_room=1,
            real_rirs=1,
        ),
        "small": DemoSize(
            train_speakers=12,
            dev_speakers=2,
            test_speakers=2,
            utts_per_speaker=10,
            chapters_per_speaker=2,
            babble_voices=4,
            noise_clips=2,
            noise_seconds=(8.0, 12.0),
            rirs=12,
            rirs_per_room=3,
            real_rirs=2,
        ),
        # The budget: ~2 minutes on 2 cores, < 300 MB.
        "default": DemoSize(
            train_speakers=20,
            dev_speakers=5,
            test_speakers=5,
            utts_per_speaker=36,
            chapters_per_speaker=3,
            babble_voices=8,
            noise_clips=5,
            noise_seconds=(10.0, 30.0),
            rirs=90,
            rirs_per_room=3,
            real_rirs=4,
        ),
        "large": DemoSize(
            train_speakers=60,
            dev_speakers=10,
            test_speakers=10,
            utts_per_speaker=60,
            chapters_per_speaker=4,
            babble_voices=12,
            noise_clips=10,
            noise_seconds=(10.0, 30.0),
            rirs=200,
            rirs_per_room=4,
            real_rirs=8,
        ),
    }
)


def resolve_size(size: str = "default", **overrides) -> DemoSize:
    """A preset with some fields overridden (``None`` overrides are ignored).

    Example
    -------
    >>> resolve_size("tiny", rirs=3).rirs
    3
    """
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; expected one of {sorted(SIZES)}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    unknown = set(changes) - set(DemoSize.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown demo size field(s): {sorted(unknown)}")
    if "noise_seconds" in changes:
        changes["noise_seconds"] = tuple(changes["noise_seconds"])
    return replace(SIZES[size], **changes).validate()


def tree_size_bytes(root) -> int:
    """Disk usage of the files under ``root`` (like ``du``: allocated blocks)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
    return total


def _is_complete(out: Path, options: dict) -> bool:
    """True when ``out`` holds a finished demo corpus made with ``options``."""
    marker = out / MARKER
    if not marker.is_file():
        return False
    try:
        return read_json(marker).get("options") == options
    except ValueError:
        return False  # an unreadable marker is ours but stale: regenerate


def _clear_output(out: Path) -> None:
    """Remove a partial or outdated demo corpus (only the demo's own entries)."""
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not ((out / MARKER).exists() or (out / IN_PROGRESS).exists()):
        raise FileExistsError(
            f"{out} is not empty and is not a demo corpus (no {MARKER} or {IN_PROGRESS}); "
            "choose an empty or new --out folder"
        )
    for name in OWNED_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _run_tasks(tasks, num_workers: int, progress: bool) -> dict:
    """Run tasks (in a process pool when ``num_workers > 1``); id -> facts."""
    results = {}
    bar = tqdm(total=len(tasks), desc="demo corpus", unit="task", disable=not progress)
    try:
        if num_workers <= 1:
            for task in tasks:
                task_id, facts = run_task(task)
                results[task_id] = facts
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=num_workers) as pool:
                futures = [pool.submit(run_task, task) for task in tasks]
                try:
                    for future in as_completed(futures):
                        task_id, facts = future.result()
                        results[task_id] = facts
                        bar.update()
                except BaseException:
                    for future in futures:  # fail fast instead of finishing every task
                        future.cancel()
                    raise
    finally:
        bar.close()
    return results


def generate_demo_corpus(
    out,
    seed: int = 0,
    size: str = "default",
    *,
    train_speakers=None,
    dev_speakers=None,
    test_speakers=None,
    utts_per_speaker=None,
    noise_clips=None,
    rirs=None,
    num_workers=None,
    progress: bool = True,
    espeak_binary: str = "espeak-ng",
) -> Path:
    """Generate the demo corpus into ``out`` (skipped when already complete).

    Arguments
    ---------
    out : str or Path
        Output root (the ``--data_folder`` of the recipes).
    seed : int
        One seed for everything (voices, text, noise, rooms).
    size : str
        Preset: ``"tiny"`` (tests, seconds), ``"small"``, ``"default"`` (~2 min on
        2 cores, < 300 MB) or ``"large"``.
    train_speakers, dev_speakers, test_speakers, utts_per_speaker, noise_clips, rirs : int, optional
        Override the preset's values.
    num_workers : int, optional
        Worker processes (default: CPU count); does not change the output.
    progress : bool
        Show a progress bar and print the summary.
    espeak_binary : str
        Name or path of espeak-ng.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    EspeakNotFoundError
        espeak-ng is missing (the message gives the install command).
    FileExistsError
        ``out`` is a non-empty folder that is not a demo corpus.
    """
    started = time.perf_counter()
    out = Path(out)
    demo_size = resolve_size(
        size,
        train_speakers=train_speakers,
        dev_speakers=dev_speakers,
        test_speakers=test_speakers,
        utts_per_speaker=utts_per_speaker,
        noise_clips=noise_clips,
        rirs=rirs,
    )
    options = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "size": size,
        **{key: list(v) if isinstance(v, tuple) else v for key, v in asdict(demo_size).items()},
    }
    if _is_complete(out, options):
        if progress:
            print(f"demo corpus: {out} is complete with the same options, skipping")
        return out
    espeak = find_espeak(espeak_binary)
    _clear_output(out)
    # The espeak-ng version is recorded (outputs are byte-identical only for one version)
    # but not compared: a finished corpus stays usable on a machine without espeak-ng.
    versions = {"espeak_ng": espeak_version(espeak)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / IN_PROGRESS, {"options": options})
    plan = build_plan(out, seed, demo_size, espeak)
    num_workers = num_workers or os.cpu_count() or 1
    results = _run_tasks(plan["tasks"], num_workers, progress)
    write_sidecars(out, plan, results, {**options, **versions})
    atomic_write_json(out / MARKER, {"options": options, "versions": versions})
    (out / IN_PROGRESS).unlink()
    if progress:
        elapsed = time.perf_counter() - started
        print(
            f"demo corpus: wrote {len(plan['tasks'])} tasks to {out} in {elapsed:.1f} s; "
            f"tree size {tree_size_bytes(out) / 2**20:.1f} MiB"
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prepare.demo",
        description="Generate the offline demo corpus (DNS-style root + LibriSpeech + MUSAN "
        "noise + SLR26/SLR28 RIRs) from a seed. Needs espeak-ng.",
    )
    parser.add_argument("--out", required=True, help="output folder, e.g. data/demo")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="size preset")
    parser.add_argument("--speakers", type=int, help="train voices (default: preset)")
    parser.add_argument("--dev_speakers", type=int, help="dev-clean voices (default: preset)")
    parser.add_argument("--test_speakers", type=int, help="test-clean voices (default: preset)")
    parser.add_argument("--utts_per_speaker", type=int, help="utterances per voice")
    parser.add_argument("--noise_clips", type=int, help="clips per noise kind (7 kinds)")
    parser.add_argument("--rirs", type=int, help="SLR26-style simulated RIRs")
    parser.add_argument("--num_workers", type=int, help="worker processes (default: CPU count)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    try:
        generate_demo_corpus(
            args.out,
            seed=args.seed,
            size=args.size,
            train_speakers=args.speakers,
            dev_speakers=args.dev_speakers,
            test_speakers=args.test_speakers,
            utts_per_speaker=args.utts_per_speaker,
            noise_clips=args.noise_clips,
            rirs=args.rirs,
            num_workers=args.num_workers,
            progress=not args.quiet,
        )
    except (RuntimeError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
