"""The triplet-set writer of :mod:`custom_modules.data.librispeech_mixtures` (import it from there).

File layout, sample formats and the exact-sum property of the written mixes
are documented in that module; how each triplet is drawn in
:mod:`custom_modules.data.triplets`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from custom_modules.audio.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_safe_id,
    read_json,
    recorded_set_manifest,
)
from custom_modules.audio.seeding import derive_seed_sequences
from custom_modules.data.fixed_sets import float_wav_bytes
from custom_modules.data.triplets import CLIP_PEAK
from data_prepare.inspection import pool_context

logger = logging.getLogger(__name__)

TRIPLET_SET_FORMAT = 1
# Sub-folder and file suffix of each written signal.
FILE_LAYOUT = {
    "mix": ("mix", "mixed"),
    "ref": ("refs", "ref"),
    "target": ("targets", "target"),
    "interferer": ("interferers", "interferer"),
}
SUBTYPES = ("FLOAT", "PCM_16")


def triplet_file(kind: str, key: str) -> str:
    """Relative path of signal ``kind`` of triplet ``key``.

    Example
    -------
    >>> triplet_file("mix", "000001_19_27")
    'mix/000001_19_27-mixed.wav'
    """
    folder, suffix = FILE_LAYOUT[kind]
    return f"{folder}/{key}-{suffix}.wav"


def _safe(name: str) -> str:
    """A speaker id usable in a file name."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(name))


def _to_format(samples, subtype: str) -> np.ndarray:
    """Samples rounded to the output format: float32, or int32 values on the 16-bit grid."""
    samples = np.asarray(samples)
    if subtype == "FLOAT":
        return samples.astype(np.float32)
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int32)


