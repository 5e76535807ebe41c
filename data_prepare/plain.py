"""Manifests of a plain corpus root, extra noise/RIR folders and generated training material.

The layout any corpus can be put in (``python -m data_prepare.download`` lays
out speechocean762, Mini LibriSpeech and RIRS_NOISES this way)::

    <data_folder>/speech/<speaker>/**/*.wav|flac   speaker = first folder under speech/
    <data_folder>/noise/**/*.wav|flac              (may be empty or absent, see below)
    <data_folder>/rir/**/*.wav|flac                (likewise)
    <data_folder>/MANIFEST.tsv                     optional; its "speaker" column (with
                                                   "file" = path relative to the root)
                                                   overrides the folder's speaker

``extra_noise_folders`` and ``extra_rir_folders`` add any folders of noise and
RIR files (searched recursively, used in place, manifest paths absolute).
:func:`prepare_plain_speech` writes the speech manifests alone (the same
speaker split; noise and RIRs not read), for the target-speaker-extraction and
separation recipes.

Splits
------
* Speech: by speaker (``valid_ratio``, ``test_ratio`` of the speakers), so no
  voice is on two sides. ``babble_speaker_ratio`` of the speakers are taken
  out of the speech manifests altogether: their utterances only make babble
  noise, so babble never contains a training target's voice.
* Noise and RIRs: by file, with their own ratios (``noise_valid_ratio``...),
  so the test set can be **noise-disjoint** (held-out noise recordings and
  rooms). ``test_patterns`` / ``valid_patterns`` (``fnmatch`` patterns on the
  path relative to the data root, ``extra_noise_0/...`` for extra folders, or
  the absolute path) hold out chosen files instead; the ratios then split the
  rest. A ratio of 0 leaves that split without noise (or RIRs): the recipes'
  mixers then draw valid/test noise from the training files and say so.
  Files of one room recorded twice (e.g. mono and binaural) are only kept
  apart by a pattern: the split cannot know they share a room.

Generated training material (training split only; written once into
``<save_folder>/generated/``, reused while its options are unchanged)
--------------------------------------------------------------------------
* ``num_babble_files`` files of ``babble_sec`` seconds, each the sum of
  ``babble_talkers`` (low, high) talkers drawn from the babble speakers,
  streams of their real utterances with pauses, levels within ±4 dB;
* ``num_synthetic_noise_files`` of the demo generator's synthetic kinds
  (white, pink, brown, hum, clatter, traffic), cycled;
* ``num_simulated_rirs`` shoebox rooms simulated with pyroomacoustics (image
  method, RT60 uniform in ``simulated_rt60_range``, calibrated to it).

Everything is then checked (and resampled/converted to mono when needed)
like every other corpus (:class:`data_prepare.common.PrepJob`): bad files are
listed in ``bad_files_plain.tsv``; ``prep_options_plain.json`` records the
options, so a second call with the same options is skipped.

Example
-------
``python -m data_prepare.plain --data_folder ../shared/real_corpus --save_folder results/prep
--extra_noise_folders ../shared/audio/noise --num_babble_files 40``
"""

from __future__ import annotations

import csv
import fnmatch
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from custom_modules.audio.files import atomic_write_json, read_json, write_audio
from custom_modules.audio.levels import eval_rms_db, gain_to_mult, limit_peak
from custom_modules.audio.seeding import derive_seed_sequences
from data_prepare.common import (
    AudioItem,
    PrepJob,
    build_parser,
    relative_posix,
    require_audio,
    require_folder,
    run_cli,
    scan_audio,
    split_by_group,
)

logger = logging.getLogger(__name__)

GENERATED = "generated"
# Level of generated noise files (the mixer rescales every crop anyway).
GENERATED_RMS_DB = -25.0
# Peak of the generated signals: louder ones are scaled down once (headroom for mixing).
GENERATED_PEAK = 0.99
# Bump when the generated audio changes for the same options.
GENERATION_VERSION = 1


def is_plain_root(data_folder) -> bool:
    """True when ``data_folder`` has the plain layout (a ``speech/`` folder)."""
    return (Path(data_folder) / "speech").is_dir()


def _manifest_speakers(data_root: Path) -> dict:
    """``{relative path: speaker}`` from an optional ``MANIFEST.tsv`` at the root."""
    path = data_root / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if not reader.fieldnames or not {"file", "speaker"} <= set(reader.fieldnames):
            return {}
        return {row["file"]: row["speaker"] for row in reader if row.get("speaker")}


