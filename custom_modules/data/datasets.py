"""Datasets of target-speaker-extraction triplets (mixture, reference, target).

* :func:`CustomDirDataset`: any folder with ``mix/<ID>-mixed.wav``,
  ``refs/<ID>-ref.wav`` and optionally ``targets/<ID>-target.wav`` (``.flac``
  also accepted), e.g. a user's own recordings. Files at another sample rate
  are resampled on load (``scipy.signal.resample_poly``); multichannel files
  give channel 0 (the project's policy, see ``custom_modules.audio.files``).
* :func:`triplet_dataset`: a set written by
  ``custom_modules.data.librispeech_mixtures.write_triplets`` (its ``manifest.json``),
  with the target speaker and its class index.
* :class:`OnTheFlyTripletDataset`: fresh random triplets every epoch, drawn
  like the writer's (:mod:`custom_modules.data.triplets`).

Output keys are ``id``, ``mix``, ``ref``, ``target`` (and ``target_speaker``,
``speaker_index`` where known); ``keys`` renames them, e.g.
``keys={"mix": "mixture", "ref": "reference"}`` for a Brain that reads
``batch.mixture``. Waveforms are float32 tensors of shape ``(samples,)``;
``speaker_index`` is an int (-1 for a speaker not in ``speakers``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes

from custom_modules.audio.files import (
    AUDIO_EXTENSIONS,
    AudioFileError,
    load_manifest,
    read_audio,
    read_audio_info,
    resample,
)
from custom_modules.data.fixed_sets import PerItemSeededDataset

logger = logging.getLogger(__name__)

CANONICAL_KEYS = ("id", "mix", "ref", "target", "target_speaker", "speaker_index")
# CustomDirDataset layout: kind -> (sub-folder, file-name suffix after "<ID>-").
CUSTOM_DIR_LAYOUT = {
    "mix": ("mix", "mixed"),
    "ref": ("refs", "ref"),
    "target": ("targets", "target"),
}


def _output_keys(present, keys) -> dict:
    """``{output name: canonical name}`` for the canonical names in ``present``."""
    keys = dict(keys or {})
    unknown = set(keys) - set(CANONICAL_KEYS)
    if unknown:
        raise ValueError(f"keys renames unknown outputs {sorted(unknown)}; known: {CANONICAL_KEYS}")
    renamed = {keys.get(name, name): name for name in present}
    if len(renamed) != len(present):
        raise ValueError(f"keys={keys} maps two outputs to one name")
    return renamed


def load_resampled(path, sr: int) -> torch.Tensor:
    """Channel 0 of ``path`` as float32 at ``sr`` (resampled when needed).

    Example
    -------
    >>> import soundfile as sf
    >>> path = getfixture("tmp_path") / "x.wav"
    >>> sf.write(str(path), np.zeros(8000), 8000)
    >>> load_resampled(path, 16000).shape
    torch.Size([16000])
    """
    samples, file_sr = read_audio(path)
    return torch.from_numpy(np.ascontiguousarray(resample(samples, file_sr, sr)))


def _find_by_id(folder: Path, suffix: str) -> dict:
    """``{ID: path}`` of the ``<ID>-<suffix>.<ext>`` files of ``folder``."""
    found = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        stem, ext = path.stem, path.suffix.lower()
        if ext in AUDIO_EXTENSIONS and stem.endswith(f"-{suffix}") and len(stem) > len(suffix) + 1:
            key = stem[: -len(suffix) - 1]
            if key in found:
                raise ValueError(f"{folder}: two files for ID {key!r}: {found[key].name}, {name}")
            found[key] = path
    return found


def CustomDirDataset(folder, sr=16000, keys=None) -> DynamicItemDataset:
    """Dataset over ``folder/mix/<ID>-mixed.wav`` + ``refs/<ID>-ref.wav`` (+ ``targets/``).

    Every mixture needs its reference. ``targets/`` is optional (inference);
    when it holds any file, every mixture needs its target. Files are
    checked (readable, non-empty) at construction, so a bad folder fails
    before any processing with one error listing the problems. Files not at
    ``sr`` are resampled on load; references and targets without a mixture
    are ignored with a warning.

    Arguments
    ---------
    folder : str or Path
        The custom directory.
    sr : int
        Output sample rate.
    keys : dict, optional
        Renames outputs (see module docstring).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Outputs ``id``, ``mix``, ``ref`` and ``target`` when there are targets;
        the data dict also has ``duration`` (mixture, seconds) for sorting.

    Example
    -------
    >>> import soundfile as sf
    >>> folder = getfixture("tmp_path")
    >>> for sub, name in (("mix", "a-mixed"), ("refs", "a-ref")):
    ...     (folder / sub).mkdir()
    ...     sf.write(str(folder / sub / f"{name}.wav"), np.zeros(800), 16000)
    >>> item = CustomDirDataset(folder)[0]
    >>> sorted(item), item["mix"].shape
    (['id', 'mix', 'ref'], torch.Size([800]))
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"custom directory {folder} does not exist")
    files = {
        kind: _find_by_id(folder / sub, suffix) for kind, (sub, suffix) in CUSTOM_DIR_LAYOUT.items()
    }
    mixes = files["mix"]
    if not mixes:
        raise ValueError(
            f"{folder}: no mixtures found; expected {folder / 'mix'}/<ID>-mixed.wav "
            "with refs/<ID>-ref.wav (and optionally targets/<ID>-target.wav)"
        )
    problems = [
        f"refs/{key}-ref.wav missing (for mix/{p.name})"
        for key, p in mixes.items()
        if key not in files["ref"]
    ]
    has_targets = bool(files["target"])
    if has_targets:
        problems += [
            f"targets/{key}-target.wav missing (for mix/{p.name}; targets/ is not empty)"
            for key, p in mixes.items()
            if key not in files["target"]
        ]
    data = {}
    for key, mix_path in mixes.items():
        entry = {"mix": str(mix_path), "ref": str(files["ref"].get(key, ""))}
        if has_targets:
            entry["target"] = str(files["target"].get(key, ""))
        for kind in list(entry):
            if not entry[kind]:
                continue
            try:
                info = read_audio_info(entry[kind])
            except AudioFileError as err:
                problems.append(str(err))
                continue
            if kind == "mix":
                entry["duration"] = info.frames / info.samplerate
        data[key] = entry
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(f"{folder}: {len(problems)} problem(s):\n  {shown}{more}")
    for kind in ("ref", "target"):
        orphans = sorted(set(files[kind]) - set(mixes))
        if orphans:
            logger.warning(
                "%s: %d %s file(s) without a mixture ignored, e.g. %s",
                folder,
                len(orphans),
                kind,
                orphans[0],
            )

    present = ["id", "mix", "ref"] + (["target"] if has_targets else [])

    @takes("mix", "ref")
    @provides("mix_sig", "ref_sig")
    def read_inputs(mix_path, ref_path):
        yield load_resampled(mix_path, sr)
        yield load_resampled(ref_path, sr)

    dynamic_items = [read_inputs]
    if has_targets:

        @takes("target")
        @provides("target_sig")
        def read_target(target_path):
            return load_resampled(target_path, sr)

        dynamic_items.append(read_target)
    dataset = DynamicItemDataset(data, dynamic_items=dynamic_items)
    signal_of = {"id": "id", "mix": "mix_sig", "ref": "ref_sig", "target": "target_sig"}
    dataset.set_output_keys(
        {out: signal_of[name] for out, name in _output_keys(present, keys).items()}
    )
    return dataset


