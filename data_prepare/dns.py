"""Manifests of a DNS Challenge corpus: clean speech, noise and RIRs.

Layouts (relative to ``data_folder``), detected in this order:

* DNS-style root (the UNet-TCM recipe's): speech ``clean_train/**``, noise
  ``musan/noise/<source>/*`` (every MUSAN noise source present), RIRs
  ``impulse_responses_all/{SLR26,SLR28}/...``;
* original DNS Challenge (1-3): ``datasets/clean/**``, ``datasets/noise/**``,
  ``datasets/impulse_responses/{SLR26,SLR28}/...``;
* DNS 4/5 fullband: ``datasets_fullband/clean_fullband/**``,
  ``datasets_fullband/noise_fullband/**``, ``datasets_fullband/impulse_responses/...``.

Speech files named like ``..._reader_01326_...`` get ``speaker`` "01326" and
are split by speaker (no reader in two splits); others are split by file.
DNS originals are 48 kHz: they are resampled once into
``<save_folder>/resampled/`` (16-bit PCM). RIRs are found as in
:mod:`data_prepare.rirs`.

Example
-------
``python -m data_prepare.dns --data_folder /data/DNS --save_folder results/prep``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_prepare.common import (
    AudioItem,
    PrepJob,
    build_parser,
    relative_posix,
    require_audio,
    run_cli,
    speaker_from_name,
)
from data_prepare.rirs import rir_items


@dataclass(frozen=True)
class DnsLayout:
    """Where one DNS layout keeps speech, noise and RIRs (relative to the root)."""

    name: str
    speech: str
    noise: str
    rirs: str


LAYOUTS = (
    DnsLayout("dns-style root", "clean_train", "musan/noise", "impulse_responses_all"),
    DnsLayout("DNS Challenge", "datasets/clean", "datasets/noise", "datasets/impulse_responses"),
    DnsLayout(
        "DNS Challenge fullband",
        "datasets_fullband/clean_fullband",
        "datasets_fullband/noise_fullband",
        "datasets_fullband/impulse_responses",
    ),
)


def detect_layout(data_folder) -> DnsLayout:
    """The layout whose speech folder exists; raise listing what was looked for.

    Example
    -------
    >>> detect_layout("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no DNS corpus in /nonexistent: looked for /nonexistent/clean_train (dns-style root), /nonexistent/datasets/clean (DNS Challenge), /nonexistent/datasets_fullband/clean_fullband (DNS Challenge fullband)
    """
    data_folder = Path(data_folder)
    for layout in LAYOUTS:
        if (data_folder / layout.speech).is_dir():
            return layout
    looked = ", ".join(f"{data_folder / layout.speech} ({layout.name})" for layout in LAYOUTS)
    raise FileNotFoundError(f"no DNS corpus in {data_folder}: looked for {looked}")


def _source(rel_path: str, base: str) -> str:
    # base + first sub-folder, e.g. "clean_train/read_speech", "musan/noise/free-sound".
    parts = Path(rel_path).parent.parts
    depth = len(Path(base).parts) + 1
    return "/".join(parts[:depth])


def _folder_items(data_root: Path, base: str, kind: str, layout: DnsLayout, exclude):
    folder = data_root / base
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{layout.name} layout detected in {data_root}, but its {kind} folder "
            f"{folder} is missing (leave '{kind}' out of kinds= if you do not need it)"
        )
    items = []
    for path in require_audio(folder, f"DNS {kind} folder", exclude=exclude):
        rel_path = relative_posix(path, data_root)
        item = AudioItem(path=path, rel_path=rel_path, kind=kind, source=_source(rel_path, base))
        if kind == "speech":
            speaker = speaker_from_name(path.name)
            if speaker is not None:
                item.fields["speaker"] = speaker
                item.group = f"speaker:{speaker}"
        items.append(item)
    return items


def dns_items(data_root, kinds=("speech", "noise", "rir"), exclude=()) -> list[AudioItem]:
    """Items of every requested kind of the DNS corpus at ``data_root``."""
    data_root = Path(data_root).resolve()
    layout = detect_layout(data_root)
    items = []
    for kind, base in (("speech", layout.speech), ("noise", layout.noise)):
        if kind in kinds:
            items += _folder_items(data_root, base, kind, layout, exclude)
    if "rir" in kinds:
        rir_root = data_root / layout.rirs
        found = rir_items(rir_root, data_root, exclude=exclude) if rir_root.is_dir() else []
        if not found:
            raise FileNotFoundError(
                f"{layout.name} layout detected in {data_root}, but no RIRs under {rir_root} "
                "(expected SLR26/simulated_rirs_48k/... or SLR28/RIRS_NOISES/...; "
                "leave 'rir' out of kinds= if you do not need them)"
            )
        items += found
    return items


def prepare_dns(
    data_folder,
    save_folder,
    valid_ratio=0.1,
    test_ratio=0.1,
    seed=1234,
    sample_rate=16000,
    num_workers=None,
    skip_prep=False,
    force=False,
    kinds=("speech", "noise", "rir"),
) -> dict:
    """Write speech/noise/rir ``_{train,valid,test}.json`` manifests for a DNS corpus.

    Arguments
    ---------
    data_folder : str or Path
        DNS root (any layout of the module docstring).
    save_folder : str or Path
        Output folder (manifests, ``bad_files_dns.tsv``, ``prep_options_dns.json``,
        resampled copies).
    valid_ratio, test_ratio : float
        Fractions for valid and test: of speakers for speech with reader ids,
        of rooms for simulated RIRs, of files otherwise.
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
    kinds : tuple of str
        Which of "speech", "noise", "rir" to prepare.

    Returns
    -------
    dict
        ``{(kind, split): manifest_path}``.
    """
    if not kinds or set(kinds) - {"speech", "noise", "rir"}:
        raise ValueError(f"kinds={kinds!r}: expected a non-empty subset of speech, noise, rir")
    kinds = tuple(k for k in ("speech", "noise", "rir") if k in kinds)
    job = PrepJob(
        "dns", data_folder, save_folder, kinds, "prepare_dns",
        valid_ratio=valid_ratio, test_ratio=test_ratio, seed=seed, sample_rate=sample_rate,
        kinds=list(kinds),
    )  # fmt: skip
    return job.execute(
        lambda: dns_items(job.data_root, kinds, exclude=[job.save_folder]),
        num_workers,
        skip_prep,
        force,
    )


def main(argv=None):
    """Command line: ``python -m data_prepare.dns --data_folder D --save_folder S``."""
    parser = build_parser("Prepare DNS Challenge speech, noise and RIR manifests.")
    parser.add_argument(
        "--kinds", nargs="+", default=["speech", "noise", "rir"], choices=["speech", "noise", "rir"]
    )
    return run_cli(prepare_dns, parser, argv)


if __name__ == "__main__":
    main()
