"""Shared machinery of the manifest preparation functions.

Every ``prepare_<corpus>`` function follows the same path:

1. find the corpus' audio files (:func:`scan_audio`, sorted, hidden files and
   the save folder excluded) and describe them as :class:`AudioItem` objects
   (kind, source, speaker, split group...);
2. :meth:`PrepJob.run` checks and converts every file in a process pool
   (:mod:`data_prepare.inspection`; headers, NaN/Inf, silence, resampling to
   ``<save_folder>/resampled/``, RT60 for RIRs) with a tqdm progress bar;
3. bad files are listed with their reason in ``<save_folder>/bad_files_<name>.tsv``;
4. the good ones are split into train/valid/test (:func:`split_by_group`) and
   written, atomically, to ``<save_folder>/<kind>_<split>.json``;
5. the options are recorded last in ``<save_folder>/prep_options_<name>.json``
   (with a checksum of every output and a fingerprint of the inputs), so that
   a later call with the same options skips the work and an interrupted one is
   redone.

Skip-if-done, ``skip_prep`` and ``force``
-----------------------------------------
* A preparation is skipped ("already prepared with the same options") only
  when its record has the same options, every output has its recorded
  checksum, every file the manifests point to inside the save folder
  (resampled copies, generated material) exists, **and its inputs are
  unchanged**: the audio files under the data folder (and the extra folders
  of ``prepare_plain``; the save folder excluded) are fingerprinted by count
  and by each file's relative path, size and modification time (hashed; a
  directory walk and one ``stat`` per file, no audio read). A corpus file
  deleted, added, replaced or touched since the preparation makes it run
  again, so a manifest never keeps pointing at a vanished file.
* ``force=True`` (``--force`` on every ``python -m data_prepare.<corpus>``
  command line) redoes the preparation whatever the record says (converted
  copies that are still valid are reused).
* ``skip_prep=True`` (``--skip_prep``) does nothing at all, not even the
  checks above, and returns the manifest paths: for corpora prepared
  elsewhere or read-only.

Command lines (:func:`run_cli`) print an expected error (missing folder, no
audio, bad options) as one line, ``error: ...``, with exit status 1;
``--verbose`` shows the traceback.

Manifest entries (keyed by id = relative path without extension, "/" -> "_")::

    {"path": "{data_root}/clean/reader_01326/x.wav", "duration": 2.5, "sr": 16000,
     "channels": 1, "source": "clean", "speaker": "01326"}

Converted files (other rate, or multichannel -> channel 0) point to
``{save_root}/resampled/<relative path>`` and add ``orig_sr`` / ``orig_channels``;
RIRs add ``rt60`` (seconds; ``null`` with an ``rt60_error`` field when the
decay cannot be measured, e.g. near-anechoic RIRs: they stay usable).
``custom_modules.audio.files.load_manifest`` resolves the placeholders
(``{data_root}`` from the recorded options by default).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from custom_modules.audio.files import (
    AUDIO_EXTENSIONS,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from data_prepare.inspection import FileTask, default_workers, run_tasks

logger = logging.getLogger(__name__)

# Bump when the manifest fields change: recorded options then differ and
# earlier preparations are redone.
MANIFEST_SCHEMA_VERSION = 1
KINDS = ("speech", "noise", "rir")
SPLITS = ("train", "valid", "test")

# DNS read speech: ".../book_00007_chp_0008_reader_01326_64_seg_2.wav" -> "01326".
_DNS_READER = re.compile(r"reader_(\d+)")
# LibriSpeech utterance: "19-198-0001.flac" -> speaker "19", chapter "198".
_LIBRI_UTTERANCE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass
class AudioItem:
    """One audio file found by a corpus scanner.

    Arguments
    ---------
    path : Path
        Absolute path.
    rel_path : str
        Path relative to the data root ("/" separators); gives the id.
    kind : str
        "speech", "noise" or "rir".
    source : str
        Sub-corpus label stored in the manifest, e.g. "musan/noise/free-sound".
    group : str, optional
        Split group: items of one group always land in the same split
        (speaker for speech, room for simulated RIRs). None: the file alone.
    split : str, optional
        Fixed split (LibriSpeech's official ones); None: drawn by seed.
    fields : dict
        Extra manifest fields (``speaker``, ``chapter``, ``words``...).
    entry_path : str, optional
        Manifest path when the file is used as it is (default
        ``{data_root}/<rel_path>``; see ``data_prepare.inspection.FileTask``).
    """

    path: Path
    rel_path: str
    kind: str
    source: str
    group: str | None = None
    split: str | None = None
    fields: dict = field(default_factory=dict)
    entry_path: str | None = None


def require_folder(folder, what: str) -> Path:
    """Return ``folder`` as an absolute Path, or raise naming it and what was expected.

    Example
    -------
    >>> require_folder("/nonexistent/x", "MUSAN root")
    Traceback (most recent call last):
    ...
    FileNotFoundError: MUSAN root not found: /nonexistent/x is not a folder
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a folder")
    return path.resolve()


def scan_audio(folder, exclude=()) -> list[Path]:
    """All audio files (``AUDIO_EXTENSIONS``, any case) under ``folder``, sorted.

    Hidden files and folders (name starting with ".", e.g. macOS "._x.wav"
    resource forks and temporary files) are ignored, as are folders in
    ``exclude`` (the save folder when it lies inside the data folder).
    Symbolic links to folders are followed once (cycles are cut).

    Example
    -------
    >>> import tempfile
    >>> scan_audio(tempfile.mkdtemp())
    []
    """
    folder = Path(folder).resolve()
    excluded = {Path(p).resolve() for p in exclude}
    visited = set()
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real_root = os.path.realpath(root)
        if real_root in visited:
            dirs[:] = []
            continue
        visited.add(real_root)
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() not in excluded
        ]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS):
                found.append(Path(root) / name)
    return sorted(found)


