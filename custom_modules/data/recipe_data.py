"""Data pipeline shared by the enhancement recipes (UNet-TCM, spectral masking...).

* Manifests: :func:`data_prepare.plain.prepare_plain` when ``data_folder``
  is a plain corpus root (``speech/<speaker>/``, ``noise/``, ``rir/``, plus
  the ``PLAIN_CORPUS_KEYS``: extra folders, held-out noise/RIRs, generated
  babble, synthetic noise and rooms), else :func:`data_prepare.dns.prepare_dns`
  (a DNS-style root, the original DNS layout, or the demo corpus), into
  ``prep_folder``; skipped when already done with the same options.
* Training: mixtures drawn on the fly from the train manifests by the mixer
  (:class:`custom_modules.data.mixing.OnTheFlyDataset`), new ones every epoch.
* Validation and test: written once by the *same* mixer from a seed on the
  valid/test manifests (:func:`custom_modules.data.mixing.write_fixed_set`), so
  best-checkpoint selection measures the model and not the draw.

The samplers and the mixer are partial constructors in the recipe YAML
(``!name:``) that these functions complete with each split's manifests, so
every number stays in the YAML. Keys read: ``data_folder``, ``prep_folder``,
``skip_prep``, ``valid_ratio``, ``test_ratio``, ``split_seed``,
``sample_rate``, ``crop_sec``, ``eval_crop_sec``, ``speech_sampler``,
``noise_sampler``, ``rir_sampler``, ``mixer``, ``num_valid_examples``,
``num_test_examples``, ``valid_set_seed``, ``test_set_seed``, ``seed``,
``train_batches_per_epoch``, ``batch_size``, optionally ``eval_<key>`` for
the ``EVAL_RANGE_KEYS``, ``eval_noise_weighting`` (how the fixed sets draw
noise files, see ``SignalSampler``), ``train_noise_mix`` (shares of the
training noise by source: recorded, babble, synthetic...) and, for a plain corpus root, ``PLAIN_CORPUS_KEYS``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes

from custom_modules.audio.files import load_manifest, read_audio
from custom_modules.data.mixing import OnTheFlyDataset, write_fixed_set
from data_prepare.dns import prepare_dns
from data_prepare.plain import is_plain_root, prepare_plain

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# Mixer ranges that the fixed valid/test sets take from ``eval_<key>`` when the YAML has it.
EVAL_RANGE_KEYS = ("noise_gain_range_db", "mixture_gain_range_db")
# YAML keys passed to data_prepare.plain.prepare_plain (same names as its arguments).
PLAIN_CORPUS_KEYS = (
    "extra_noise_folders",
    "extra_rir_folders",
    "noise_valid_ratio",
    "noise_test_ratio",
    "rir_valid_ratio",
    "rir_test_ratio",
    "valid_patterns",
    "test_patterns",
    "babble_speaker_ratio",
    "num_babble_files",
    "babble_sec",
    "num_synthetic_noise_files",
    "synthetic_noise_sec",
    "num_simulated_rirs",
)


def fixed_set_folder(hparams, split):
    """Folder of the fixed ``split`` ("valid" or "test") set."""
    return Path(hparams["prep_folder"]) / f"fixed_{split}"


def split_manifest(hparams, kind, split):
    """Manifest of ``kind`` for ``split``; the training one when that split has none.

    A plain corpus prepared with a noise (or RIR) ratio of 0 for a split has
    no held-out files there: its fixed set then draws from the training files
    (not noise-disjoint), which is logged.
    """
    prep = Path(hparams["prep_folder"])
    path = prep / f"{kind}_{split}.json"
    if split != "train" and kind != "speech" and path.is_file() and not load_manifest(path):
        logger.warning(
            "no %s files held out for %s in %s: the %s set uses the training %s files",
            kind, split, prep, split, kind,
        )  # fmt: skip
        return prep / f"{kind}_train.json"
    return path


def build_mixer(hparams, split):
    """The YAML's mixer on the ``split`` manifests (crops: ``crop_sec`` for train)."""
    crop = hparams["crop_sec"] if split == "train" else hparams["eval_crop_sec"]
    root = hparams["data_folder"]
    speech = hparams["speech_sampler"](
        split_manifest(hparams, "speech", split), data_root=root, crop_size_sec=crop
    )
    weighting = {}
    if split != "train" and "eval_noise_weighting" in hparams:
        weighting["weighting"] = hparams["eval_noise_weighting"]
    if split == "train" and hparams.get("train_noise_mix"):
        weighting["source_mix"] = hparams["train_noise_mix"]
    noise = hparams["noise_sampler"](
        split_manifest(hparams, "noise", split), data_root=root, crop_size_sec=crop, **weighting
    )
    rirs = hparams["rir_sampler"](split_manifest(hparams, "rir", split), data_root=root)
    options = {}
    if split == "train" and hparams.get("train_noise_augmentation") is not None:
        options["noise_augmentation"] = hparams["train_noise_augmentation"]
    if split != "train":  # the fixed sets may have their own ranges (eval_* keys)
        for key in EVAL_RANGE_KEYS:
            if f"eval_{key}" in hparams:
                options[key] = hparams[f"eval_{key}"]
    return hparams["mixer"](speech, noise, rirs, **options)