def _encode(samples, sr: int, subtype: str) -> bytes:
    """WAV bytes, identical for identical samples (no time-stamped PEAK chunk)."""
    if subtype == "FLOAT":
        return float_wav_bytes(samples, sr)
    buffer = io.BytesIO()
    write_pcm = np.clip(samples, -32768, 32767).astype(np.int16)
    sf.write(buffer, write_pcm, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# Worker processes get the maker once (initializer) instead of with every task.
_worker_state = {}


def _init_worker(maker, out_dir, save_interferer, subtype):
    _worker_state.update(
        maker=maker, out_dir=out_dir, save_interferer=save_interferer, subtype=subtype
    )


def _write_one(task):
    """Draw triplet ``index`` from its seed, write its wavs, return ``(key, entry)``."""
    index, seed_sequence = task
    state = _worker_state
    maker, out_dir, subtype = state["maker"], state["out_dir"], state["subtype"]
    signals, meta = maker.make(np.random.default_rng(seed_sequence))
    key = f"{index:06d}_{_safe(meta['target_speaker'])}_{_safe(meta['interferer_speaker'])}"
    # Sources in the output format first; the mix is their exact sum in it.
    parts = {
        name: _to_format(signals[name], subtype)
        for name in ("target", "interferer", "noise")
        if name in signals
    }
    mix = parts["target"] + parts["interferer"]
    if "noise" in parts:
        mix = mix + parts["noise"]
    out = {"mix": mix, "ref": _to_format(signals["ref"], subtype), "target": parts["target"]}
    if state["save_interferer"]:
        out["interferer"] = parts["interferer"]
    entry = {}
    for kind, samples in out.items():
        rel = triplet_file(kind, key)
        atomic_write_bytes(out_dir / rel, _encode(samples, maker.sr, subtype))
        entry[kind] = "{save_root}/" + rel
    entry.update(
        duration=mix.size / maker.sr,
        ref_duration=out["ref"].size / maker.sr,
        sr=maker.sr,
        **meta,
        seed_spawn_key=list(seed_sequence.spawn_key),
    )
    return key, entry


def _set_done(out_dir: Path, options: dict) -> bool:
    """Whether ``out_dir`` holds a complete set made with ``options``."""
    manifest = recorded_set_manifest(
        out_dir, "triplet_options.json", options, options["num_triplets"]
    )
    if manifest is None:
        return False
    kinds = [k for k in FILE_LAYOUT if k != "interferer" or options["save_interferer"]]
    manifest_path = out_dir / "manifest.json"
    return all(
        (out_dir / triplet_file(k, check_safe_id(key, manifest_path))).is_file()
        for key in manifest
        for k in kinds
    )


def _csv_text(manifest: dict) -> str:
    """The manifest as CSV: ``ID``, relative paths, then every other field."""
    columns = ["ID"]
    for entry in manifest.values():
        for name in entry:
            if name not in columns:
                columns.append(name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for key, entry in manifest.items():
        row = {"ID": key}
        for name, value in entry.items():
            if name in FILE_LAYOUT:
                value = value.replace("{save_root}/", "")
            elif isinstance(value, list):
                value = json.dumps(value)
            row[name] = value
        writer.writerow(row)
    return buffer.getvalue()


def write_triplets(
    maker,
    out_dir,
    num_triplets,
    seed,
    save_interferer=False,
    progress=True,
    num_workers=1,
    subtype="FLOAT",
):
    """Write a reproducible set of (mix, reference, target) triplets, once.

    Triplet ``i`` is drawn by ``maker`` with a generator seeded with the
    ``i``-th child of ``SeedSequence(seed)``: the set depends only on the seed,
    the maker's options and its manifests (not on ``num_workers``). When
    ``out_dir`` already holds a complete set made with the same options and
    manifests, nothing is written; otherwise it is regenerated (files of the
    old set that the new one does not list are removed).

    Arguments
    ---------
    maker : custom_modules.data.triplets.TripletMaker
        Built by :meth:`~custom_modules.data.triplets.TripletMaker.from_manifests`
        (a recipe YAML's ``triplet_maker`` partial on one split's speech and
        noise manifests): sample rate, levels, TIR/SNR ranges, length policy,
        longest segments. Its peak policy follows ``subtype``.
    out_dir : str or Path
        Output folder (layout in the module docstring).
    num_triplets : int
        Number of triplets.
    seed : int
        Seed of the set.
    save_interferer : bool
        Also write ``interferers/<ID>-interferer.wav`` (as in the mix), e.g.
        for two-speaker separation.
    progress : bool
        Show a progress bar.
    num_workers : int
        Worker processes (1: in this process).
    subtype : str
        ``"FLOAT"`` (exact levels) or ``"PCM_16"`` (peak policy), see the
        module docstring.

    Returns
    -------
    pathlib.Path
        ``out_dir/manifest.json``.
    """
    out_dir = Path(out_dir)
    num_triplets = int(num_triplets)
    if num_triplets < 1:
        raise ValueError(f"num_triplets must be >= 1, got {num_triplets}")
    if subtype not in SUBTYPES:
        raise ValueError(f"subtype must be one of {SUBTYPES}, got {subtype!r}")
    maker = maker.with_peak_limit(None if subtype == "FLOAT" else CLIP_PEAK)
    options = {
        "format": TRIPLET_SET_FORMAT,
        "seed": int(seed),
        "num_triplets": num_triplets,
        "save_interferer": bool(save_interferer),
        "subtype": subtype,
        **maker.describe(),
    }
    options = json.loads(json.dumps(options))  # compare with what the file holds
    manifest_path = out_dir / "manifest.json"
    if _set_done(out_dir, options):
        logger.info("%s: triplet set already complete, skipping", out_dir)
        return manifest_path

    old_keys = []
    if manifest_path.is_file():
        try:
            old_keys = list(read_json(manifest_path))
        except ValueError:
            old_keys = []
        for key in old_keys:  # they name files to delete: nothing outside out_dir
            check_safe_id(key, manifest_path)
        manifest_path.unlink()  # a partial regeneration must never look complete
    tasks = list(enumerate(derive_seed_sequences(int(seed), num_triplets)))
    bar = dict(total=num_triplets, desc=f"triplets {out_dir.name}", disable=not progress)
    init_args = (maker, out_dir, bool(save_interferer), subtype)
    if int(num_workers) > 1:
        # ProcessPoolExecutor fails loudly if a worker dies (multiprocessing.Pool
        # would respawn it forever); fork where available, as data preparation.
        with ProcessPoolExecutor(
            int(num_workers),
            mp_context=pool_context(),
            initializer=_init_worker,
            initargs=init_args,
        ) as executor:
            results = list(tqdm(executor.map(_write_one, tasks, chunksize=8), **bar))
    else:
        _init_worker(*init_args)
        try:
            results = [_write_one(task) for task in tqdm(tasks, **bar)]
        finally:
            _worker_state.clear()
    manifest = dict(results)
    for key in set(old_keys) - set(manifest):
        for kind in FILE_LAYOUT:
            (out_dir / triplet_file(kind, key)).unlink(missing_ok=True)
    num_clipped = sum(1 for entry in manifest.values() if entry["clip_gain_db"] < 0)
    if num_clipped:
        logger.info(
            "%s: %d of %d mixes scaled down to avoid clipping", out_dir, num_clipped, num_triplets
        )
    atomic_write_text(out_dir / "manifest.csv", _csv_text(manifest))
    atomic_write_json(out_dir / "triplet_options.json", options)
    atomic_write_json(manifest_path, manifest)
    return manifest_path