def _speaker_indexer(speakers):
    """``speaker -> index`` (-1 for unknown speakers)."""
    lookup = {str(s): i for i, s in enumerate(speakers)}
    return lambda speaker: lookup.get(str(speaker), -1)


def triplet_dataset(manifest_path, speakers=None, keys=None) -> DynamicItemDataset:
    """Dataset over a triplet set written by ``write_triplets``.

    Arguments
    ---------
    manifest_path : str or Path
        The set's ``manifest.json``.
    speakers : list of str, optional
        Classes of the speaker head (e.g. ``train_speakers.json``);
        ``speaker_index`` is the target speaker's position, -1 when absent.
        Default: the sorted target speakers of this set.
    keys : dict, optional
        Renames outputs (see module docstring).

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Outputs ``id``, ``mix``, ``ref``, ``target``, ``target_speaker``,
        ``speaker_index``; the data dict keeps every manifest field
        (``duration`` for sorting, ``tir_db``...).
    """
    data = load_manifest(manifest_path)
    if not data:
        raise ValueError(f"{manifest_path}: empty triplet manifest")
    for key, entry in data.items():
        missing = [
            name for name in ("mix", "ref", "target", "target_speaker", "sr") if name not in entry
        ]
        if missing:
            raise ValueError(f"{manifest_path}: entry {key!r} has no {', '.join(missing)}")
    if speakers is None:
        speakers = sorted({str(entry["target_speaker"]) for entry in data.values()})
    index_of = _speaker_indexer(speakers)

    @takes("mix", "ref", "target", "sr")
    @provides("mix_sig", "ref_sig", "target_sig")
    def read_triplet(mix_path, ref_path, target_path, sr):
        for path in (mix_path, ref_path, target_path):
            yield torch.from_numpy(read_audio(path, expected_sr=sr)[0])

    @takes("target_speaker")
    @provides("speaker_index")
    def speaker_index(target_speaker):
        return index_of(target_speaker)

    dataset = DynamicItemDataset(data, dynamic_items=[read_triplet, speaker_index])
    signal_of = {
        "id": "id",
        "mix": "mix_sig",
        "ref": "ref_sig",
        "target": "target_sig",
        "target_speaker": "target_speaker",
        "speaker_index": "speaker_index",
    }
    dataset.set_output_keys(
        {out: signal_of[name] for out, name in _output_keys(CANONICAL_KEYS, keys).items()}
    )
    return dataset


