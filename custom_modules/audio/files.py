"""Small file helpers shared by data preparation, the mixer and the recipes.

* Atomic writes: manifests and results are written to a temporary file in the
  same folder and moved into place with ``os.replace``, so an interrupt never
  leaves a half-written file behind.
* Manifests: JSON dicts keyed by example id whose paths start with a
  placeholder (``{data_root}`` for files in the user's corpus folder,
  ``{save_root}`` for files derived by data preparation, e.g. resampled
  copies). ``load_manifest`` resolves them.
* ``read_audio_info`` / ``read_audio``: soundfile-based reading with errors
  that name the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac")


class AudioFileError(ValueError):
    """A file that cannot be used as audio (unreadable, wrong rate, silent...)."""


class UnsafeIdError(ValueError):
    """A manifest or dataset id that cannot be used as a file name."""


def check_safe_id(key, source) -> str:
    """Return ``key`` when it can name one file or folder inside a folder, else raise.

    Ids of manifests and datasets become file names (``<folder>/<id>.wav``,
    ``<folder>/<id>/``): an id with a path separator, ``.``/``..``, a NUL
    byte, or an empty id could reach outside the folder.

    Arguments
    ---------
    key : str
        The id.
    source : str or Path
        Where it comes from (the manifest path, "test set"...), for the message.

    Raises
    ------
    UnsafeIdError
        Naming ``source`` and the id.

    Example
    -------
    >>> check_safe_id("ex000001", "manifest.json")
    'ex000001'
    >>> check_safe_id("../../victim", "manifest.json")
    Traceback (most recent call last):
    ...
    custom_modules.audio.files.UnsafeIdError: manifest.json: id '../../victim' cannot be used as a file name (it contains a path separator)
    """
    if not isinstance(key, str) or not key:
        problem = "empty" if key in ("", None) else f"not a string ({type(key).__name__})"
    elif "/" in key or "\\" in key or (os.altsep and os.altsep in key):
        problem = "it contains a path separator"
    elif key in (".", ".."):
        problem = "it names a folder, not a file"
    elif "\x00" in key:
        problem = "it contains a NUL byte"
    else:
        return key
    raise UnsafeIdError(f"{source}: id {key!r} cannot be used as a file name ({problem})")


# A data chunk size at least this large is a placeholder of a streamed WAV of unknown length.
_UNKNOWN_WAV_DATA_SIZE = 0x7FFFF000


def wav_frame_counts(path):
    """``(frames the header declares, frames the file holds)`` of a WAV file; None otherwise.

    libsndfile quietly shortens a WAV whose ``data`` chunk runs past the end
    of the file (an interrupted copy or download) to what is there, so its
    frame count cannot reveal the truncation; this reads the RIFF header.
    Files that are not RIFF/RIFX WAVE, and streamed WAVs whose header has a
    placeholder size, give None.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.wav"
    >>> sf.write(path, np.zeros(1600), 16000, subtype="PCM_16")
    >>> wav_frame_counts(path)
    (1600, 1600)
    >>> _ = os.truncate(path, 44 + 2 * 100)
    >>> wav_frame_counts(path)
    (1600, 100)
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = ">" if head[:4] == b"RIFX" else "<"
        size = os.fstat(handle.fileno()).st_size
        block_align, position = 0, 12
        while position + 8 <= size:
            handle.seek(position)
            chunk_id, chunk_size = struct.unpack(order + "4sI", handle.read(8))
            if chunk_id == b"fmt ":
                fmt = handle.read(min(chunk_size, 16))
                if len(fmt) >= 14:
                    block_align = struct.unpack(order + "H", fmt[12:14])[0]
            elif chunk_id == b"data":
                if not block_align or chunk_size == 0 or chunk_size >= _UNKNOWN_WAV_DATA_SIZE:
                    return None
                available = max(0, size - position - 8)
                return chunk_size // block_align, min(chunk_size, available) // block_align
            position += 8 + chunk_size + (chunk_size & 1)
    return None


