"""Target-speaker-extraction triplets from LibriSpeech (SpEx+; reused for 2-speaker separation).

``prepare_librispeech_mixtures`` runs :func:`prepare_speech_splits`
(speaker-disjoint ``speech_{train,valid,test}.json`` in ``save_folder``; for
LibriSpeech :func:`data_prepare.librispeech.prepare_librispeech`:
``train-clean-100`` for training, ``dev-clean`` speakers for validation,
``test-clean`` speakers for test; for a plain corpus root, ``speech/<speaker>/...``,
:func:`data_prepare.plain.prepare_plain_speech`: speakers split by
``valid_ratio`` / ``test_ratio``), then :func:`write_triplets` for each split
into ``save_folder/triplets_{split}/``, and writes
``save_folder/train_speakers.json`` (the sorted training speakers that can be
targets: the classes of the speaker-classification head). With ``noise``,
noise manifests are prepared into ``save_folder/noise/`` (MUSAN or DNS layout
of the same ``data_folder``) and noise is added to every mix.

How one triplet is drawn (speakers, segments, levels, TIR/SNR, clipping) is
described in :mod:`custom_modules.data.triplets`. In short: every source is
loudness-normalised to ``loudness_lufs`` (default -20 LUFS) on the segment
that is written, then the interferer is attenuated by ``tir`` dB; the
reference is a different utterance of the target speaker; the default length
policy ``"shortest"`` cuts target and interferer to the shorter of the two.

Files of a triplet set (32-bit float WAV by default, or 16-bit PCM)::

    out_dir/mix/<ID>-mixed.wav
    out_dir/refs/<ID>-ref.wav
    out_dir/targets/<ID>-target.wav
    out_dir/interferers/<ID>-interferer.wav     (save_interferer=True only)
    out_dir/manifest.json   {ID: {"mix": "{save_root}/mix/<ID>-mixed.wav", "ref": ...,
                                  "target": ..., "target_speaker", "interferer_speaker",
                                  "duration", "sr", offsets, gains, LUFS, TIR...}}
    out_dir/manifest.csv    the same, one row per ID, paths relative to out_dir
    out_dir/triplet_options.json   what made the set (skip-if-done)

Sample format (``subtype``): ``"FLOAT"`` (default) keeps every written
source at exactly ``loudness_lufs`` (mix samples may exceed 1, which float WAV
holds); ``"PCM_16"`` halves the disk space but then a mix whose peak would
exceed 0.99 is scaled down together with its sources (the reference alone),
as recorded by ``clip_gain_db`` / ``ref_clip_gain_db``: at -20 LUFS and 0 dB
TIR about half the mixes of real LibriSpeech speech are (by up to ~6 dB).
Mixes are exact sums in both formats: target, interferer and noise are
rounded to the output format first (float32, or the 16-bit grid) and the mix
is their sum in that format, so ``mix - target - interferer`` read back is
the (unsaved) noise, or zero. ``<ID>`` is
``<index>_<target speaker>_<interferer speaker>``.

Example
-------
``python -m custom_modules.data.librispeech_mixtures --data_folder /data --save_folder results/tse_prep --num_train 20000``
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from custom_modules.audio.files import atomic_write_json
from custom_modules.data.datasets import OnTheFlyTripletDataset
from custom_modules.data.triplet_writer import SUBTYPES, triplet_file, write_triplets
from custom_modules.data.triplets import TripletMaker
from data_prepare.common import CLI_ERRORS, add_force_and_verbose, cli_error_exit
from data_prepare.librispeech import prepare_librispeech
from data_prepare.plain import is_plain_root, prepare_plain_speech

__all__ = [
    "OnTheFlyTripletDataset",
    "check_speaker_disjoint",
    "main",
    "prepare_librispeech_mixtures",
    "prepare_speech_splits",
    "triplet_file",
    "write_triplets",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
NOISE_SOURCES = ("musan", "dns")
# Command-line options that go to the triplet maker (TripletMaker.from_manifests).
MAKER_OPTIONS = (
    "loudness_lufs", "tir_db_range", "length_policy", "max_sec", "ref_max_sec", "snr_db_range"
)  # fmt: skip


def _prepare_noise(source, data_folder, noise_folder, seed, sr, num_workers, force=False):
    """Noise manifests ``{split: path}`` from the MUSAN or DNS layout of ``data_folder``."""
    if source == "musan":
        from data_prepare.musan import prepare_musan

        paths = prepare_musan(
            data_folder,
            noise_folder,
            seed=seed,
            sample_rate=sr,
            num_workers=num_workers,
            force=force,
        )
    elif source == "dns":
        from data_prepare.dns import prepare_dns

        paths = prepare_dns(
            data_folder,
            noise_folder,
            seed=seed,
            sample_rate=sr,
            num_workers=num_workers,
            kinds=("noise",),
            force=force,
        )
    else:
        raise ValueError(f"noise must be False, True, or one of {NOISE_SOURCES}, got {source!r}")
    return {split: paths[("noise", split)] for split in SPLITS}


def prepare_speech_splits(
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
    """Speaker-disjoint speech manifests ``{split: path}`` of LibriSpeech or a plain corpus root.

    The layout decides: a ``speech/`` folder in ``data_folder`` is a plain
    corpus root (:func:`data_prepare.plain.prepare_plain_speech`: speakers
    split by ``valid_ratio`` / ``test_ratio``; ``splits`` is not used);
    anything else is read as LibriSpeech
    (:func:`data_prepare.librispeech.prepare_librispeech`: the official
    ``splits``; the ratios carve valid/test speakers out of training only
    when no ``dev-*`` / ``test-*`` split is listed). Both write
    ``speech_{train,valid,test}.json`` (entries with ``speaker``) into
    ``save_folder``.
    """
    common = dict(
        valid_ratio=valid_ratio,
        test_ratio=test_ratio,
        seed=seed,
        sample_rate=sample_rate,
        num_workers=num_workers,
        skip_prep=skip_prep,
        force=force,
    )
    if is_plain_root(data_folder):
        paths = prepare_plain_speech(data_folder, save_folder, **common)
    else:
        paths = prepare_librispeech(data_folder, save_folder, splits=splits, **common)
    return {split: paths[("speech", split)] for split in SPLITS}


def prepare_librispeech_mixtures(
    data_folder,
    save_folder,
    maker=None,
    num_train=20000,
    num_valid=5000,
    num_test=3000,
    seed=1234,
    sr=16000,
    noise=False,
    save_interferer=False,
    splits=("train-clean-100", "dev-clean", "test-clean"),
    skip_prep=False,
    num_workers=1,
    progress=True,
    subtype="FLOAT",
    force=False,
    valid_ratio=0.1,
    test_ratio=0.1,
) -> dict:
    """LibriSpeech manifests, then train/valid/test triplet sets (see module docstring).

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``LibriSpeech/`` (and ``musan/`` or a DNS layout for
        noise), or a plain corpus root (``speech/<speaker>/...``).
    save_folder : str or Path
        Output: ``speech_*.json``, ``triplets_{split}/``, ``train_speakers.json``
        and ``noise/``.
    maker : callable, optional
        ``maker(speech_manifest, noise_manifest=...)`` returns the
        :class:`~custom_modules.data.triplets.TripletMaker` of a split: a
        partial of :meth:`~custom_modules.data.triplets.TripletMaker.from_manifests`
        holding the triplet options (a recipe YAML's ``triplet_maker``;
        its ``sr`` must be ``sr``). Default: that method at ``sr`` with
        its defaults (-20 LUFS, 0 dB TIR, ``"shortest"``, whole utterances).
    num_train, num_valid, num_test : int
        Triplets per split (0 skips the split).
    seed : int
        Seed of the train set; valid and test use ``seed + 1`` and ``seed + 2``.
    sr : int
        Sample rate of the speech (and noise) manifests (LibriSpeech is
        resampled once for another rate).
    noise : bool or str
        ``False``: no noise; ``"musan"`` (or ``True``) / ``"dns"``: prepare
        noise manifests from that layout of ``data_folder`` and add noise
        (at the maker's ``snr_db_range``).
    save_interferer, subtype
        As in :func:`write_triplets` (every split).
    splits : tuple of str
        LibriSpeech splits given to ``prepare_librispeech``.
    valid_ratio, test_ratio : float
        Fractions of the speakers of a plain corpus root for validation and
        test (LibriSpeech: only when ``splits`` has no ``dev-*`` / ``test-*``).
    skip_prep : bool
        Do nothing; return the manifest paths.
    num_workers : int
        Worker processes of the manifest preparation and the triplet writer.
    progress : bool
        Show progress bars.
    force : bool
        Prepare the speech and noise manifests again even when done (the
        triplet sets keep their own skip-if-done check).

    Returns
    -------
    dict
        ``{split: triplet manifest path}`` for the splits with triplets.
    """
    save_folder = Path(save_folder)
    counts = {"train": int(num_train), "valid": int(num_valid), "test": int(num_test)}
    outputs = {
        split: save_folder / f"triplets_{split}" / "manifest.json"
        for split, count in counts.items()
        if count > 0
    }
    if skip_prep:
        return outputs
    if noise is True:
        noise = "musan"
    if noise and noise not in NOISE_SOURCES:
        raise ValueError(f"noise must be False, True, or one of {NOISE_SOURCES}, got {noise!r}")
    if maker is None:
        maker = functools.partial(TripletMaker.from_manifests, sr=sr)
    speech = prepare_speech_splits(
        data_folder,
        save_folder,
        splits=splits,
        valid_ratio=valid_ratio,
        test_ratio=test_ratio,
        seed=seed,
        sample_rate=sr,
        num_workers=num_workers,
        force=force,
    )
    noise_manifests = {}
    if noise:
        noise_manifests = _prepare_noise(
            noise, data_folder, save_folder / "noise", seed, sr, num_workers, force
        )
    makers = {
        split: maker(speech[split], noise_manifest=noise_manifests.get(split))
        for split in SPLITS
        if counts[split]
    }
    check_speaker_disjoint({split: m.pool.speakers for split, m in makers.items()})
    if "train" in makers:
        atomic_write_json(save_folder / "train_speakers.json", makers["train"].pool.target_speakers)
    for offset, split in enumerate(SPLITS):
        if split not in outputs:
            continue
        write_triplets(
            makers[split],
            save_folder / f"triplets_{split}",
            num_triplets=counts[split],
            seed=int(seed) + offset,
            save_interferer=save_interferer,
            progress=progress,
            num_workers=num_workers,
            subtype=subtype,
        )
    return outputs


def check_speaker_disjoint(speakers_by_split: dict) -> None:
    """Raise ``ValueError`` naming shared speakers when splits are not speaker-disjoint.

    Example
    -------
    >>> check_speaker_disjoint({"train": ["1", "2"], "valid": ["3"]})
    >>> check_speaker_disjoint({"train": ["1", "2"], "valid": ["2"]})
    Traceback (most recent call last):
    ...
    ValueError: speakers ['2'] are in both train and valid
    """
    names = list(speakers_by_split)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(set(speakers_by_split[first]) & set(speakers_by_split[second]))
            if shared:
                raise ValueError(f"speakers {shared[:10]} are in both {first} and {second}")


def main(argv=None) -> dict:
    """Command line; ``python -m custom_modules.data.librispeech_mixtures --help``."""
    parser = argparse.ArgumentParser(
        description="Write SpEx+ triplets (mix, reference, target) from LibriSpeech.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data_folder",
        required=True,
        help="folder holding LibriSpeech/, or a plain corpus root (speech/<speaker>/...)",
    )
    parser.add_argument("--save_folder", required=True, help="output folder")
    parser.add_argument("--num_train", type=int, default=20000, help="training triplets")
    parser.add_argument("--num_valid", type=int, default=5000, help="validation triplets")
    parser.add_argument("--num_test", type=int, default=3000, help="test triplets")
    parser.add_argument("--seed", type=int, default=1234, help="seed (valid: +1, test: +2)")
    parser.add_argument("--sr", type=int, default=16000, help="sample rate (Hz)")
    parser.add_argument("--loudness_lufs", type=float, default=-20.0, help="source level (LUFS)")
    parser.add_argument(
        "--tir_db_range",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("LOW", "HIGH"),
        help="target-to-interferer ratio range (dB)",
    )
    parser.add_argument("--length_policy", choices=("shortest", "longest"), default="shortest")
    parser.add_argument("--max_sec", type=float, default=None, help="longest source segment (s)")
    parser.add_argument("--ref_max_sec", type=float, default=None, help="longest reference (s)")
    parser.add_argument(
        "--noise",
        choices=("none",) + NOISE_SOURCES,
        default="none",
        help="add noise from the MUSAN or DNS layout of data_folder",
    )
    parser.add_argument(
        "--snr_db_range",
        type=float,
        nargs=2,
        default=(5.0, 15.0),
        metavar=("LOW", "HIGH"),
        help="target-to-noise loudness ratio range (dB), with --noise",
    )
    parser.add_argument("--save_interferer", action="store_true", help="also write interferers/")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["train-clean-100", "dev-clean", "test-clean"],
        help="LibriSpeech splits",
    )
    for name in ("valid_ratio", "test_ratio"):
        parser.add_argument(
            f"--{name}", type=float, default=0.1, help="fraction of a plain root's speakers"
        )
    parser.add_argument("--num_workers", type=int, default=1, help="writer processes")
    parser.add_argument(
        "--subtype",
        choices=SUBTYPES,
        default="FLOAT",
        help="WAV sample format (PCM_16: half the disk, loud mixes scaled down)",
    )
    parser.add_argument("--skip_prep", action="store_true", help="do nothing")
    add_force_and_verbose(parser)
    args = vars(parser.parse_args(argv))
    verbose = args.pop("verbose")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args["noise"] = False if args["noise"] == "none" else args["noise"]
    args["maker"] = functools.partial(
        TripletMaker.from_manifests,
        sr=args["sr"],
        **{key: args.pop(key) for key in MAKER_OPTIONS},
    )
    try:
        outputs = prepare_librispeech_mixtures(**args)
    except CLI_ERRORS as err:
        cli_error_exit(err, verbose)
    for split, path in outputs.items():
        print(f"{split}\t{path}")
    return outputs


if __name__ == "__main__":
    main()
