"""Data of the target-speaker-extraction recipe (SpEx+): speakers, triplet sets, datasets.

* Speakers: speaker-disjoint ``speech_{train,valid,test}.json`` in
  ``<prep_folder>/speech/`` by
  :func:`custom_modules.data.librispeech_mixtures.prepare_speech_splits`, from the
  layout of ``data_folder``: a plain corpus root (``speech/<speaker>/...``,
  ``MANIFEST.tsv`` may name the speakers; speakers split by ``valid_ratio`` /
  ``test_ratio`` with ``split_seed``), else LibriSpeech (``librispeech_splits``).
  The training speakers that can be targets are the classes of the speaker
  head (``<prep_folder>/train_speakers.json``).
* Triplets, drawn by the YAML's ``triplet_maker`` (a partial of
  :meth:`custom_modules.data.triplets.TripletMaker.from_manifests` holding the
  triplet options: every source at ``loudness_lufs``, interferer at ``-tir``,
  reference = another utterance of the target speaker, length policy,
  longest reference, SNR range) on each split's manifests, the longest
  mixture being ``crop_sec`` for training and ``eval_crop_sec`` for
  validation/test (:func:`build_triplet_maker`): fixed, seeded
  validation/test sets written once
  (``custom_modules.data.librispeech_mixtures.write_triplets``), and for training
  either a fixed set (``train_mode: fixed``, ``num_train_triplets``) or fresh
  triplets every epoch (``train_mode: onthefly``).
* :class:`TirCurriculum`: the TIR range of the on-the-fly training triplets,
  moving from an easy range to ``tir_db_range`` over the first
  ``tir_curriculum_fraction`` of the training budget (the Brain applies it
  every epoch, see :mod:`custom_modules.training.tse`); valid/test stay at ``tir_db_range``.

Keys read: ``data_folder``, ``prep_folder``, ``skip_prep``,
``librispeech_splits``, ``valid_ratio``, ``test_ratio``, ``split_seed``,
``sample_rate``, ``add_noise``, ``triplet_maker``, ``crop_sec``,
``eval_crop_sec``, ``train_mode``, ``num_train_triplets``, ``train_set_seed``,
``num_valid_examples``, ``num_test_examples``, ``valid_set_seed``,
``test_set_seed``, ``prep_workers``, ``seed``, ``tir_curriculum_fraction``.
"""

from __future__ import annotations

from pathlib import Path

from custom_modules.audio.files import atomic_write_json
from custom_modules.data.datasets import OnTheFlyTripletDataset, triplet_dataset
from custom_modules.data.librispeech_mixtures import (
    check_speaker_disjoint,
    prepare_speech_splits,
    write_triplets,
)
from custom_modules.data.ranges import check_range
from data_prepare.plain import is_plain_root

# Dataset outputs renamed to what the Brain reads (batch.mixture, batch.reference, batch.target).
KEYS = {"mix": "mixture", "ref": "reference"}
SPLITS = ("train", "valid", "test")
TRAIN_MODES = ("fixed", "onthefly")


def speakers_file(hparams) -> Path:
    """Sorted training speakers that can be targets: the classes of the speaker head."""
    return Path(hparams["prep_folder"]) / "train_speakers.json"


def triplet_manifest(hparams, split) -> Path:
    """Manifest of the written ``split`` triplet set."""
    return Path(hparams["prep_folder"]) / f"triplets_{split}" / "manifest.json"


def speech_manifest_path(prep_folder, split) -> Path:
    """``<prep_folder>/speech/speech_<split>.json`` (where :func:`speech_manifests` writes)."""
    return Path(prep_folder) / "speech" / f"speech_{split}.json"


def speech_manifests(hparams, skip=False) -> dict:
    """``{split: speech manifest}``, speaker-disjoint (plain corpus root or LibriSpeech)."""
    return prepare_speech_splits(
        data_folder=hparams["data_folder"],
        save_folder=Path(hparams["prep_folder"]) / "speech",
        splits=hparams["librispeech_splits"],
        valid_ratio=hparams["valid_ratio"],
        test_ratio=hparams["test_ratio"],
        seed=hparams["split_seed"],
        sample_rate=hparams["sample_rate"],
        skip_prep=skip or hparams["skip_prep"],
    )


def noise_manifests(hparams, skip=False) -> dict:
    """``{split: noise manifest}`` (MUSAN layout of data_folder) when ``add_noise``, else {}."""
    if not hparams["add_noise"]:
        return {}
    if is_plain_root(hparams["data_folder"]):
        raise ValueError(
            f"add_noise reads MUSAN (<data_folder>/musan); {hparams['data_folder']} is a plain "
            "corpus root, whose noise/ the triplet recipes do not use: set add_noise: False"
        )
    from data_prepare.musan import prepare_musan

    paths = prepare_musan(
        hparams["data_folder"],
        Path(hparams["prep_folder"]) / "noise",
        seed=hparams["split_seed"],
        sample_rate=hparams["sample_rate"],
        skip_prep=skip or hparams["skip_prep"],
    )
    return {split: paths[("noise", split)] for split in SPLITS}