def check_not_truncated(path) -> None:
    """Raise ``AudioFileError`` when a WAV file holds fewer frames than its header declares."""
    try:
        counts = wav_frame_counts(path)
    except (OSError, struct.error):
        return  # unreadable headers are reported by the audio reader itself
    if counts is not None and counts[1] < counts[0]:
        raise AudioFileError(
            f"{path}: truncated: the header says {counts[0]} frames, only {counts[1]} are "
            "readable (interrupted copy or download?)"
        )


def _temporary_sibling(path: Path, prefix: str, suffix: str) -> str:
    """A new temporary file next to ``path``, with the mode ``open()`` would give it.

    ``mkstemp`` creates files readable by their owner only; the umask-derived
    mode keeps manifests and results readable as any other written file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_folder(path, overwrite: bool = False):
    """Fill a temporary sibling folder, then move it to ``path`` in one rename.

    Yields the temporary folder (a ``Path``). When the block raises, the
    temporary folder is removed and ``path`` is left as it was. An existing
    non-empty ``path`` is an error unless ``overwrite``: then it is replaced
    (moved aside, the new folder renamed into place, the old one deleted).

    Example
    -------
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_folder(root / "out") as tmp:
    ...     _ = (tmp / "a.txt").write_text("a")
    >>> sorted(p.name for p in (root / "out").iterdir()), sorted(p.name for p in root.iterdir())
    (['a.txt'], ['out'])
    """
    import shutil

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path}: folder exists and is not empty (overwrite it explicitly)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_current_umask())
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.rename(path, old / "replaced")
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def recorded_set_manifest(out_dir, options_name, options, num_items):
    """The manifest of a set written once in ``out_dir`` with exactly ``options``, else None.

    Sets written once (fixed validation/test mixtures, speaker-extraction
    triplets) record their options in ``out_dir/options_name`` and write
    ``out_dir/manifest.json`` last. The set counts as made with ``options``
    when both files parse, the options are equal and the manifest has
    ``num_items`` entries; the caller checks its own audio files.
    """
    out_dir = Path(out_dir)
    options_path, manifest_path = out_dir / options_name, out_dir / "manifest.json"
    if not (options_path.is_file() and manifest_path.is_file()):
        return None
    try:
        if read_json(options_path) != options:
            return None
        manifest = read_json(manifest_path)
    except ValueError:
        return None
    return manifest if len(manifest) == num_items else None


def resolve_placeholders(value: str, roots: dict) -> str:
    """Replace ``{name}`` placeholders of ``roots`` in a path string."""
    for name, root in roots.items():
        value = value.replace("{" + name + "}", str(root))
    return value


def _recorded_data_root(manifest_path: Path):
    """``data_root`` recorded by the data preparation that wrote ``manifest_path``."""
    # Newest record first: a later preparation into the same folder may have
    # rewritten a manifest that an older record also lists.
    records = manifest_path.parent.glob("prep_options*.json")
    for options_path in sorted(records, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        try:
            record = read_json(options_path)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and manifest_path.name in record.get("outputs", {}):
            return record.get("data_root")
    return None


def load_manifest(path, data_root=None, save_root=None) -> dict:
    """Load a JSON manifest and resolve its ``{data_root}``/``{save_root}`` paths.

    Arguments
    ---------
    path : str or Path
        Manifest file (a dict keyed by id).
    data_root : str, optional
        Replaces ``{data_root}``; default: the ``data_root`` recorded by data
        preparation in the manifest folder's ``prep_options*.json`` file that
        lists this manifest among its ``outputs``, if any, else left as is.
    save_root : str, optional
        Replaces ``{save_root}``; default: the manifest's own folder.

    Returns
    -------
    dict
        id -> entry, with every string field resolved.
    """
    path = Path(path)
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: a manifest must be a JSON object keyed by id")
    roots = {"save_root": save_root if save_root is not None else path.parent}
    if data_root is None:
        data_root = _recorded_data_root(path)
    if data_root is not None:
        roots["data_root"] = data_root
    resolved = {}
    for key, entry in manifest.items():
        resolved[key] = {
            k: resolve_placeholders(v, roots) if isinstance(v, str) else v for k, v in entry.items()
        }
    return resolved


def manifest_paths(path, data_root=None, save_root=None, field="path") -> list:
    """Resolved file paths of a manifest, in id order (a convenience for samplers)."""
    manifest = load_manifest(path, data_root=data_root, save_root=save_root)
    return [manifest[key][field] for key in sorted(manifest)]


def read_audio_info(path, expected_sr=None):
    """Header of an audio file as a ``soundfile`` info object, with clear errors.

    Raises
    ------
    AudioFileError
        When the file cannot be opened, is a truncated WAV (fewer frames than
        its header declares, :func:`wav_frame_counts`), has no frames, or its
        rate is not ``expected_sr`` (when given).
    """
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioFileError(f"{path}: unreadable audio header ({err})") from err
    check_not_truncated(path)
    if info.frames <= 0:
        raise AudioFileError(f"{path}: zero-length audio")
    if expected_sr is not None and info.samplerate != expected_sr:
        raise AudioFileError(
            f"{path}: sample rate {info.samplerate} Hz, expected {expected_sr} Hz "
            "(run data preparation, which resamples once into the save folder)"
        )
    return info


def read_audio(path, start=0, stop=None, expected_sr=None, channel=0):
    """Read ``[start, stop)`` of one channel as float32, with clear errors.

    Multichannel files give channel ``channel`` (0 by default: the documented
    policy for RIRs and noises). Non-finite samples raise ``AudioFileError``.

    Returns
    -------
    (numpy.ndarray, int)
        Samples (shape ``(n,)``, float32) and sample rate.
    """
    read_audio_info(path, expected_sr=expected_sr)
    try:
        data, sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioFileError(f"{path}: cannot read samples ({err})") from err
    if channel >= data.shape[1]:
        raise AudioFileError(f"{path}: has {data.shape[1]} channel(s), asked for {channel}")
    data = np.ascontiguousarray(data[:, channel])
    if not np.all(np.isfinite(data)):
        raise AudioFileError(f"{path}: contains NaN or Inf samples")
    return data, sr


def resample(samples, from_sr: int, to_sr: int) -> np.ndarray:
    """``samples`` (shape ``(n,)``) from ``from_sr`` to ``to_sr`` Hz as float32.

    Polyphase (``scipy.signal.resample_poly``, computed in float64) by the
    reduced ratio; the samples are returned as they are when the rates match.

    Example
    -------
    >>> resample(np.zeros(8000, dtype=np.float32), 8000, 16000).shape
    (16000,)
    >>> resample(np.zeros(44100), 44100, 16000).dtype
    dtype('float32')
    """
    if int(from_sr) == int(to_sr):
        return samples
    from scipy.signal import resample_poly  # scipy.signal costs ~0.8 s to import: only when used

    ratio = math.gcd(int(from_sr), int(to_sr))
    out = resample_poly(np.asarray(samples, dtype=np.float64), to_sr // ratio, from_sr // ratio)
    return out.astype(np.float32)


def write_audio(path, samples, sr, subtype="PCM_16") -> None:
    """Write float samples atomically (parent folders created).

    ``subtype`` is the soundfile subtype: 16-bit PCM by default (libsndfile
    clips out-of-range floats), ``"FLOAT"`` to keep full precision (RIRs).
    The container follows the extension (``.wav``, ``.flac``...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        sf.write(tmp, np.asarray(samples), sr, subtype=subtype)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def open_audio_writer(path, sr, channels=1, subtype="PCM_16"):
    """Stream audio into ``path`` atomically: a ``soundfile.SoundFile`` open for writing.

    Blocks are written with ``handle.write(block)`` to a temporary file next to
    ``path``, moved into place when the ``with`` block ends normally and deleted
    when it raises, so long outputs never sit whole in memory and an interrupt
    never leaves a truncated file. ``subtype`` as in :func:`write_audio`.

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "x.wav"
    >>> with open_audio_writer(out, 16000) as handle:
    ...     handle.write(np.zeros(160, dtype=np.float32))
    >>> sf.info(str(out)).frames
    160
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with sf.SoundFile(tmp, "w", samplerate=sr, channels=channels, subtype=subtype) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable_output(path) -> None:
    """Raise ``OSError`` naming ``path`` when a file cannot be created there."""
    parent = Path(path).expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise OSError(f"{path}: cannot write there ({err.strerror or err})") from err
