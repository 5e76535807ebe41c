"""Data pipeline shared by the enhancement recipes (UNet-TCM, spectral masking...).

* Manifests: :func:`data_prepare.dns.prepare_dns` on ``data_folder`` (a
  DNS-style root, the original DNS layout, or the demo corpus) into
  ``prep_folder``; skipped when already done with the same options.
* Training: mixtures drawn on the fly from the train manifests by the mixer
  (:class:`custom_modules.mixing.OnTheFlyDataset`), new ones every epoch.
* Validation and test: written once by the *same* mixer from a seed on the
  valid/test manifests (:func:`custom_modules.mixing.write_fixed_set`), so
  best-checkpoint selection measures the model and not the draw.

The samplers and the mixer are partial constructors in the recipe YAML
(``!name:``) that these functions complete with each split's manifests, so
every number stays in the YAML. Keys read: ``data_folder``, ``prep_folder``,
``skip_prep``, ``valid_ratio``, ``test_ratio``, ``split_seed``,
``sample_rate``, ``crop_sec``, ``eval_crop_sec``, ``speech_sampler``,
``noise_sampler``, ``rir_sampler``, ``mixer``, ``num_valid_examples``,
``num_test_examples``, ``valid_set_seed``, ``test_set_seed``, ``seed``,
``train_batches_per_epoch``, ``batch_size``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes

from custom_modules.files import load_manifest, read_audio
from custom_modules.mixing import OnTheFlyDataset, write_fixed_set
from data_prepare.dns import prepare_dns

SPLITS = ("train", "valid", "test")


def fixed_set_folder(hparams, split):
    """Folder of the fixed ``split`` ("valid" or "test") set."""
    return Path(hparams["prep_folder"]) / f"fixed_{split}"


def build_mixer(hparams, split):
    """The YAML's mixer on the ``split`` manifests (crops: ``crop_sec`` for train)."""
    prep = Path(hparams["prep_folder"])
    crop = hparams["crop_sec"] if split == "train" else hparams["eval_crop_sec"]
    root = hparams["data_folder"]
    speech = hparams["speech_sampler"](
        prep / f"speech_{split}.json", data_root=root, crop_size_sec=crop
    )
    noise = hparams["noise_sampler"](
        prep / f"noise_{split}.json", data_root=root, crop_size_sec=crop
    )
    rirs = hparams["rir_sampler"](prep / f"rir_{split}.json", data_root=root)
    return hparams["mixer"](speech, noise, rirs)


def prepare_enhancement_data(hparams):
    """Manifests and fixed valid/test sets (run it through ``run_on_main``)."""
    prepare_dns(
        data_folder=hparams["data_folder"],
        save_folder=hparams["prep_folder"],
        valid_ratio=hparams["valid_ratio"],
        test_ratio=hparams["test_ratio"],
        seed=hparams["split_seed"],
        sample_rate=hparams["sample_rate"],
        skip_prep=hparams["skip_prep"],
    )
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
    """A ``DynamicItemDataset`` over a fixed set: ``id``, ``mixture``, ``target``, ``snr_db``."""
    data = load_manifest(manifest_path)

    @takes("mixture", "target")
    @provides("mixture_sig", "target_sig")
    def read_pair(mixture_path, target_path):
        yield torch.from_numpy(read_audio(mixture_path)[0])
        yield torch.from_numpy(read_audio(target_path)[0])

    dataset = DynamicItemDataset(data, dynamic_items=[read_pair])
    dataset.set_output_keys(
        {"id": "id", "mixture": "mixture_sig", "target": "target_sig", "snr_db": "snr_db"}
    )
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
