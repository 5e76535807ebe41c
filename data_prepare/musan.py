"""Manifests of MUSAN (``musan/{noise,music,speech}/<source>/*.wav``).

All chosen categories go to the *noise* manifests (for enhancement, MUSAN
music and speech are interferers: music, babble), with ``source``
"musan/<category>/<source>" so a recipe can filter them. ``ANNOTATIONS`` and
``LICENSE`` files are not audio and are ignored. ``data_folder`` is the
folder that holds ``musan/`` or the ``musan`` folder itself.

Example
-------
``python -m data_prepare.musan --data_folder /data --save_folder results/prep --categories noise music``
"""

from __future__ import annotations

from pathlib import Path

from data_prepare.common import (
    AudioItem,
    PrepJob,
    build_parser,
    relative_posix,
    require_audio,
    run_cli,
)

CATEGORIES = ("noise", "music", "speech")


def find_musan_root(data_folder) -> Path:
    """``data_folder/musan`` or ``data_folder`` itself, whichever has category folders."""
    data_folder = Path(data_folder)
    for candidate in (data_folder / "musan", data_folder):
        if any((candidate / category).is_dir() for category in CATEGORIES):
            return candidate
    raise FileNotFoundError(
        f"no MUSAN corpus in {data_folder}: looked for {data_folder / 'musan'}/{{noise,music,speech}} "
        f"and {data_folder}/{{noise,music,speech}}"
    )


def musan_items(data_root, categories=("noise",), exclude=()) -> list[AudioItem]:
    """Noise items of the chosen MUSAN categories; raise if a category folder is missing."""
    data_root = Path(data_root).resolve()
    musan_root = find_musan_root(data_root)
    items = []
    for category in categories:
        folder = musan_root / category
        if not folder.is_dir():
            raise FileNotFoundError(f"MUSAN category folder {folder} not found")
        for path in require_audio(folder, f"MUSAN {category} folder", exclude=exclude):
            sub = path.relative_to(folder).parts
            source = f"musan/{category}" + (f"/{sub[0]}" if len(sub) > 1 else "")
            items.append(
                AudioItem(
                    path=path, rel_path=relative_posix(path, data_root), kind="noise", source=source
                )
            )
    return items


def prepare_musan(
    data_folder,
    save_folder,
    categories=("noise",),
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
    skip_prep=False,
    force=False,
) -> dict:
    """Write ``noise_{train,valid,test}.json`` from MUSAN.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``musan/`` (or the ``musan`` folder itself).
    save_folder : str or Path
        Output folder (manifests, ``bad_files_musan.tsv``, resampled copies).
    categories : tuple of str
        MUSAN categories to include among "noise", "music", "speech".
    valid_ratio, test_ratio : float
        Fractions of files for valid and test.
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
        ``{("noise", split): manifest_path}``.
    """
    if not categories or set(categories) - set(CATEGORIES):
        raise ValueError(f"categories={categories!r}: expected a non-empty subset of {CATEGORIES}")
    categories = [c for c in CATEGORIES if c in categories]
    job = PrepJob(
        "musan", data_folder, save_folder, ("noise",), "prepare_musan",
        valid_ratio=valid_ratio, test_ratio=test_ratio, seed=seed, sample_rate=sample_rate,
        categories=categories,
    )  # fmt: skip
    return job.execute(
        lambda: musan_items(job.data_root, categories, exclude=[job.save_folder]),
        num_workers,
        skip_prep,
        force,
    )


def main(argv=None):
    """Command line: ``python -m data_prepare.musan --data_folder D --save_folder S``."""
    parser = build_parser("Prepare MUSAN noise manifests.")
    parser.add_argument("--categories", nargs="+", default=["noise"], choices=list(CATEGORIES))
    return run_cli(prepare_musan, parser, argv)


if __name__ == "__main__":
    main()