def speech_items(data_root: Path, exclude=()) -> list[AudioItem]:
    """Speech files under ``speech/``, speaker = first folder (or MANIFEST.tsv)."""
    folder = data_root / "speech"
    overrides = _manifest_speakers(data_root)
    items = []
    for path in require_audio(folder, "plain corpus speech folder", exclude=exclude):
        rel_path = relative_posix(path, data_root)
        parts = Path(rel_path).parts
        if len(parts) < 3 and rel_path not in overrides:
            raise ValueError(
                f"{path}: speech files must be in a speaker folder (speech/<speaker>/...), "
                f"or have a speaker in {data_root / 'MANIFEST.tsv'}"
            )
        speaker = overrides.get(rel_path, parts[1] if len(parts) >= 3 else None)
        item = AudioItem(path=path, rel_path=rel_path, kind="speech", source="speech")
        item.fields["speaker"] = speaker
        item.group = f"speaker:{speaker}"
        items.append(item)
    return items


def other_items(data_root: Path, kind: str, extra_folders=(), exclude=()) -> list[AudioItem]:
    """Noise or RIR files under ``<root>/<kind>/`` and the extra folders."""
    items = []
    own = data_root / kind
    if own.is_dir():
        for path in scan_audio(own, exclude=exclude):
            rel_path = relative_posix(path, data_root)
            items.append(AudioItem(path=path, rel_path=rel_path, kind=kind, source=kind))
    for index, folder in enumerate(extra_folders):
        folder = require_folder(folder, f"extra {kind} folder")
        prefix = f"extra_{kind}_{index}"
        for path in require_audio(folder, f"extra {kind} folder", exclude=exclude):
            rel_path = f"{prefix}/{relative_posix(path, folder)}"
            items.append(
                AudioItem(
                    path=path,
                    rel_path=rel_path,
                    kind=kind,
                    source=f"{prefix}:{folder.name}",
                    entry_path=str(path),
                )
            )
    return items


def _matches(item: AudioItem, patterns) -> bool:
    names = (item.rel_path, str(item.path))
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def assign_splits(items, valid_ratio, test_ratio, seed, valid_patterns=(), test_patterns=()):
    """Set ``item.split`` of every item: patterns first, then by group with the ratios."""
    rest = {}
    for item in items:
        if _matches(item, test_patterns):
            item.split = "test"
        elif _matches(item, valid_patterns):
            item.split = "valid"
        else:
            rest[item.rel_path] = item.group or f"file:{item.rel_path}"
    splits = split_by_group(rest, valid_ratio, test_ratio, seed)
    for item in items:
        if item.rel_path in splits:
            item.split = splits[item.rel_path]


