"""Manifests of LibriSpeech (``LibriSpeech/<split>/<speaker>/<chapter>/*.flac``).

Official splits map to manifest splits by name: ``train-*`` -> train,
``dev-*`` -> valid, ``test-*`` -> test. They are speaker-disjoint, and this is
checked. When no ``dev-*`` (or no ``test-*``) split is asked for, that split is
carved out of the training speakers with ``valid_ratio`` (``test_ratio``):
whole speakers, so no speaker is ever in two splits.

Entries add ``speaker``, ``chapter`` and ``words`` (the transcript from
``<speaker>-<chapter>.trans.txt``; absent when the line is missing).
``data_folder`` holds ``LibriSpeech/`` or is the ``LibriSpeech`` folder itself.

Example
-------
``python -m data_prepare.librispeech --data_folder /data --save_folder results/prep --splits train-clean-100 dev-clean test-clean``
"""

from __future__ import annotations

import logging
from pathlib import Path

from data_prepare.common import (
    AudioItem,
    PrepJob,
    build_parser,
    check_ratios,
    relative_posix,
    require_audio,
    require_folder,
    run_cli,
)

logger = logging.getLogger(__name__)


def manifest_split(official: str) -> str:
    """Manifest split of an official LibriSpeech split name.

    Example
    -------
    >>> [manifest_split(s) for s in ("train-clean-360", "dev-other", "test-clean")]
    ['train', 'valid', 'test']
    """
    for prefix, split in (("train", "train"), ("dev", "valid"), ("test", "test")):
        if official.startswith(prefix):
            return split
    raise ValueError(f"LibriSpeech split {official!r}: name must start with train, dev or test")


def find_librispeech_root(data_folder, splits) -> Path:
    """``data_folder/LibriSpeech`` or ``data_folder``, whichever holds the first split."""
    data_folder = Path(data_folder)
    for candidate in (data_folder / "LibriSpeech", data_folder):
        if (candidate / splits[0]).is_dir():
            return candidate
    raise FileNotFoundError(
        f"LibriSpeech split {splits[0]!r} not found: looked for "
        f"{data_folder / 'LibriSpeech' / splits[0]} and {data_folder / splits[0]}"
    )


def read_transcripts(chapter_dir: Path) -> dict:
    """Utterance id -> words, from the chapter's ``*.trans.txt`` file(s)."""
    words = {}
    for trans in sorted(chapter_dir.glob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                words[utt] = text.strip()
    return words


def librispeech_items(data_root, splits, exclude=()) -> list[AudioItem]:
    """Speech items of the given official splits, with speaker/chapter/words."""
    data_root = Path(data_root).resolve()
    root = find_librispeech_root(data_root, splits)
    speakers_of = {}
    items = []
    for official in splits:
        split = manifest_split(official)
        split_dir = require_folder(root / official, f"LibriSpeech split {official!r}")
        transcripts = {}
        for path in require_audio(split_dir, f"LibriSpeech split {official!r}", exclude=exclude):
            parts = path.relative_to(split_dir).parts
            speaker, chapter = (parts[0], parts[1]) if len(parts) >= 3 else (None, None)
            if speaker is None:
                # Not <speaker>/<chapter>/<file>: fall back to the file name.
                stem = path.stem.split("-")
                speaker, chapter = (stem[0], stem[1]) if len(stem) == 3 else (path.stem, "")
            if path.parent not in transcripts:
                transcripts[path.parent] = read_transcripts(path.parent)
            fields = {"speaker": speaker, "chapter": chapter}
            words = transcripts[path.parent].get(path.stem)
            if words is None:
                logger.debug("%s: no transcript line", path)
            else:
                fields["words"] = words
            speakers_of.setdefault(speaker, set()).add(split)
            items.append(
                AudioItem(
                    path=path,
                    rel_path=relative_posix(path, data_root),
                    kind="speech",
                    source=f"LibriSpeech/{official}",
                    group=f"speaker:{speaker}",
                    split=None if split == "train" else split,
                    fields=fields,
                )
            )
    shared = sorted(s for s, found in speakers_of.items() if len(found) > 1)
    if shared:
        raise ValueError(
            f"LibriSpeech splits {list(splits)} share speakers {shared[:10]}"
            f"{' ...' if len(shared) > 10 else ''}: manifests would not be speaker-disjoint"
        )
    return items


def prepare_librispeech(
    data_folder,
    save_folder,
    splits=("train-clean-100", "dev-clean", "test-clean"),
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
    skip_prep=False,
    force=False,
) -> dict:
    """Write ``speech_{train,valid,test}.json`` from LibriSpeech, speaker-disjoint.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``LibriSpeech/`` (or that folder itself).
    save_folder : str or Path
        Output folder (manifests, ``bad_files_librispeech.tsv``).
    splits : tuple of str
        Official splits to use (``train-*``, ``dev-*``, ``test-*``).
    valid_ratio, test_ratio : float
        Fractions of training *speakers* moved to valid / test, used only
        when no ``dev-*`` / ``test-*`` split is given.
    seed : int
        Seed of that speaker split.
    sample_rate : int
        Target rate (LibriSpeech is 16 kHz; others are resampled once).
    num_workers : int, optional
        Processes reading files (default: CPU count).
    skip_prep : bool
        Do nothing, return the manifest paths.
    force : bool
        Prepare again even when already done with the same options and inputs.

    Returns
    -------
    dict
        ``{("speech", split): manifest_path}``.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits:
        raise ValueError("splits must name at least one LibriSpeech split")
    mapped = {manifest_split(s) for s in splits}
    if "train" not in mapped:
        raise ValueError(f"splits={splits}: need at least one train-* split")
    check_ratios(valid_ratio, test_ratio)
    # Carve valid/test out of the training speakers only when not given.
    carve_valid = 0.0 if "valid" in mapped else valid_ratio
    carve_test = 0.0 if "test" in mapped else test_ratio
    job = PrepJob(
        "librispeech", data_folder, save_folder, ("speech",), "prepare_librispeech",
        valid_ratio=carve_valid, test_ratio=carve_test, seed=seed, sample_rate=sample_rate,
        splits=splits,
    )  # fmt: skip
    return job.execute(
        lambda: librispeech_items(job.data_root, splits, exclude=[job.save_folder]),
        num_workers,
        skip_prep,
        force,
    )


def main(argv=None):
    """Command line: ``python -m data_prepare.librispeech --data_folder D --save_folder S``."""
    parser = build_parser("Prepare LibriSpeech speech manifests (speaker-disjoint splits).")
    parser.add_argument(
        "--splits", nargs="+", default=["train-clean-100", "dev-clean", "test-clean"]
    )
    return run_cli(prepare_librispeech, parser, argv)


if __name__ == "__main__":
    main()