def prepare_manifests(hparams):
    """Speech/noise/RIR manifests of ``data_folder``: plain layout or DNS layouts."""
    common = dict(
        data_folder=hparams["data_folder"],
        save_folder=hparams["prep_folder"],
        valid_ratio=hparams["valid_ratio"],
        test_ratio=hparams["test_ratio"],
        seed=hparams["split_seed"],
        sample_rate=hparams["sample_rate"],
        skip_prep=hparams["skip_prep"],
    )
    if is_plain_root(hparams["data_folder"]):
        missing = [key for key in PLAIN_CORPUS_KEYS if key not in hparams]
        if missing:
            raise KeyError(
                f"{hparams['data_folder']} is a plain corpus root (speech/, noise/, rir/) but "
                f"the recipe YAML lacks the keys {missing} (see recipes/unet_tcm/hparams)"
            )
        return prepare_plain(**common, **{key: hparams[key] for key in PLAIN_CORPUS_KEYS})
    extras = [k for k in ("extra_noise_folders", "extra_rir_folders") if hparams.get(k)]
    if extras:
        raise ValueError(
            f"{extras} are only read for a plain corpus root (speech/<speaker>/, noise/, "
            f"rir/); {hparams['data_folder']} has a DNS layout"
        )
    return prepare_dns(**common)


def prepare_enhancement_data(hparams):
    """Manifests and fixed valid/test sets (run it through ``run_on_main``)."""
    prepare_manifests(hparams)
    fixed_sets = {
        "valid": (hparams["num_valid_examples"], hparams["valid_set_seed"]),
        "test": (hparams["num_test_examples"], hparams["test_set_seed"]),
    }
    for split, (num_examples, seed) in fixed_sets.items():
        write_fixed_set(
            build_mixer(hparams, split),
            fixed_set_folder(hparams, split),
            num_examples=num_examples,
            seed=seed,
            prefix=f"{split}_",
        )


def fixed_set_dataset(manifest_path):
    """A ``DynamicItemDataset`` over a fixed set.

    Output keys: ``id``, ``mixture``, ``target``, ``snr_db`` and ``condition``
    ("reverberant" when the speech was convolved with a RIR, else "dry"; the
    test report gives its figures per condition too).
    """
    data = load_manifest(manifest_path)

    @takes("mixture", "target")
    @provides("mixture_sig", "target_sig")
    def read_pair(mixture_path, target_path):
        yield torch.from_numpy(read_audio(mixture_path)[0])
        yield torch.from_numpy(read_audio(target_path)[0])

    @takes("speech_rir")
    @provides("condition")
    def speech_condition(speech_rir):
        return "dry" if speech_rir is None else "reverberant"

    dataset = DynamicItemDataset(data, dynamic_items=[read_pair, speech_condition])
    dataset.set_output_keys(
        {"id": "id", "mixture": "mixture_sig", "target": "target_sig", "snr_db": "snr_db",
         "condition": "condition"}
    )  # fmt: skip
    return dataset


def enhancement_datasets(hparams):
    """(train, valid, test): on-the-fly training set and the two fixed sets."""
    train = OnTheFlyDataset(
        build_mixer(hparams, "train"),
        length=hparams["train_batches_per_epoch"] * hparams["batch_size"],
        seed=hparams["seed"],
    )
    valid, test = (
        fixed_set_dataset(fixed_set_folder(hparams, split) / "manifest.json")
        for split in ("valid", "test")
    )
    return train, valid, test