class OnTheFlyTripletDataset(PerItemSeededDataset):
    """Fresh random triplets, reproducible per ``(seed, rank, epoch, index)``.

    Item ``index`` is drawn by ``maker`` with a generator seeded by
    ``SeedSequence([seed, rank, epoch, index])``, as
    :class:`custom_modules.data.mixing.OnTheFlyDataset`: independent of
    ``num_workers``, distinct across DDP ranks, new each epoch after
    ``set_epoch``.

    Arguments
    ---------
    maker : custom_modules.data.triplets.TripletMaker
        Draws the triplets (e.g. a recipe YAML's ``triplet_maker`` on the
        training manifests): its ``max_sec`` is the longest item.
    length : int
        Items per epoch.
    seed : int
        Base seed.
    speakers : list of str, optional
        Classes of the speaker head; default: the sorted target speakers of
        the maker's pool. ``speaker_index`` is -1 for a speaker not listed.
    rank : int, optional
        Overrides the detected DDP rank.
    keys : dict, optional
        Renames outputs (see module docstring).

    Example
    -------
    >>> import json, soundfile as sf
    >>> folder, rng = getfixture("tmp_path"), np.random.default_rng(0)
    >>> entries = {}
    >>> for name, speaker in (("a1", "A"), ("a2", "A"), ("b1", "B")):
    ...     sf.write(str(folder / f"{name}.wav"), rng.normal(0, 0.05, 16000), 16000)
    ...     entries[name] = {"path": str(folder / f"{name}.wav"), "duration": 1.0,
    ...                      "sr": 16000, "speaker": speaker}
    >>> _ = (folder / "speech.json").write_text(json.dumps(entries))
    >>> from custom_modules.data.triplets import TripletMaker
    >>> maker = TripletMaker.from_manifests(folder / "speech.json", max_sec=0.5, ref_max_sec=0.5)
    >>> data = OnTheFlyTripletDataset(maker, length=4)
    >>> item = data[0]
    >>> item["mix"].shape, item["ref"].shape, item["target_speaker"], item["speaker_index"]
    (torch.Size([8000]), torch.Size([8000]), 'A', 0)
    """

    def __init__(self, maker, length, seed=0, speakers=None, rank=None, keys=None):
        super().__init__(length, seed=seed, rank=rank)
        self.maker = maker
        self.speakers = list(maker.pool.target_speakers if speakers is None else speakers)
        self._index_of = _speaker_indexer(self.speakers)
        self._names = _output_keys(CANONICAL_KEYS, keys)

    def set_tir_db_range(self, tir_db_range) -> None:
        """Draw the target-to-interferer ratio from ``tir_db_range`` (dB) from now on.

        For a curriculum (:class:`custom_modules.data.tse_data.TirCurriculum`); like
        :meth:`set_epoch`, call it before an epoch's DataLoader workers start.
        """
        self.maker.set_tir_db_range(tir_db_range)

    def __getitem__(self, index):
        item_id, seed = self.item_seed(index)
        signals, meta = self.maker.make(np.random.default_rng(seed), want_interferer=False)
        item = {
            "id": item_id,
            "mix": torch.from_numpy(signals["mix"].astype(np.float32)),
            "ref": torch.from_numpy(signals["ref"].astype(np.float32)),
            "target": torch.from_numpy(signals["target"].astype(np.float32)),
            "target_speaker": meta["target_speaker"],
            "speaker_index": self._index_of(meta["target_speaker"]),
        }
        return {out: item[name] for out, name in self._names.items()}
