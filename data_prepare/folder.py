"""Manifests of any folder of wav/flac files, as speech, noise or RIRs.

For users' own data: every audio file under ``data_folder`` (recursively;
hidden files and the save folder excluded) becomes an entry of the
``<kind>_{train,valid,test}.json`` manifests, with ``source``
"<folder name>/<first sub-folder>". Speech files named like DNS
(``..._reader_01326_...``) or LibriSpeech (``19-198-0001``) get a ``speaker``
and are split by speaker; everything else is split by file. RIRs get
``rt60``. Files at another rate or with several channels are converted once
(channel 0) into ``<save_folder>/resampled/``.

The options record and report are named after the kind
(``prep_options_folder_<kind>.json``, ``bad_files_folder_<kind>.tsv``), so
one save folder can hold a speech, a noise and a RIR folder's manifests.

Example
-------
``python -m data_prepare.folder --data_folder my_noises --save_folder results/prep --kind noise``
"""

from __future__ import annotations

from pathlib import Path

from data_prepare.common import (
    KINDS,
    AudioItem,
    PrepJob,
    build_parser,
    relative_posix,
    require_audio,
    run_cli,
    speaker_from_name,
)


def folder_items(data_root, kind, exclude=()) -> list[AudioItem]:
    """Items of every audio file under ``data_root``; raise when there is none."""
    data_root = Path(data_root).resolve()
    items = []
    for path in require_audio(data_root, f"{kind} folder", exclude=exclude):
        rel_path = relative_posix(path, data_root)
        sub = Path(rel_path).parts
        source = data_root.name + (f"/{sub[0]}" if len(sub) > 1 else "")
        item = AudioItem(path=path, rel_path=rel_path, kind=kind, source=source)
        if kind == "speech":
            speaker = speaker_from_name(path.name)
            if speaker is not None:
                item.fields["speaker"] = speaker
                item.group = f"speaker:{speaker}"
        items.append(item)
    return items


def prepare_folder(
    data_folder,
    save_folder,
    kind="speech",
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
    skip_prep=False,
    force=False,
) -> dict:
    """Write ``<kind>_{train,valid,test}.json`` for a plain folder of audio files.

    Arguments
    ---------
    data_folder : str or Path
        Folder of wav/flac files (searched recursively).
    save_folder : str or Path
        Output folder (manifests, ``bad_files_folder_<kind>.tsv``, resampled copies).
    kind : str
        "speech", "noise" or "rir".
    valid_ratio, test_ratio : float
        Fractions of speakers (speech with recognised names) or files.
    seed : int
        Seed of the split.
    sample_rate : int
        Target rate; other rates are resampled once into ``save_folder``.
    num_workers : int, optional
        Processes reading and converting files (default: CPU count).
    skip_prep : bool
        Do nothing, return the manifest paths.
    force : bool
        Prepare again even when already done with the same options and inputs.

    Returns
    -------
    dict
        ``{(kind, split): manifest_path}``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    job = PrepJob(
        f"folder_{kind}", data_folder, save_folder, (kind,), "prepare_folder",
        valid_ratio=valid_ratio, test_ratio=test_ratio, seed=seed, sample_rate=sample_rate,
        kind=kind,
    )  # fmt: skip
    return job.execute(
        lambda: folder_items(job.data_root, kind, exclude=[job.save_folder]),
        num_workers,
        skip_prep,
        force,
    )


def main(argv=None):
    """Command line: ``python -m data_prepare.folder --data_folder D --save_folder S --kind noise``."""
    parser = build_parser("Prepare manifests for a plain folder of wav/flac files.")
    parser.add_argument("--kind", default="speech", choices=list(KINDS))
    return run_cli(prepare_folder, parser, argv)


if __name__ == "__main__":
    main()
