"""Data of two-speaker separation recipes: LibriSpeech mixtures, chunks, whole utterances.

* :func:`prepare_separation_data`: speech manifests (LibriSpeech, or a plain
  corpus root ``speech/<speaker>/...`` whose speakers are split by
  ``valid_ratio`` / ``test_ratio``) and the train/valid/test mixture sets,
  written once by
  :func:`custom_modules.data.librispeech_mixtures.prepare_librispeech_mixtures`
  with the interferer saved (``s1`` = its target, ``s2`` = its interferer;
  the mixture is their exact sum, plus noise when ``noise`` is set), at
  ``sample_rate`` (LibriSpeech is resampled once for 8 kHz). How a mixture
  is drawn (levels, TIR/SNR ranges, length policy, longest mixture) is the
  YAML's ``triplet_maker``, a partial of
  :meth:`custom_modules.data.triplets.TripletMaker.from_manifests`.
* :class:`RandomChunkDataset`: training items, a random ``crop_sec`` chunk of
  every mixture each epoch, reproducible per ``(seed, epoch, index)``.
* :func:`whole_utterance_dataset`: validation and test on whole utterances,
  never cut to a chunk.

Keys read by :func:`prepare_separation_data` and :func:`separation_datasets`:
``data_folder``, ``prep_folder``, ``skip_prep``, ``librispeech_splits``,
``valid_ratio``, ``test_ratio``,
``num_train_mixtures``, ``num_valid_examples``, ``num_test_examples``,
``data_seed``, ``sample_rate``, ``triplet_maker``, ``noise``,
``prep_workers``, ``crop_sec``, ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes

from custom_modules.audio.files import load_manifest, read_audio

# Dataset key -> manifest field of the mixture writer.
SIGNAL_FIELDS = {"mixture": "mix", "s1": "target", "s2": "interferer"}


def mixture_manifest(hparams, split) -> Path:
    """``manifest.json`` of the written ``split`` set ("train", "valid" or "test")."""
    return Path(hparams["prep_folder"]) / f"triplets_{split}" / "manifest.json"


def prepare_separation_data(hparams) -> dict:
    """Write (once) the two-speaker sets; run it through ``run_on_main``.

    Returns ``{split: manifest path}``.
    """
    from custom_modules.data.librispeech_mixtures import prepare_librispeech_mixtures

    return prepare_librispeech_mixtures(
        data_folder=hparams["data_folder"],
        save_folder=hparams["prep_folder"],
        num_train=hparams["num_train_mixtures"],
        num_valid=hparams["num_valid_examples"],
        num_test=hparams["num_test_examples"],
        maker=hparams["triplet_maker"],
        seed=hparams["data_seed"],
        sr=hparams["sample_rate"],
        noise=hparams["noise"],
        save_interferer=True,
        splits=tuple(hparams["librispeech_splits"]),
        valid_ratio=hparams["valid_ratio"],
        test_ratio=hparams["test_ratio"],
        skip_prep=hparams["skip_prep"],
        num_workers=hparams["prep_workers"],
        progress=False,
    )


def _checked_entries(manifest_path, sr=None) -> dict:
    """Manifest entries with every field :data:`SIGNAL_FIELDS` needs, paths resolved."""
    data = load_manifest(manifest_path)
    if not data:
        raise ValueError(f"{manifest_path}: empty manifest")
    for key, entry in data.items():
        missing = [f for f in (*SIGNAL_FIELDS.values(), "duration", "sr") if f not in entry]
        if missing:
            hint = " (written without save_interferer=True?)" if "interferer" in missing else ""
            raise ValueError(f"{manifest_path}: entry {key!r} has no {', '.join(missing)}{hint}")
        if sr is not None and int(entry["sr"]) != int(sr):
            raise ValueError(
                f"{manifest_path}: entry {key!r} is at {entry['sr']} Hz, expected {sr} Hz"
            )
    return data


class RandomChunkDataset(torch.utils.data.Dataset):
    """Random fixed-length chunks of written mixtures, new ones every epoch.

    Item ``i`` is a ``crop_sec`` chunk of mixture ``i`` (sorted ids) at an
    offset drawn by a generator seeded with ``SeedSequence([seed, epoch, i])``:
    the same for any ``num_workers`` and DDP world size (a distributed
    sampler only changes which rank reads it). Mixtures shorter than the
    chunk are returned whole (the batch pads them with zeros).

    Arguments
    ---------
    manifest_path : str or Path
        A set written with the interferers (see the module docstring).
    crop_sec : float
        Chunk length in seconds.
    seed : int
        Base seed.
    sr : int, optional
        Expected sample rate (checked).

    Example
    -------
    >>> import json, soundfile as sf
    >>> folder = getfixture("tmp_path")
    >>> entry = {"sr": 8000, "duration": 1.0}
    >>> for kind in ("mix", "target", "interferer"):
    ...     sf.write(str(folder / f"{kind}.wav"), np.zeros(8000), 8000)
    ...     entry[kind] = str(folder / f"{kind}.wav")
    >>> _ = (folder / "manifest.json").write_text(json.dumps({"a": entry}))
    >>> item = RandomChunkDataset(folder / "manifest.json", crop_sec=0.5)[0]
    >>> sorted(item), item["mixture"].shape
    (['id', 'mixture', 's1', 's2'], torch.Size([4000]))
    """

    def __init__(self, manifest_path, crop_sec, seed=0, sr=None):
        data = _checked_entries(manifest_path, sr)
        self.ids = sorted(data)
        self.entries = [data[key] for key in self.ids]
        self.crop_sec = float(crop_sec)
        if self.crop_sec <= 0:
            raise ValueError(f"crop_sec must be > 0, got {crop_sec}")
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Draw the chunks of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __getitem__(self, index):
        entry = self.entries[index]
        sr = int(entry["sr"])
        frames = int(round(float(entry["duration"]) * sr))
        crop = max(1, int(round(self.crop_sec * sr)))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, int(index)]))
        start = int(rng.integers(0, frames - crop + 1)) if frames > crop else 0
        stop = min(start + crop, frames)
        item = {"id": self.ids[index]}
        for key, field in SIGNAL_FIELDS.items():
            samples, _ = read_audio(entry[field], start=start, stop=stop, expected_sr=sr)
            item[key] = torch.from_numpy(samples)
        return item


def whole_utterance_dataset(manifest_path, sr=None) -> DynamicItemDataset:
    """Whole mixtures with their sources: ``id``, ``mixture``, ``s1``, ``s2``, ``tir_db``.

    ``tir_db`` is the level of ``s1`` relative to ``s2`` (dB) when the
    manifest records it, else NaN.
    """
    data = _checked_entries(manifest_path, sr)

    @takes(*SIGNAL_FIELDS.values(), "sr")
    @provides(*(f"{key}_sig" for key in SIGNAL_FIELDS))
    def read_signals(*paths_and_sr):
        *paths, file_sr = paths_and_sr
        for path in paths:
            yield torch.from_numpy(read_audio(path, expected_sr=int(file_sr))[0])

    for entry in data.values():
        entry.setdefault("tir_db", float("nan"))
    dataset = DynamicItemDataset(data, dynamic_items=[read_signals])
    outputs = {"id": "id", "tir_db": "tir_db"}
    outputs.update({key: f"{key}_sig" for key in SIGNAL_FIELDS})
    dataset.set_output_keys(outputs)
    return dataset


def separation_datasets(hparams):
    """(train, valid, test): random training chunks and whole-utterance valid/test sets."""
    sr = hparams["sample_rate"]
    train = RandomChunkDataset(
        mixture_manifest(hparams, "train"), hparams["crop_sec"], seed=hparams["seed"], sr=sr
    )
    valid, test = (
        whole_utterance_dataset(mixture_manifest(hparams, s), sr) for s in ("valid", "test")
    )
    return train, valid, test
