"""Manifests of room impulse responses: SLR26 (simulated) and SLR28 (real).

Layouts found under an *impulse-response root* ``R``:

* ``R/SLR26/simulated_rirs_48k/{smallroom,mediumroom,largeroom}/Room*/*.wav``
  (48 kHz; resampled once to the target rate) -> source "SLR26/<roomsize>";
* ``R/SLR28/RIRS_NOISES/`` or ``R/RIRS_NOISES/`` or ``R`` itself being a
  ``RIRS_NOISES`` folder, containing
  ``real_rirs_isotropic_noises/*.wav`` -> source "SLR28/real_rirs" (the
  isotropic *noise* recordings of that folder, names with a "noise" token,
  are not RIRs and are left out) and ``simulated_rirs/<roomsize>/Room*/*.wav``
  -> source "SLR28/<roomsize>" (left out when SLR26 is present: same rooms).

``R`` is the ``data_folder`` itself, ``data_folder/impulse_responses_all``
(DNS-style root) or ``data_folder/datasets/impulse_responses`` (original DNS
Challenge layout). Multichannel RIRs (SLR28 real ones have up to 8
channels) keep channel 0. Every entry gets ``rt60`` (seconds, estimated on
the converted signal by ``custom_modules.audio.rir.estimate_rt60``; ``null`` plus
``rt60_error`` when the decay is not measurable, e.g. anechoic); converted
RIRs are stored as float WAV. Simulated RIRs of one room share a split, so
no room is in two splits.

Example
-------
``python -m data_prepare.rirs --data_folder /data/DNS --save_folder results/prep``
"""

from __future__ import annotations

import logging
from pathlib import Path

from data_prepare.common import (
    AudioItem,
    PrepJob,
    build_parser,
    relative_posix,
    require_folder,
    run_cli,
    scan_audio,
)

logger = logging.getLogger(__name__)

ROOM_SIZES = ("smallroom", "mediumroom", "largeroom")


def _is_isotropic_noise(path: Path) -> bool:
    return "noise" in path.stem.lower().split("_")


def _simulated_items(folder: Path, label: str, data_root: Path, exclude) -> list[AudioItem]:
    items = []
    for room_size in ROOM_SIZES:
        size_dir = folder / room_size
        if not size_dir.is_dir():
            continue
        for path in scan_audio(size_dir, exclude=exclude):
            room = path.relative_to(size_dir).parts[0]
            items.append(
                AudioItem(
                    path=path,
                    rel_path=relative_posix(path, data_root),
                    kind="rir",
                    source=f"{label}/{room_size}",
                    group=f"room:{label}/{room_size}/{room}",
                )
            )
    return items


def _rirs_noises_dirs(root: Path) -> list[Path]:
    candidates = [root / "SLR28" / "RIRS_NOISES", root / "RIRS_NOISES", root]
    return [
        c
        for c in candidates
        if (c / "real_rirs_isotropic_noises").is_dir() or (c / "simulated_rirs").is_dir()
    ]


def rir_items(rir_root, data_root, exclude=()) -> list[AudioItem]:
    """RIR items under an impulse-response root (see the module docstring).

    Arguments
    ---------
    rir_root : str or Path
        The impulse-response root ``R``.
    data_root : str or Path
        Root the relative paths (and ids) are taken from.
    exclude : iterable of Path
        Folders not to scan (the save folder).

    Returns
    -------
    list of AudioItem
        Possibly empty (the caller decides whether that is an error).
    """
    rir_root, data_root = Path(rir_root).resolve(), Path(data_root).resolve()
    items = []
    slr26 = rir_root / "SLR26" / "simulated_rirs_48k"
    if slr26.is_dir():
        items += _simulated_items(slr26, "SLR26", data_root, exclude)
    for rirs_noises in _rirs_noises_dirs(rir_root)[:1]:
        real = rirs_noises / "real_rirs_isotropic_noises"
        if real.is_dir():
            files = scan_audio(real, exclude=exclude)
            rirs = [p for p in files if not _is_isotropic_noise(p)]
            logger.info(
                "%s: %d RIRs, %d isotropic noises left out", real, len(rirs), len(files) - len(rirs)
            )
            items += [
                AudioItem(
                    path=p,
                    rel_path=relative_posix(p, data_root),
                    kind="rir",
                    source="SLR28/real_rirs",
                )
                for p in rirs
            ]
        simulated = rirs_noises / "simulated_rirs"
        if simulated.is_dir():
            if slr26.is_dir():
                logger.info("%s left out: same rooms as %s", simulated, slr26)
            else:
                items += _simulated_items(simulated, "SLR28", data_root, exclude)
    return items


def rir_root_candidates(data_folder) -> list[Path]:
    """Folders :func:`prepare_rirs` looks at, in order."""
    data_folder = Path(data_folder)
    return [
        data_folder,
        data_folder / "impulse_responses_all",
        data_folder / "datasets" / "impulse_responses",
    ]


def find_rir_items(data_folder, exclude=()) -> list[AudioItem]:
    """RIR items of the first candidate root that has any; raise naming all candidates."""
    data_folder = require_folder(data_folder, "RIR data folder")
    for root in rir_root_candidates(data_folder):
        if root.is_dir():
            items = rir_items(root, data_folder, exclude=exclude)
            if items:
                return items
    looked = ", ".join(
        f"{r}/{{SLR26/simulated_rirs_48k,SLR28/RIRS_NOISES,RIRS_NOISES}}"
        for r in rir_root_candidates(data_folder)
    )
    raise FileNotFoundError(
        f"no SLR26/SLR28 RIRs found in {data_folder}: looked for {looked} "
        "(for a plain folder of RIRs use data_prepare.folder with kind='rir')"
    )


def prepare_rirs(
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
    """Write ``rir_{train,valid,test}.json`` for SLR26/SLR28 RIRs.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding the RIRs (see the module docstring for layouts).
    save_folder : str or Path
        Output folder (manifests, ``bad_files_rirs.tsv``, resampled copies).
    valid_ratio, test_ratio : float
        Fractions of *rooms* (simulated) / files (real) for valid and test.
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
        ``{("rir", split): manifest_path}``.
    """
    job = PrepJob(
        "rirs", data_folder, save_folder, ("rir",), "prepare_rirs",
        valid_ratio=valid_ratio, test_ratio=test_ratio, seed=seed, sample_rate=sample_rate,
    )  # fmt: skip
    return job.execute(
        lambda: find_rir_items(job.data_root, exclude=[job.save_folder]),
        num_workers,
        skip_prep,
        force,
    )


def main(argv=None):
    """Command line: ``python -m data_prepare.rirs --data_folder D --save_folder S``."""
    parser = build_parser("Prepare SLR26/SLR28 room impulse response manifests.")
    return run_cli(prepare_rirs, parser, argv)


if __name__ == "__main__":
    main()