def require_audio(folder, what: str, exclude=()) -> list[Path]:
    """:func:`scan_audio` that raises ``ValueError`` naming ``folder`` when it finds nothing."""
    files = scan_audio(folder, exclude=exclude)
    if not files:
        raise ValueError(
            f"{what}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {folder}"
        )
    return files


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with "/" separators."""
    return Path(path).relative_to(root).as_posix()


def make_id(rel_path: str) -> str:
    """Manifest id of a relative path: extension dropped, "/" -> "_".

    Example
    -------
    >>> make_id("clean_train/read_speech/a_b.wav")
    'clean_train_read_speech_a_b'
    """
    stem, _ = os.path.splitext(rel_path)
    return stem.replace("/", "_")


def unique_ids(rel_paths) -> dict[str, str]:
    """Map each relative path to a unique id.

    :func:`make_id` can collide ("a/b_c.wav" and "a_b/c.wav", or "x.wav" and
    "x.flac"); later paths (in sorted order) then get "__2", "__3"...

    Example
    -------
    >>> unique_ids(["a/b_c.wav", "a_b/c.wav"])
    {'a/b_c.wav': 'a_b_c', 'a_b/c.wav': 'a_b_c__2'}
    """
    ids = {}
    taken = set()
    for rel_path in sorted(rel_paths):
        base = make_id(rel_path)
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            candidate = f"{base}__{number}"
        if candidate != base:
            logger.warning("id %s already used: %s gets id %s", base, rel_path, candidate)
        taken.add(candidate)
        ids[rel_path] = candidate
    return ids


def speaker_from_name(name: str) -> str | None:
    """Speaker id from DNS (``reader_01326``) or LibriSpeech (``19-198-0001``) names.

    Example
    -------
    >>> speaker_from_name("book_00007_chp_0008_reader_01326_64_seg_2.wav")
    '01326'
    >>> speaker_from_name("19-198-0001.flac")
    '19'
    >>> speaker_from_name("rain.wav") is None
    True
    """
    match = _DNS_READER.search(name)
    if match:
        return match.group(1)
    match = _LIBRI_UTTERANCE.match(os.path.splitext(name)[0])
    if match:
        return match.group(1)
    return None


def check_ratios(valid_ratio: float, test_ratio: float) -> None:
    """Raise ``ValueError`` unless 0 <= ratios and their sum < 1."""
    if not (0 <= valid_ratio < 1 and 0 <= test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise ValueError(
            f"valid_ratio={valid_ratio} and test_ratio={test_ratio} must be >= 0 "
            "with a sum below 1 (the rest is the training set)"
        )


def split_by_group(groups: dict, valid_ratio: float, test_ratio: float, seed: int) -> dict:
    """Assign every key of ``groups`` (id -> group) to "train", "valid" or "test".

    Groups (not files) are shuffled with ``numpy.random.default_rng(seed)``
    after sorting, so the result depends only on the ids, groups and seed,
    never on file-system order; all ids of a group share a split. Each
    non-zero ratio gets at least one group as long as one is left for train.

    Example
    -------
    >>> groups = {f"u{i}": f"spk{i % 10}" for i in range(100)}
    >>> splits = split_by_group(groups, 0.1, 0.2, seed=1)
    >>> sorted(set(splits.values()))
    ['test', 'train', 'valid']
    >>> len({groups[k] for k in splits if splits[k] == "test"})
    2
    """
    check_ratios(valid_ratio, test_ratio)
    names = sorted(set(groups.values()))
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    counts = {}
    left = len(names)
    for split, ratio in (("test", test_ratio), ("valid", valid_ratio)):
        count = int(round(ratio * len(names)))
        if ratio > 0 and count == 0:
            count = 1
        count = min(count, max(left - 1, 0))
        if ratio > 0 and count == 0 and names:
            logger.warning(
                "only %d group(s): %s split left empty (ratio %s)", len(names), split, ratio
            )
        counts[split] = count
        left -= count
    split_of_group = {}
    position = 0
    for split in ("test", "valid"):
        for name in order[position : position + counts[split]]:
            split_of_group[name] = split
        position += counts[split]
    for name in order[position:]:
        split_of_group[name] = "train"
    return {key: split_of_group[group] for key, group in groups.items()}


def inputs_fingerprint(folders, exclude=()) -> dict:
    """Cheap fingerprint of the audio files under ``folders``: their count and a hash.

    The hash covers each file's path relative to its folder, size and
    modification time (ns), in sorted order; no audio is read.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.wav").write_bytes(b"RIFF")
    >>> first = inputs_fingerprint([folder])
    >>> first["count"]
    1
    >>> (folder / "a.wav").unlink()
    >>> inputs_fingerprint([folder]) == first
    False
    """
    digest = hashlib.sha1()
    count = 0
    for number, folder in enumerate(folders):
        folder = Path(folder)
        if not folder.is_dir():
            digest.update(f"{number}\tmissing folder {folder}\n".encode())
            continue
        for path in scan_audio(folder, exclude=exclude):
            try:
                stat = path.stat()
                line = f"{number}\t{relative_posix(path, folder)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
            except OSError:  # vanished while scanning, or a dangling link
                line = f"{number}\t{relative_posix(path, folder)}\tunreadable\n"
            digest.update(line.encode())
            count += 1
    return {"count": count, "sha1": digest.hexdigest()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PrepJob:
    """One preparation: its options, outputs, skip-if-done check and run.

    Arguments
    ---------
    name : str
        Short name ("dns", "musan", "folder_noise"...): names the options
        record ``prep_options_<name>.json`` and report ``bad_files_<name>.tsv``.
    data_folder : str or Path
        Corpus root; the ``{data_root}`` of the manifests.
    save_folder : str or Path
        Where manifests, report, options and converted copies go.
    kinds : tuple of str
        Manifest kinds this preparation writes (all three splits each).
    function : str
        Name of the public function, recorded with the options.
    valid_ratio, test_ratio : float
        Fractions of groups (speakers, rooms or files) for valid and test.
    seed : int
        Seed of the split.
    sample_rate : int
        Target rate; other rates are resampled once into ``save_folder``.
    **options
        Every other option that changes the outputs (JSON-serialisable).
    """

    def __init__(
        self,
        name: str,
        data_folder,
        save_folder,
        kinds,
        function: str,
        /,  # so that an option may be called "kinds" (prepare_dns records it)
        *,
        valid_ratio: float,
        test_ratio: float,
        seed: int,
        sample_rate: int,
        **options,
    ):
        check_ratios(valid_ratio, test_ratio)
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown manifest kind(s) {sorted(unknown)}; expected {KINDS}")
        self.name = name
        self.data_root = Path(data_folder).expanduser().resolve()
        self.save_folder = Path(save_folder).expanduser().resolve()
        self.kinds = tuple(kinds)
        self.valid_ratio, self.test_ratio = valid_ratio, test_ratio
        self.seed, self.sample_rate = seed, sample_rate
        self.options = {
            "function": function,
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "data_folder": str(self.data_root),
            "valid_ratio": valid_ratio,
            "test_ratio": test_ratio,
            "seed": seed,
            "sample_rate": sample_rate,
            **options,
        }
        self.options_path = self.save_folder / f"prep_options_{name}.json"
        self.report_path = self.save_folder / f"bad_files_{name}.tsv"
        # Inputs fingerprinted by the skip-if-done check: the data folder and any
        # extra folders of the options (prepare_plain's extra_noise_folders...).
        self.input_folders = [self.data_root] + [
            Path(folder)
            for key, value in options.items()
            if key.startswith("extra_") and key.endswith("_folders")
            for folder in value
        ]

    def manifest_paths(self) -> dict:
        """``{(kind, split): path}`` of the manifests this job writes."""
        return {
            (kind, split): self.save_folder / f"{kind}_{split}.json"
            for kind in self.kinds
            for split in SPLITS
        }

    def _outputs(self) -> list[Path]:
        return [*self.manifest_paths().values(), self.report_path]

    def fingerprint(self) -> dict:
        """:func:`inputs_fingerprint` of this job's input folders (the save folder excluded)."""
        return inputs_fingerprint(self.input_folders, exclude=[self.save_folder])

    def _saved_files_missing(self) -> str | None:
        """A file inside the save folder that a manifest points to but is gone, else None."""
        for path in self.manifest_paths().values():
            try:
                manifest = read_json(path)
            except (OSError, ValueError):
                return str(path)
            for entry in manifest.values() if isinstance(manifest, dict) else ():
                target = entry.get("path") if isinstance(entry, dict) else None
                if isinstance(target, str) and target.startswith("{save_root}/"):
                    resolved = self.save_folder / target[len("{save_root}/") :]
                    if not resolved.exists():
                        return str(resolved)
        return None

    def is_done(self, fingerprint=None) -> bool:
        """True when the outputs exist, unchanged, from a run with the same options and inputs.

        ``fingerprint``: the current :meth:`fingerprint` (computed when None).
        """
        return self._why_not_done(fingerprint) is None

    def _why_not_done(self, fingerprint=None) -> str | None:
        if not self.options_path.exists():
            return "not prepared yet"
        try:
            record = read_json(self.options_path)
        except (OSError, ValueError):
            return f"unreadable {self.options_path.name}"
        if not isinstance(record, dict) or record.get("options") != self.options:
            return "the options changed"
        checksums = record.get("outputs", {})
        for path in self._outputs():
            # A manifest overwritten by another preparation into the same
            # folder (e.g. two corpora writing noise_*.json) means redo.
            if not path.exists() or checksums.get(path.name) != _sha256(path):
                return f"{path.name} is missing or changed"
        missing = self._saved_files_missing()
        if missing is not None:
            return f"{missing} is missing"
        if fingerprint is None:
            fingerprint = self.fingerprint()
        recorded = record.get("inputs")
        if recorded != fingerprint:
            if not isinstance(recorded, dict):
                return "no record of the input files (prepared by an older version)"
            return (
                f"the input files changed ({recorded.get('count')} audio files then, "
                f"{fingerprint['count']} now, or some were modified)"
            )
        return None

    def skip_if_done(self, fingerprint=None) -> bool:
        """Log and return True when :meth:`is_done`; log why the work is (re)done otherwise."""
        reason = self._why_not_done(fingerprint)
        if reason is None:
            logger.info(
                "%s: skipping, already prepared with the same options and inputs (%s)",
                self.name,
                self.options_path,
            )
            return True
        if self.options_path.exists():
            logger.info("%s: preparing again: %s", self.name, reason)
        return False

    def execute(self, collect_items, num_workers=None, skip_prep=False, force=False) -> dict:
        """The whole flow of a ``prepare_*`` function (see the module docstring).

        ``skip_prep`` returns the manifest paths at once; otherwise the data
        folder must exist, a finished identical preparation with unchanged
        inputs is skipped unless ``force``, and else ``collect_items()`` (the
        corpus scanner) feeds :meth:`run`.
        """
        if skip_prep:
            return self.manifest_paths()
        require_folder(self.data_root, "data folder")
        if self.save_folder == self.data_root:
            raise ValueError(f"save_folder must differ from data_folder ({self.data_root})")
        fingerprint = self.fingerprint()
        if force:
            logger.info("%s: preparing again (force)", self.name)
        elif self.skip_if_done(fingerprint):
            return self.manifest_paths()
        return self.run(collect_items(), num_workers, fingerprint=fingerprint)

    def run(self, items, num_workers=None, fingerprint=None) -> dict:
        """Check/convert ``items`` in a pool, split, write manifests, report, options.

        Returns
        -------
        dict
            ``{(kind, split): manifest_path}`` for every kind of this job.
        """
        self.save_folder.mkdir(parents=True, exist_ok=True)
        # Forget the old record first: an interrupted redo must not look done.
        self.options_path.unlink(missing_ok=True)

        items = sorted(items, key=lambda item: item.rel_path)
        tasks = [
            FileTask(
                path=str(item.path),
                rel_path=item.rel_path,
                save_root=str(self.save_folder),
                sample_rate=self.sample_rate,
                is_rir=item.kind == "rir",
                entry_path=item.entry_path,
            )
            for item in items
        ]
        workers = default_workers(num_workers)
        results = run_tasks(tasks, workers, desc=f"{self.name}: checking audio")

        ids = unique_ids(item.rel_path for item in items)
        entries = {kind: {} for kind in self.kinds}
        groups = {kind: {} for kind in self.kinds}
        fixed = {kind: {} for kind in self.kinds}
        bad = []
        for item, result in zip(items, results, strict=True):
            if result.entry is None:
                bad.append((str(item.path), result.reason))
                continue
            item_id = ids[item.rel_path]
            entries[item.kind][item_id] = {**result.entry, "source": item.source, **item.fields}
            if item.split is not None:
                fixed[item.kind][item_id] = item.split
            else:
                groups[item.kind][item_id] = item.group or f"file:{item_id}"

        lines = ["path\treason"] + [f"{path}\t{reason}" for path, reason in bad]
        atomic_write_text(self.report_path, "\n".join(lines) + "\n")
        empty = [kind for kind in self.kinds if not entries[kind]]
        if empty:
            raise ValueError(
                f"{self.name}: no usable {' / '.join(empty)} file left after skipping "
                f"{len(bad)} bad file(s) listed in {self.report_path}"
            )

        manifests = self.manifest_paths()
        for kind in self.kinds:
            split_of = split_by_group(groups[kind], self.valid_ratio, self.test_ratio, self.seed)
            split_of.update(fixed[kind])
            for split in SPLITS:
                manifest = {
                    key: entries[kind][key]
                    for key in sorted(entries[kind])
                    if split_of[key] == split
                }
                atomic_write_json(manifests[kind, split], manifest)

        record = {
            "options": self.options,
            "data_root": str(self.data_root),
            # Taken before the files were read: a file changed meanwhile means redo.
            "inputs": fingerprint if fingerprint is not None else self.fingerprint(),
            "outputs": {path.name: _sha256(path) for path in self._outputs()},
            "summary": {"ok": len(items) - len(bad), "skipped": len(bad)},
        }
        atomic_write_json(self.options_path, record)
        summary = (
            f"{self.name}: {len(items) - len(bad)} files ok, {len(bad)} skipped "
            f"(see {self.report_path}); manifests in {self.save_folder}"
        )
        (logger.warning if bad else logger.info)(summary)
        unknown_rt60 = sum(
            e.get("rt60", 0) is None
            for kind_entries in entries.values()
            for e in kind_entries.values()
        )
        if unknown_rt60:
            logger.warning(
                "%s: %d RIR(s) kept with rt60 null (see their rt60_error field)",
                self.name,
                unknown_rt60,
            )
        return manifests