def _read_mono(path, sample_rate: int) -> np.ndarray:
    """Channel 0 of ``path`` at ``sample_rate`` (float64)."""
    samples, file_sr = sf.read(str(path), dtype="float64", always_2d=True)
    samples = samples[:, 0]
    if file_sr != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        ratio = gcd(file_sr, sample_rate)
        samples = resample_poly(samples, sample_rate // ratio, file_sr // ratio)
    return samples


def _at_level(signal: np.ndarray) -> np.ndarray:
    """``signal`` at ``GENERATED_RMS_DB``, peak-limited to ``GENERATED_PEAK`` (one gain)."""
    signal = signal * gain_to_mult(GENERATED_RMS_DB - eval_rms_db(signal))
    return limit_peak(signal, GENERATED_PEAK)


class TrainingMaterial:
    """Babble, synthetic noise and simulated RIRs written into ``<save_folder>/generated``.

    Arguments
    ---------
    save_folder : Path
        The preparation's save folder.
    options : dict
        ``num_babble_files``, ``babble_sec``, ``babble_talkers``,
        ``num_synthetic_noise_files``, ``synthetic_noise_sec``,
        ``num_simulated_rirs``, ``simulated_rt60_range``, ``sample_rate``, ``seed``.
    """

    def __init__(self, save_folder: Path, options: dict):
        self.folder = Path(save_folder) / GENERATED
        self.options = {"version": GENERATION_VERSION, **options}
        self.sr = int(options["sample_rate"])

    def _plan_done(self, name: str, plan: dict, paths: list) -> bool:
        record = self.folder / f"{name}.json"
        try:
            return read_json(record) == plan and all(p.is_file() for p in paths)
        except (OSError, ValueError):
            return False

    def _write_set(self, name, plan, count, make_one, subtype="PCM_16"):
        """Write ``count`` files ``<name>/<name>_<i>.wav`` from ``make_one(i, rng)`` once."""
        paths = [self.folder / name / f"{name}_{i:04d}.wav" for i in range(count)]
        plan = {**self.options, "set": name, "plan": plan}
        if count and not self._plan_done(name, plan, paths):
            (self.folder / f"{name}.json").unlink(missing_ok=True)
            seeds = derive_seed_sequences([int(self.options["seed"]), len(name)], count)
            for i in tqdm(range(count), desc=f"generating {name}", unit="file"):
                signal = make_one(i, np.random.default_rng(seeds[i]))
                write_audio(paths[i], signal, self.sr, subtype=subtype)
            atomic_write_json(self.folder / f"{name}.json", plan)
        return paths

    def babble(self, speaker_files: dict) -> list:
        """Babble files from ``{speaker: [paths]}`` (the babble speakers)."""
        count = int(self.options["num_babble_files"])
        if count and not speaker_files:
            raise ValueError(
                "num_babble_files > 0 but no babble speakers: set babble_speaker_ratio > 0"
            )
        speakers = sorted(speaker_files)
        low, high = (int(v) for v in self.options["babble_talkers"])
        if not 1 <= low <= high:
            raise ValueError(f"babble_talkers must be 1 <= low <= high, got {(low, high)}")
        num_samples = int(round(float(self.options["babble_sec"]) * self.sr))
        cache = {}

        def load(path):
            if path not in cache:
                cache[path] = _read_mono(path, self.sr)
            return cache[path]

        def make_one(_, rng):
            from data_prepare.demo.noise import mix_babble

            talkers = int(rng.integers(low, high + 1))
            chosen = rng.choice(len(speakers), size=talkers, replace=talkers > len(speakers))
            streams = []
            for index in chosen:
                files = list(speaker_files[speakers[index]])
                order = rng.permutation(len(files))
                streams.append([load(files[j]) for j in order])
            return _at_level(mix_babble(streams, num_samples, rng, sr=self.sr))

        plan = {s: [str(p) for p in speaker_files[s]] for s in speakers}
        return self._write_set("babble", plan, count, make_one)

    def synthetic_noise(self) -> list:
        """Synthetic noise files, the kinds cycled."""
        from data_prepare.demo.noise import GENERATORS, synthesize_noise

        kinds = sorted(GENERATORS)
        count = int(self.options["num_synthetic_noise_files"])
        num_samples = int(round(float(self.options["synthetic_noise_sec"]) * self.sr))

        def make_one(i, rng):
            return _at_level(synthesize_noise(kinds[i % len(kinds)], num_samples, rng, self.sr))

        return self._write_set("synthetic_noise", {"kinds": kinds}, count, make_one)

    def simulated_rirs(self) -> list:
        """Simulated shoebox RIRs (one source, one microphone per room)."""
        from data_prepare.demo.rooms import calibrated_room_rirs, draw_room

        count = int(self.options["num_simulated_rirs"])
        rt60_range = tuple(float(v) for v in self.options["simulated_rt60_range"])

        def make_one(_, rng):
            rirs, _ = calibrated_room_rirs(draw_room(rng, rt60_range=rt60_range), self.sr)
            rir = rirs[0][0]
            return rir / np.max(np.abs(rir))

        return self._write_set("simulated_rirs", {}, count, make_one, subtype="FLOAT")

    def items(self, kind: str, paths: list, label: str) -> list[AudioItem]:
        """Training-split items of generated files."""
        save_root = self.folder.parent
        items = []
        for path in paths:
            rel_path = relative_posix(path, save_root)
            items.append(
                AudioItem(
                    path=path,
                    rel_path=rel_path,
                    kind=kind,
                    source=f"{GENERATED}/{label}",
                    split="train",
                    entry_path="{save_root}/" + rel_path,
                )
            )
        return items


def plain_items(data_root, save_folder, options: dict, exclude=()) -> list[AudioItem]:
    """Every item of the preparation (splits assigned), generating material first."""
    data_root = Path(data_root).resolve()
    seed = int(options["seed"])
    speech = speech_items(data_root, exclude=exclude)
    assign_splits(speech, options["valid_ratio"], options["test_ratio"], seed)
    train_speakers = sorted({item.fields["speaker"] for item in speech if item.split == "train"})
    num_speakers = len({item.fields["speaker"] for item in speech})
    num_babble = int(round(float(options["babble_speaker_ratio"]) * num_speakers))
    if options["babble_speaker_ratio"] > 0:
        num_babble = min(max(num_babble, 1), len(train_speakers) - 1)
    rng = np.random.default_rng(derive_seed_sequences([seed, 7], 1)[0])
    babble_speakers = set(rng.choice(train_speakers, size=max(num_babble, 0), replace=False))
    babble_files = {}
    for item in speech:
        speaker = item.fields["speaker"]
        if speaker in babble_speakers:
            babble_files.setdefault(speaker, []).append(item.path)
    speech = [item for item in speech if item.fields["speaker"] not in babble_speakers]
    if babble_speakers:
        logger.info(
            "plain: %d speaker(s) kept for babble only: %s",
            len(babble_speakers),
            ", ".join(sorted(babble_speakers)),
        )

    material = TrainingMaterial(save_folder, {k: options[k] for k in GENERATION_KEYS})
    items = list(speech)
    for kind, extra, ratios in (
        ("noise", options["extra_noise_folders"], ("noise_valid_ratio", "noise_test_ratio")),
        ("rir", options["extra_rir_folders"], ("rir_valid_ratio", "rir_test_ratio")),
    ):
        found = other_items(data_root, kind, extra, exclude=exclude)
        assign_splits(
            found,
            options[ratios[0]],
            options[ratios[1]],
            seed,
            options["valid_patterns"],
            options["test_patterns"],
        )
        items += found
    items += material.items("noise", material.babble(babble_files), "babble")
    items += material.items("noise", material.synthetic_noise(), "synthetic_noise")
    items += material.items("rir", material.simulated_rirs(), "simulated_rirs")
    for kind in ("noise", "rir"):
        if not any(item.kind == kind and item.split == "train" for item in items):
            raise ValueError(
                f"plain corpus {data_root}: no training {kind} files: add {data_root / kind}/, "
                f"extra_{kind}_folders, or generated {kind} files"
            )
    return items


GENERATION_KEYS = (
    "seed",
    "sample_rate",
    "num_babble_files",
    "babble_sec",
    "babble_talkers",
    "num_synthetic_noise_files",
    "synthetic_noise_sec",
    "num_simulated_rirs",
    "simulated_rt60_range",
)


def prepare_plain(
    data_folder,
    save_folder,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
    skip_prep=False,
    force=False,
    extra_noise_folders=(),
    extra_rir_folders=(),
    noise_valid_ratio=0.15,
    noise_test_ratio=0.25,
    rir_valid_ratio=0.15,
    rir_test_ratio=0.25,
    valid_patterns=(),
    test_patterns=(),
    babble_speaker_ratio=0.0,
    num_babble_files=0,
    babble_sec=10.0,
    babble_talkers=(3, 6),
    num_synthetic_noise_files=0,
    synthetic_noise_sec=10.0,
    num_simulated_rirs=0,
    simulated_rt60_range=(0.2, 0.8),
) -> dict:
    """Write speech/noise/rir ``_{train,valid,test}.json`` manifests of a plain corpus.

    Arguments
    ---------
    data_folder : str or Path
        Plain corpus root (see the module docstring).
    save_folder : str or Path
        Manifests, ``bad_files_plain.tsv``, ``prep_options_plain.json``,
        resampled copies and ``generated/``.
    valid_ratio, test_ratio : float
        Fractions of speakers for validation and test.
    seed : int
        Seed of every split and of the generated material.
    sample_rate : int
        Target rate; other rates are resampled once into ``save_folder``.
    num_workers : int, optional
        Processes checking and converting files (default: CPU count).
    skip_prep : bool
        Do nothing, return the manifest paths.
    force : bool
        Prepare again even when already done with the same options and inputs.
    extra_noise_folders, extra_rir_folders : sequence of str
        More folders of noise / RIR files (recursive).
    noise_valid_ratio, noise_test_ratio, rir_valid_ratio, rir_test_ratio : float
        Fractions of noise / RIR files held out for validation and test.
    valid_patterns, test_patterns : sequence of str
        ``fnmatch`` patterns of noise/RIR files held out for validation / test.
    babble_speaker_ratio : float
        Fraction of the speakers whose speech only makes babble.
    num_babble_files, babble_sec, babble_talkers
        Babble files: how many, their length (s), talkers per file (low, high).
    num_synthetic_noise_files, synthetic_noise_sec
        Synthetic noise files: how many and their length (s).
    num_simulated_rirs, simulated_rt60_range
        Simulated rooms: how many and their RT60 range (s).

    Returns
    -------
    dict
        ``{(kind, split): manifest_path}``.
    """
    options = {
        "valid_ratio": valid_ratio,
        "test_ratio": test_ratio,
        "seed": seed,
        "sample_rate": sample_rate,
        "extra_noise_folders": [str(Path(f).expanduser().resolve()) for f in extra_noise_folders],
        "extra_rir_folders": [str(Path(f).expanduser().resolve()) for f in extra_rir_folders],
        "noise_valid_ratio": noise_valid_ratio,
        "noise_test_ratio": noise_test_ratio,
        "rir_valid_ratio": rir_valid_ratio,
        "rir_test_ratio": rir_test_ratio,
        "valid_patterns": list(valid_patterns),
        "test_patterns": list(test_patterns),
        "babble_speaker_ratio": float(babble_speaker_ratio),
        "num_babble_files": int(num_babble_files),
        "babble_sec": float(babble_sec),
        "babble_talkers": [int(v) for v in babble_talkers],
        "num_synthetic_noise_files": int(num_synthetic_noise_files),
        "synthetic_noise_sec": float(synthetic_noise_sec),
        "num_simulated_rirs": int(num_simulated_rirs),
        "simulated_rt60_range": [float(v) for v in simulated_rt60_range],
    }
    recorded = {k: v for k, v in options.items() if k not in ("valid_ratio", "test_ratio")}
    recorded.pop("seed")
    recorded.pop("sample_rate")
    job = PrepJob(
        "plain", data_folder, save_folder, ("speech", "noise", "rir"), "prepare_plain",
        valid_ratio=valid_ratio, test_ratio=test_ratio, seed=seed, sample_rate=sample_rate,
        **recorded,
    )  # fmt: skip
    if not skip_prep and not is_plain_root(job.data_root):
        raise FileNotFoundError(
            f"not a plain corpus root: {job.data_root / 'speech'} is not a folder "
            "(expected speech/<speaker>/..., noise/, rir/)"
        )
    return job.execute(
        lambda: plain_items(job.data_root, job.save_folder, options, exclude=[job.save_folder]),
        num_workers,
        skip_prep,
        force,
    )


def prepare_plain_speech(
    data_folder,
    save_folder,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
    skip_prep=False,
    force=False,
) -> dict:
    """Speaker-disjoint ``speech_{train,valid,test}.json`` of a plain corpus root, speech only.

    For recipes that need speakers and nothing else (target speaker
    extraction, two-speaker separation): the files of ``speech/`` with their
    speakers (:func:`speech_items`: the first folder, or ``MANIFEST.tsv``)
    are split by speaker with :func:`assign_splits`, which is the speech
    split :func:`prepare_plain` makes with the same ratios and seed (and no
    babble speakers). ``noise/`` and ``rir/`` are not read. Options record
    ``prep_options_plain_speech.json``, report ``bad_files_plain_speech.tsv``.

    Returns
    -------
    dict
        ``{("speech", split): manifest_path}``.
    """
    job = PrepJob(
        "plain_speech", data_folder, save_folder, ("speech",), "prepare_plain_speech",
        valid_ratio=valid_ratio, test_ratio=test_ratio, seed=seed, sample_rate=sample_rate,
    )  # fmt: skip
    if not skip_prep and not is_plain_root(job.data_root):
        raise FileNotFoundError(
            f"not a plain corpus root: {job.data_root / 'speech'} is not a folder "
            "(expected speech/<speaker>/...)"
        )

    def collect_items():
        items = speech_items(job.data_root, exclude=[job.save_folder])
        assign_splits(items, valid_ratio, test_ratio, int(seed))
        return items

    return job.execute(collect_items, num_workers, skip_prep, force)


def main(argv=None):
    """Command line: ``python -m data_prepare.plain --data_folder D --save_folder S [...]``."""
    parser = build_parser("Prepare manifests of a plain corpus root (speech/, noise/, rir/).")
    parser.add_argument("--extra_noise_folders", nargs="*", default=[])
    parser.add_argument("--extra_rir_folders", nargs="*", default=[])
    for name, default in (
        ("noise_valid_ratio", 0.15),
        ("noise_test_ratio", 0.25),
        ("rir_valid_ratio", 0.15),
        ("rir_test_ratio", 0.25),
        ("babble_speaker_ratio", 0.0),
        ("babble_sec", 10.0),
        ("synthetic_noise_sec", 10.0),
    ):
        parser.add_argument(f"--{name}", type=float, default=default)
    parser.add_argument("--valid_patterns", nargs="*", default=[])
    parser.add_argument("--test_patterns", nargs="*", default=[])
    parser.add_argument("--babble_talkers", type=int, nargs=2, default=[3, 6])
    parser.add_argument("--num_babble_files", type=int, default=0)
    parser.add_argument("--num_synthetic_noise_files", type=int, default=0)
    parser.add_argument("--num_simulated_rirs", type=int, default=0)
    parser.add_argument("--simulated_rt60_range", type=float, nargs=2, default=[0.2, 0.8])
    return run_cli(prepare_plain, parser, argv)


if __name__ == "__main__":
    main()
