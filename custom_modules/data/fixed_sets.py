"""Dataset and fixed-set writer of ``custom_modules.data.mixing`` (import them from there).

* ``OnTheFlyDataset``: fresh random mixtures for training, one reproducible
  seed per (seed, rank, epoch, index).
* ``write_fixed_set``: a validation/test set written once from a seed
  (float32 WAVs + JSON manifest), skipped when already complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from custom_modules.audio.files import (
    atomic_write_bytes,
    atomic_write_json,
    check_safe_id,
    read_json,
    recorded_set_manifest,
)
from custom_modules.audio.seeding import derive_seed_sequences

FIXED_SET_FORMAT = 1


def float_wav_bytes(samples, sr: int) -> bytes:
    """A mono float32 WAV file as bytes, identical for identical samples.

    libsndfile adds to float WAVs a ``PEAK`` chunk holding the time of
    writing; it is dropped (it is optional) so that the same samples always
    give the same bytes.

    Example
    -------
    >>> data = float_wav_bytes(np.zeros(4, dtype=np.float32), 16000)
    >>> data[:4], b"PEAK" in data, sf.read(io.BytesIO(data))[0].shape
    (b'RIFF', False, (4,))
    """
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sr, format="WAV", subtype="FLOAT")
    data = buffer.getvalue()
    chunks, position = [], 12  # after "RIFF", size, "WAVE"
    while position + 8 <= len(data):
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        end = position + 8 + size + (size & 1)  # chunks are padded to even sizes
        if data[position : position + 4] != b"PEAK":
            chunks.append(data[position:end])
        position = end
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _distributed_rank() -> int:
    """DDP rank: torch.distributed if initialised, else env ``RANK``, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return int(os.environ.get("RANK", "0"))