def build_parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every ``prepare_*`` function shares."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data_folder", required=True, help="corpus root folder")
    parser.add_argument(
        "--save_folder", required=True, help="where manifests, report and resampled copies go"
    )
    parser.add_argument("--valid_ratio", type=float, default=0.1, help="fraction for validation")
    parser.add_argument("--test_ratio", type=float, default=0.1, help="fraction for test")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the split")
    parser.add_argument("--sample_rate", type=int, default=16000, help="target sample rate (Hz)")
    parser.add_argument(
        "--num_workers", type=int, default=None, help="worker processes (default: CPU count)"
    )
    parser.add_argument(
        "--skip_prep", action="store_true", help="do nothing (return the manifest paths)"
    )
    add_force_and_verbose(parser)
    return parser


def add_force_and_verbose(parser: argparse.ArgumentParser) -> None:
    """``--force`` (redo even if done) and ``--verbose`` (tracebacks) options."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="prepare again even when already done with the same options and inputs",
    )
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")


# Errors a command line reports in one line (the message names the file or option).
CLI_ERRORS = (OSError, ValueError, KeyError)


def cli_error_exit(err: BaseException, verbose: bool) -> None:
    """Print ``err`` as ``error: ...`` (with its traceback when ``verbose``) and exit 1."""
    if verbose:
        traceback.print_exception(err)
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(1)


def run_cli(prepare, parser: argparse.ArgumentParser, argv=None) -> dict:
    """Parse ``argv``, call ``prepare(**vars(args))`` and print the manifest paths.

    Expected errors (``CLI_ERRORS``) end the program with one line and exit
    status 1; ``--verbose`` shows their traceback.
    """
    args = vars(parser.parse_args(argv))
    verbose = args.pop("verbose", False)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifests = prepare(**args)
    except CLI_ERRORS as err:
        cli_error_exit(err, verbose)
    for (kind, split), path in manifests.items():
        print(f"{kind}\t{split}\t{path}")
    return manifests