def check_train_mode(hparams) -> None:
    """Raise ``ValueError`` for an unknown ``train_mode`` or a curriculum on a fixed set."""
    mode = hparams["train_mode"]
    if mode not in TRAIN_MODES:
        raise ValueError(f"train_mode must be 'fixed' or 'onthefly', got {mode!r}")
    if float(hparams["tir_curriculum_fraction"]) > 0 and mode != "onthefly":
        raise ValueError(
            "tir_curriculum_fraction > 0 draws training triplets as training goes: it needs "
            "train_mode: onthefly (a fixed training set is written once)"
        )


def build_triplet_maker(hparams, split, speech, noise):
    """The YAML's ``triplet_maker`` on the ``split`` manifests (longest mixture: ``crop_sec``
    for train, ``eval_crop_sec`` else); ``speech`` / ``noise``: ``{split: manifest}``."""
    max_sec = hparams["crop_sec"] if split == "train" else hparams["eval_crop_sec"]
    return hparams["triplet_maker"](speech[split], noise_manifest=noise.get(split), max_sec=max_sec)


def prepare_tse_data(hparams, progress=True) -> None:
    """Manifests, training speakers and triplet sets (run it through ``run_on_main``)."""
    check_train_mode(hparams)
    speech, noise = speech_manifests(hparams), noise_manifests(hparams)
    makers = {split: build_triplet_maker(hparams, split, speech, noise) for split in SPLITS}
    check_speaker_disjoint({split: maker.pool.speakers for split, maker in makers.items()})
    atomic_write_json(speakers_file(hparams), makers["train"].pool.target_speakers)
    sets = {
        "valid": (hparams["num_valid_examples"], hparams["valid_set_seed"]),
        "test": (hparams["num_test_examples"], hparams["test_set_seed"]),
    }
    if hparams["train_mode"] == "fixed":
        sets["train"] = (hparams["num_train_triplets"], hparams["train_set_seed"])
    for split, (count, seed) in sets.items():
        write_triplets(
            makers[split],
            triplet_manifest(hparams, split).parent,
            num_triplets=count,
            seed=seed,
            progress=progress,
            # Worker processes pay for their start-up only on large sets.
            num_workers=hparams["prep_workers"] if count >= 200 else 1,
        )


def tse_datasets(hparams, speakers) -> tuple:
    """(train, valid, test) datasets with keys id, mixture, reference, target[, speaker_index]."""
    check_train_mode(hparams)
    if hparams["train_mode"] == "onthefly":
        speech, noise = speech_manifests(hparams, skip=True), noise_manifests(hparams, skip=True)
        train = OnTheFlyTripletDataset(
            build_triplet_maker(hparams, "train", speech, noise),
            length=hparams["num_train_triplets"],
            seed=hparams["seed"],
            speakers=speakers,
            keys=KEYS,
        )
    else:
        train = triplet_dataset(triplet_manifest(hparams, "train"), speakers=speakers, keys=KEYS)
    # Validation batches sorted by length: less padding (gLN statistics include padding).
    valid = triplet_dataset(triplet_manifest(hparams, "valid"), keys=KEYS)
    valid = valid.filtered_sorted(sort_key="duration")
    test = triplet_dataset(triplet_manifest(hparams, "test"), keys=KEYS)
    return train, valid, test


class TirCurriculum:
    """Target-to-interferer ratio range of the training triplets as training progresses.

    At progress 0 the range is ``start_range`` (easy: the target louder);
    both bounds move linearly to ``final_range`` (the recipe's
    ``tir_db_range``) until progress ``fraction``, and stay there after.
    ``fraction <= 0`` disables it (always ``final_range``). Progress is the
    fraction of the training budget used
    (:meth:`custom_modules.training.schedules.TimeLimitedEpochCounter.progress`).

    Example
    -------
    >>> curriculum = TirCurriculum(start_range=(5, 10), final_range=(0, 0), fraction=0.5)
    >>> curriculum.range_at(0.0), curriculum.range_at(0.25), curriculum.range_at(0.9)
    ((5.0, 10.0), (2.5, 5.0), (0.0, 0.0))
    """

    def __init__(self, start_range, final_range, fraction):
        self.start = check_range(start_range, "tir_curriculum_start")
        self.final = check_range(final_range, "tir_db_range")
        self.fraction = float(fraction)
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"tir_curriculum_fraction must be in [0, 1], got {fraction}")

    @property
    def enabled(self) -> bool:
        """Whether the range moves at all."""
        return self.fraction > 0

    def range_at(self, progress: float) -> tuple:
        """``(low, high)`` TIR range in dB at ``progress`` in [0, 1]."""
        if not self.enabled or progress >= self.fraction:
            return self.final
        t = max(float(progress), 0.0) / self.fraction
        return tuple(float(s + t * (f - s)) for s, f in zip(self.start, self.final, strict=True))