class PerItemSeededDataset(torch.utils.data.Dataset):
    """Map-style dataset of random items, each seeded by ``(seed, rank, epoch, index)``.

    The shared seeding of the on-the-fly datasets: the stream does not depend
    on ``num_workers``, no two DataLoader workers or DDP ranks share items, the
    same ``(seed, rank, epoch, index)`` always gives the same item, and
    ``set_epoch`` gives new items each epoch. ``rank`` defaults to the
    ``torch.distributed`` rank when initialised, else env ``RANK``, else 0.
    Subclasses draw item ``index`` from ``self.item_seed(index)``.
    """

    def __init__(self, length, seed=0, rank=None):
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = int(length)
        self.seed = int(seed)
        self.rank = rank
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def item_seed(self, index):
        """``(item id, SeedSequence)`` of item ``index`` in the current epoch on this rank."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        rank = _distributed_rank() if self.rank is None else int(self.rank)
        item_id = f"r{rank}_e{self.epoch}_{int(index):08d}"
        return item_id, np.random.SeedSequence([self.seed, rank, self.epoch, int(index)])


class OnTheFlyDataset(PerItemSeededDataset):
    """A map-style Dataset of fresh random mixtures, reproducible per item.

    Item ``i`` reseeds the mixer with ``SeedSequence([seed, rank, epoch, i])``:
    the stream does not depend on ``num_workers``, no two DataLoader workers
    or DDP ranks share examples, the same ``(seed, rank, epoch, i)`` always
    gives the same example, and ``set_epoch`` gives new mixtures each epoch.
    ``rank`` defaults to the ``torch.distributed`` rank when initialised,
    else env ``RANK``, else 0. Call ``set_epoch`` before creating the
    epoch's DataLoader iterator (with ``persistent_workers=True`` the
    workers keep the epoch they were started with).

    Arguments
    ---------
    sampler : RandomMixtureSampler
        The mixer (each worker process works on its own copy).
    length : int
        Number of examples per epoch.
    seed : int
        Base seed.
    rank : int, optional
        Overrides the detected DDP rank.
    return_metadata : bool
        Add ``"metadata"`` (a dict; collate with SpeechBrain's ``PaddedBatch``
        or a custom collate function, not the default one).

    Example
    -------
    >>> import soundfile as sf
    >>> from custom_modules.data.mixing import RandomMixtureSampler
    >>> from custom_modules.data.sampling import SignalSampler
    >>> folder = getfixture("tmp_path")
    >>> sf.write(str(folder / "s.wav"), np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    >>> mixer = RandomMixtureSampler(
    ...     SignalSampler([str(folder / "s.wav")], crop_size_sec=0.5),
    ...     SignalSampler([str(folder / "s.wav")], crop_size_sec=0.5),
    ...     None, prob_rir_sig=0.0, prob_rir_noise=0.0)
    >>> item = OnTheFlyDataset(mixer, length=4)[0]
    >>> item["id"], item["mixture"].shape, item["target"].dtype
    ('r0_e0_00000000', torch.Size([8000]), torch.float32)
    """

    def __init__(self, sampler, length, seed=0, rank=None, return_metadata=False):
        super().__init__(length, seed=seed, rank=rank)
        self.sampler = sampler
        self.return_metadata = bool(return_metadata)

    def __getitem__(self, index):
        item_id, seed = self.item_seed(index)
        self.sampler.reseed(seed)
        mixture, target, metadata = self.sampler.sampler(return_metadata=True)
        item = {
            "id": item_id,
            "mixture": torch.from_numpy(mixture),
            "target": torch.from_numpy(target),
        }
        if self.return_metadata:
            item["metadata"] = metadata
        return item


def _fixed_set_done(out_dir: Path, options: dict) -> bool:
    """Whether ``out_dir`` holds a complete set made with ``options``."""
    manifest = recorded_set_manifest(
        out_dir, "fixed_set_options.json", options, options["num_examples"]
    )
    return manifest is not None and all(
        (out_dir / kind / f"{check_safe_id(key, out_dir / 'manifest.json')}.wav").is_file()
        for key in manifest
        for kind in ("mixture", "target")
    )


def write_fixed_set(mixture_sampler, out_dir, num_examples, seed, prefix="ex", progress=True):
    """Write a reproducible set of mixtures (validation/test) to disk, once.

    Example ``i`` is drawn after ``mixture_sampler.reseed(child_i)`` where
    ``child_i`` is the i-th child of ``SeedSequence(seed)``, so the set only
    depends on ``seed``, the sampler's parameters and its files, and every
    example can be regenerated alone. Files (float32 WAV, exact samples, so
    ``mixture - target`` is still exactly the noise for a reverberant target):

    * ``out_dir/mixture/<id>.wav`` and ``out_dir/target/<id>.wav``, ids
      ``f"{prefix}{i:06d}"``;
    * ``out_dir/fixed_set_options.json``: seed, size and the sampler's
      ``describe()`` (parameters and a hash of its file lists);
    * ``out_dir/manifest.json`` (atomically, last):
      ``{id: {"mixture": "{save_root}/mixture/<id>.wav", "target": ...,
      "duration": s, "sr": sr, **metadata}}``; ``load_manifest`` resolves it.

    When the options file matches and the manifest and all wavs exist,
    nothing is written. Otherwise the set is regenerated (files of a
    previous set that the new manifest does not list are removed). The
    sampler is left reseeded with the last example's seed.

    Arguments
    ---------
    mixture_sampler : RandomMixtureSampler
    out_dir : str or Path
    num_examples : int
    seed : int
    prefix : str
        Id prefix.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    out_dir = Path(out_dir)
    num_examples = int(num_examples)
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    options = {
        "format": FIXED_SET_FORMAT,
        "seed": int(seed),
        "num_examples": num_examples,
        "prefix": prefix,
        "sampler": mixture_sampler.describe(),
    }
    # Round-trip through JSON so the comparison sees what the file holds.
    options = json.loads(json.dumps(options))
    manifest_path = out_dir / "manifest.json"
    if _fixed_set_done(out_dir, options):
        return manifest_path

    old_ids = []
    if manifest_path.is_file():
        try:
            old_ids = list(read_json(manifest_path))
        except ValueError:
            old_ids = []
        for key in old_ids:  # they name files to delete: nothing outside out_dir
            check_safe_id(key, manifest_path)
        manifest_path.unlink()  # a partial regeneration must never look complete
    sr = mixture_sampler.sr
    manifest = {}
    seeds = derive_seed_sequences(int(seed), num_examples)
    for i in tqdm(range(num_examples), desc=f"fixed set {out_dir.name}", disable=not progress):
        key = f"{prefix}{i:06d}"
        mixture_sampler.reseed(seeds[i])
        mixture, target, metadata = mixture_sampler.sampler(return_metadata=True)
        atomic_write_bytes(out_dir / "mixture" / f"{key}.wav", float_wav_bytes(mixture, sr))
        atomic_write_bytes(out_dir / "target" / f"{key}.wav", float_wav_bytes(target, sr))
        manifest[key] = {
            "mixture": f"{{save_root}}/mixture/{key}.wav",
            "target": f"{{save_root}}/target/{key}.wav",
            "duration": mixture.size / sr,
            "sr": sr,
            "seed_spawn_key": list(seeds[i].spawn_key),
            **metadata,
        }
    for key in set(old_ids) - set(manifest):
        for kind in ("mixture", "target"):
            stale = out_dir / kind / f"{key}.wav"
            if stale.is_file():
                stale.unlink()
    atomic_write_json(out_dir / "fixed_set_options.json", options)
    atomic_write_json(manifest_path, manifest)
    return manifest_path


def fixed_set_digest(manifest_path) -> str:
    """SHA-1 over a fixed set's wav bytes in id order (to compare two sets)."""
    manifest_path = Path(manifest_path)
    digest = hashlib.sha1()
    for key in sorted(read_json(manifest_path)):
        check_safe_id(key, manifest_path)
        for kind in ("mixture", "target"):
            digest.update((manifest_path.parent / kind / f"{key}.wav").read_bytes())
    return digest.hexdigest()
