"""Random crops of speech/noise files and random room impulse responses.

The on-the-fly mixer (``custom_modules.data.mixing``) draws its ingredients here:

* ``SignalSampler`` returns fixed-length crops (speech or noise). Files are
  chosen with probability proportional to their length, so every second of
  the corpus is equally likely; a crop offset is uniform within the file.
  Only the crop is read (``soundfile.read(start=, stop=)``), never the whole
  file, unless the file is shorter than the crop: then the whole file is
  taken and crops of further randomly chosen files are appended until the
  crop is full (plain concatenation, no cross-fade). Crops quieter than
  ``min_rms_db`` are rejected and redrawn, a bounded number of times.
* ``RirSampler`` returns a whole RIR, chosen uniformly.

Error policy (both samplers)
----------------------------
* Every file must be mono at the sampler's rate. A file at another rate, or
  with several channels, raises ``AudioFileError`` naming the file: at
  construction when headers are read, else (manifest durations given) at its
  first read. Data preparation resamples once and keeps channel 0, so raw
  multichannel or off-rate files are a user error, not something to fix on
  every read.
* A file that cannot be used when it is read (deleted or unreadable since
  data preparation, truncated, NaN/Inf, an all-zero RIR) is a *bad file*: it
  is logged once per process with its path and the reason, counted
  (``bad_files``: path -> reason; ``bad.draws``), and another file is drawn
  instead, so a corpus file lost after preparation never wedges training.
  Only when more than ``max_bad_fraction`` of the files (default 10 %, at
  least one file when there are two or more) are bad, or
  ``MAX_BAD_DRAWS_IN_A_ROW`` draws in a row hit bad files, an
  ``AudioFileError`` lists them. Draws stay deterministic: item ``i`` drawn
  with a seed gives the same result whenever the same files are bad, and
  exactly the result of a healthy corpus when none is.
* When ``max_attempts`` consecutive crops are all quieter than ``min_rms_db``
  a ``RuntimeError`` names the threshold and some of the files tried: the
  sampler never loops forever on silent data.

Randomness comes only from each sampler's own ``numpy.random.Generator``;
``reseed(seed)`` replaces it (int, ``SeedSequence`` or ``None``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf

from custom_modules.audio.files import AudioFileError, load_manifest, read_audio_info
from custom_modules.audio.levels import eval_rms_db

logger = logging.getLogger(__name__)

# Consecutive draws hitting bad files before giving up (whatever their fraction).
MAX_BAD_DRAWS_IN_A_ROW = 1000

# Manifest durations are rounded by whoever wrote them; trusting them to within
# 1 ms keeps crop offsets inside the file.
_MANIFEST_DURATION_SLACK_SEC = 0.001


def _make_rng(seed):
    """A ``numpy.random.Generator`` from an int/SeedSequence/Generator/None."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _as_path_list(paths, what: str) -> list:
    if isinstance(paths, (str, Path)):
        raise TypeError(f"{what}: expected a list of paths, got a single path {paths!r}")
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError(f"{what}: empty list of files")
    return paths


class AudioFormatError(AudioFileError):
    """A file at another rate or with several channels: a preparation error, never skipped."""


class BadFiles:
    """Files found unusable at read time by a sampler: logged once, counted, bounded.

    Arguments
    ---------
    what : str
        Owner named in messages ("SignalSampler"...).
    num_files : int
        Size of the owner's file list.
    max_bad_fraction : float
        Fraction of ``num_files`` that may be bad (at least one file when
        there are two or more and the fraction is not 0); one more raises
        ``AudioFileError``.

    Example
    -------
    >>> bad = BadFiles("SignalSampler", num_files=20, max_bad_fraction=0.1)
    >>> bad.limit
    2
    >>> bad.report("a.wav", AudioFileError("a.wav: cannot read samples"))
    >>> bad.files, bad.draws
    ({'a.wav': 'a.wav: cannot read samples'}, 1)
    """

    def __init__(self, what: str, num_files: int, max_bad_fraction: float = 0.1):
        if not 0.0 <= float(max_bad_fraction) <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.what = what
        self.num_files = int(num_files)
        self.max_bad_fraction = float(max_bad_fraction)
        fraction_limit = int(np.floor(self.max_bad_fraction * self.num_files + 1e-9))
        lenient = self.num_files > 1 and self.max_bad_fraction > 0
        self.limit = max(1, fraction_limit) if lenient else fraction_limit
        self.files = {}  # path -> reason
        self.draws = 0
        self.in_a_row = 0

    def ok(self) -> None:
        """A draw that read a good file."""
        self.in_a_row = 0

    def report(self, path: str, err: AudioFileError) -> None:
        """Record a draw that hit ``path``; raise once there are too many bad files."""
        if isinstance(err, AudioFormatError):
            raise err
        self.draws += 1
        self.in_a_row += 1
        if path not in self.files:
            self.files[path] = str(err)
            logger.warning(
                "%s: skipping bad file %s (%s); %d bad file(s) of %d so far",
                self.what, path, err, len(self.files), self.num_files,
            )  # fmt: skip
        too_many = len(self.files) > self.limit
        if too_many or self.in_a_row >= MAX_BAD_DRAWS_IN_A_ROW:
            reasons = "\n  ".join(list(self.files.values())[:5])
            more = f"\n  ... and {len(self.files) - 5} more" if len(self.files) > 5 else ""
            why = (
                f"more than max_bad_fraction={self.max_bad_fraction:g} allows"
                if too_many
                else f"{self.in_a_row} draws in a row hit them"
            )
            raise AudioFileError(
                f"{self.what}: {len(self.files)} of {self.num_files} file(s) unusable ({why}); "
                f"re-run data preparation (it redoes itself when its inputs changed):"
                f"\n  {reasons}{more}"
            ) from err


def _read_segment(path: str, start: int, stop, sr: int, allow_short=False) -> np.ndarray:
    """Read frames ``[start, stop)`` of a mono file as float32, checked.

    ``stop=None`` reads to the end; ``allow_short`` accepts a file ending
    before ``stop``. Raises ``AudioFileError`` naming the file when it is
    unreadable, not mono, not at ``sr``, shorter than asked or not finite.
    """
    try:
        data, file_sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise AudioFileError(f"{path}: cannot read samples ({err})") from err
    if file_sr != sr:
        raise AudioFormatError(
            f"{path}: sample rate {file_sr} Hz, expected {sr} Hz "
            "(run data preparation, which resamples once into the save folder)"
        )
    if data.shape[1] != 1:
        raise AudioFormatError(
            f"{path}: {data.shape[1]} channels; the samplers need mono files "
            "(data preparation keeps channel 0)"
        )
    if data.shape[0] == 0 or (
        stop is not None and not allow_short and data.shape[0] != stop - start
    ):
        raise AudioFileError(
            f"{path}: asked for frames [{start}, {stop}) but the file ends at frame "
            f"{start + data.shape[0]} (manifest duration out of date? re-run data preparation)"
        )
    samples = data[:, 0]
    if not np.all(np.isfinite(samples)):
        raise AudioFileError(f"{path}: contains NaN or Inf samples")
    return samples


def _read_headers(paths: list, sr: int) -> list:
    """Frame counts of mono files at ``sr``; one error listing the bad files."""
    frames, problems = [], []
    for path in paths:
        try:
            info = read_audio_info(path, expected_sr=sr)
        except AudioFileError as err:
            problems.append(str(err))
            continue
        if info.channels != 1:
            problems.append(
                f"{path}: {info.channels} channels; the samplers need mono files "
                "(data preparation keeps channel 0)"
            )
            continue
        frames.append(int(info.frames))
    if problems:
        shown = "\n  ".join(problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise AudioFileError(f"{len(problems)} unusable audio file(s):\n  {shown}{more}")
    return frames


def _files_digest(paths: list, frames: list) -> str:
    """SHA-1 of the file list and lengths (identifies a sampler's data)."""
    digest = hashlib.sha1()
    for path, count in zip(paths, frames, strict=True):
        digest.update(f"{path}\t{count}\n".encode())
    return digest.hexdigest()


def _manifest_entries(manifest_path, data_root, save_root, sr: int):
    """(ids, paths, frames-or-None, entries) of a manifest, checked against ``sr``."""
    manifest = load_manifest(manifest_path, data_root=data_root, save_root=save_root)
    if not manifest:
        raise ValueError(f"{manifest_path}: empty manifest")
    ids = sorted(manifest)
    paths, frames, entries = [], [], []
    for key in ids:
        entry = manifest[key]
        if "path" not in entry:
            raise ValueError(f"{manifest_path}: entry {key!r} has no 'path'")
        path = entry["path"]
        if "{" in path:
            raise ValueError(
                f"{manifest_path}: entry {key!r} path {path!r} still has a placeholder; "
                "pass data_root="
            )
        if entry.get("sr", sr) != sr:
            raise AudioFileError(
                f"{path} (manifest {manifest_path}, id {key!r}): sample rate {entry['sr']} Hz, "
                f"expected {sr} Hz (run data preparation with the right sample rate)"
            )
        if entry.get("channels", 1) != 1:
            raise AudioFileError(
                f"{path} (manifest {manifest_path}, id {key!r}): {entry['channels']} channels; "
                "the samplers need mono files"
            )
        paths.append(path)
        entries.append(entry)
        if "duration" in entry:
            slack = int(np.ceil(_MANIFEST_DURATION_SLACK_SEC * sr))
            count = int(np.floor(float(entry["duration"]) * sr)) - slack
            if count <= 0:
                raise AudioFileError(f"{path} (manifest {manifest_path}): duration too short")
            frames.append(count)
    if frames and len(frames) != len(paths):
        frames = None  # some entries lack a duration: read all headers instead
    return ids, paths, frames or None, entries


def mix_by_source(weights, sources, source_mix: dict) -> np.ndarray:
    """Per-file draw weights giving each kind of source its share (see ``SignalSampler``).

    Example
    -------
    >>> w = mix_by_source([10.0, 30.0, 60.0], ["real", "generated/babble", "generated/babble"],
    ...                   {"generated/babble": 0.25, "*": 0.75})
    >>> [round(float(x), 3) for x in w / w.sum()]
    [0.75, 0.083, 0.167]
    """
    weights = np.asarray(weights, dtype=np.float64)
    if sources is None or len(sources) != len(weights):
        raise ValueError("source_mix needs one source label per file (sources=)")
    shares = {key: float(value) for key, value in source_mix.items()}
    if any(value < 0 for value in shares.values()) or not any(shares.values()):
        raise ValueError(f"source_mix shares must be >= 0 with a positive sum, got {source_mix}")
    prefixes = sorted((k for k in shares if k != "*"), key=len, reverse=True)
    kinds = []
    for source in sources:
        kind = next((k for k in prefixes if str(source).startswith(k)), "*")
        kinds.append(kind if kind in shares else None)
    present = {k for k in kinds if k is not None and shares[k] > 0}
    if not present:
        raise ValueError(f"source_mix {source_mix}: no file has a source it gives a share to")
    total_share = sum(shares[k] for k in present)
    mixed = np.zeros_like(weights)
    for kind in present:
        members = np.array([k == kind for k in kinds])
        mixed[members] = weights[members] / weights[members].sum() * shares[kind] / total_share
    return mixed


class SignalSampler:
    """Random fixed-length crops of a set of mono audio files.

    Files are chosen with probability proportional to their length; the crop
    offset is uniform within the file. A file shorter than the crop is taken
    whole and followed by crops of further random files until the crop is
    full. A crop whose RMS is below ``min_rms_db`` is rejected and redrawn;
    after ``max_attempts`` rejections in a row a ``RuntimeError`` names the
    threshold and files tried.

    Arguments
    ---------
    paths : list of str or Path
        Mono audio files at ``sr``.
    crop_size_sec : float
        Crop length in seconds; every crop has ``round(crop_size_sec * sr)``
        samples.
    min_rms_db : float or None
        Crops quieter than this (dB re RMS 1) are rejected; ``None``: keep all.
    sr : int
        Expected sample rate of every file.
    rng : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Source of randomness (``None``: fresh OS entropy).
    num_frames : list of int, optional
        Length of each file in frames; skips reading the headers (sample
        rate and channels are then checked at each read).
    ids : list of str, optional
        Names of the files in metadata (default: file stems).
    max_attempts : int
        Bound on consecutive rejected crops.
    weighting : str
        ``"duration"`` (default): files drawn in proportion to their length,
        every second of the corpus equally likely; ``"file"``: every file
        equally likely (a fixed test set then measures each held-out noise
        recording alike, however long it is).
    sources : list of str, optional
        Source label of each file (the manifests' ``source`` field), for
        ``source_mix``.
    source_mix : dict, optional
        Share of the draws per kind of source, e.g. ``{"generated/babble":
        0.25, "generated/synthetic_noise": 0.25, "*": 0.5}``: a key is a
        prefix of the source labels, ``"*"`` the files no other key matches
        (files matching no key and no ``"*"`` are never drawn); within a kind
        files are drawn by ``weighting``. Kinds without files are left out
        and the shares renormalised. None (default): no mixing by source.
    max_bad_fraction : float
        Fraction of the files that may turn out unusable at read time before
        an error (module docstring); they are skipped until then.

    Example
    -------
    >>> import soundfile as sf
    >>> path = str(getfixture("tmp_path") / "a.wav")
    >>> sf.write(path, np.random.default_rng(0).normal(0, 0.1, 8000), 16000)
    >>> sampler = SignalSampler([path], crop_size_sec=1.0, rng=0)
    >>> crop = sampler.sampler()
    >>> crop.shape, crop.dtype
    ((16000,), dtype('float32'))
    """

    def __init__(
        self,
        paths,
        crop_size_sec=5.0,
        min_rms_db=-38.0,
        sr=16000,
        rng=None,
        num_frames=None,
        ids=None,
        max_attempts=50,
        weighting="duration",
        max_bad_fraction=0.1,
        sources=None,
        source_mix=None,
    ):
        self.paths = _as_path_list(paths, "SignalSampler")
        if weighting not in ("duration", "file"):
            raise ValueError(f"weighting must be 'duration' or 'file', got {weighting!r}")
        self.weighting = weighting
        self.sr = int(sr)
        self.crop_size = int(round(float(crop_size_sec) * self.sr))
        if self.crop_size <= 0:
            raise ValueError(f"crop_size_sec={crop_size_sec} gives an empty crop at {sr} Hz")
        self.min_rms_db = None if min_rms_db is None else float(min_rms_db)
        if int(max_attempts) < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts = int(max_attempts)
        if num_frames is None:
            self.num_frames = _read_headers(self.paths, self.sr)
        else:
            self.num_frames = [int(n) for n in num_frames]
            if len(self.num_frames) != len(self.paths):
                raise ValueError("num_frames must have one entry per path")
            if min(self.num_frames) <= 0:
                raise ValueError("num_frames must be positive")
        self.ids = [Path(p).stem for p in self.paths] if ids is None else [str(i) for i in ids]
        if len(self.ids) != len(self.paths):
            raise ValueError("ids must have one entry per path")
        # Inverse-CDF sampling: O(log n) per draw, proportional to length (or uniform).
        weights = np.asarray(
            self.num_frames if weighting == "duration" else [1] * len(self.paths), np.float64
        )
        self.source_mix = None if source_mix is None else dict(source_mix)
        if self.source_mix is not None:
            weights = mix_by_source(weights, sources, self.source_mix)
        self._cumulative = np.cumsum(weights)
        self.rng = _make_rng(rng)
        self.bad = BadFiles(type(self).__name__, len(self.paths), max_bad_fraction)

    @property
    def bad_files(self) -> dict:
        """Files found unusable at read time (path -> reason), in this process."""
        return self.bad.files

    @classmethod
    def from_manifest(cls, manifest_path, data_root=None, save_root=None, **kwargs):
        """Build a sampler from a ``data_prepare`` manifest (no header reads).

        Entry durations give the file lengths (trusted to within 1 ms) and
        the recorded ``sr``/``channels`` are checked; ids become metadata
        names. Other keyword arguments go to the constructor.

        Example
        -------
        >>> import json, soundfile as sf
        >>> folder = getfixture("tmp_path")
        >>> sf.write(str(folder / "a.wav"), np.full(16000, 0.1), 16000)
        >>> entry = {"path": "{data_root}/a.wav", "duration": 1.0, "sr": 16000, "channels": 1}
        >>> _ = (folder / "speech_train.json").write_text(json.dumps({"a": entry}))
        >>> sampler = SignalSampler.from_manifest(folder / "speech_train.json", data_root=folder,
        ...                                       crop_size_sec=0.5, rng=0)
        >>> sampler.sampler().shape
        (8000,)
        """
        sr = int(kwargs.pop("sr", 16000))
        ids, paths, frames, entries = _manifest_entries(manifest_path, data_root, save_root, sr)
        if kwargs.get("source_mix") is not None:
            kwargs["sources"] = [entry.get("source", "") for entry in entries]
        return cls(paths, sr=sr, num_frames=frames, ids=ids, **kwargs)

    def reseed(self, seed) -> None:
        """Replace the generator: ``numpy.random.default_rng(seed)``."""
        self.rng = _make_rng(seed)

    def describe(self) -> dict:
        """Parameters and a digest of the file list (for skip-if-done checks)."""
        return {
            "class": type(self).__name__,
            "crop_size": self.crop_size,
            "min_rms_db": self.min_rms_db,
            "sr": self.sr,
            "max_attempts": self.max_attempts,
            "num_files": len(self.paths),
            "files_sha1": _files_digest(self.paths, self.num_frames),
            # Only when not the default, so that earlier fixed sets stay valid.
            **({"weighting": self.weighting} if self.weighting != "duration" else {}),
            **({"source_mix": self.source_mix} if self.source_mix is not None else {}),
        }

    def _draw_file(self) -> int:
        position = self.rng.random() * self._cumulative[-1]
        index = int(np.searchsorted(self._cumulative, position, side="right"))
        return min(index, len(self.paths) - 1)

    def _draw_crop(self):
        """One unchecked crop and its segments ``[{"id", "path", "start", "stop"}]``."""
        pieces, segments = [], []
        remaining = self.crop_size
        while remaining > 0:
            index = self._draw_file()
            frames = self.num_frames[index]
            path = self.paths[index]
            try:
                if frames >= remaining:
                    start = int(self.rng.integers(0, frames - remaining + 1))
                    piece = _read_segment(path, start, start + remaining, self.sr)
                else:
                    # Short file: take it whole (its true end, should a manifest
                    # duration be slightly off) and continue with another file.
                    start = 0
                    piece = _read_segment(path, 0, remaining, self.sr, allow_short=True)
            except AudioFileError as err:
                self.bad.report(path, err)  # raises past the bound
                continue  # draw another file
            self.bad.ok()
            pieces.append(piece)
            segments.append(
                {"id": self.ids[index], "path": path, "start": start, "stop": start + len(piece)}
            )
            remaining -= len(piece)
        crop = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return crop, segments

    def sampler(self, return_info=False):
        """Draw one crop of exactly ``crop_size`` samples (float32).

        Arguments
        ---------
        return_info : bool
            Also return ``{"segments": [...], "rms_db": float, "attempts": int}``
            where each segment is ``{"id", "path", "start", "stop"}`` (frames).

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, dict)

        Raises
        ------
        RuntimeError
            When ``max_attempts`` crops in a row are quieter than ``min_rms_db``.
        AudioFileError
            When a file is off-rate or multichannel (``AudioFormatError``), or
            more files than ``max_bad_fraction`` allows were unusable (unreadable,
            truncated, non-finite; fewer are skipped, see the module docstring).
        """
        tried, loudest = [], -np.inf
        for attempt in range(1, self.max_attempts + 1):
            crop, segments = self._draw_crop()
            rms_db = eval_rms_db(crop)
            if self.min_rms_db is None or rms_db >= self.min_rms_db:
                if return_info:
                    info = {"segments": segments, "rms_db": float(rms_db), "attempts": attempt}
                    return crop, info
                return crop
            loudest = max(loudest, rms_db)
            for segment in segments:
                if segment["path"] not in tried:
                    tried.append(segment["path"])
        shown = ", ".join(tried[:5]) + (f" (+{len(tried) - 5} more)" if len(tried) > 5 else "")
        raise RuntimeError(
            f"SignalSampler: {self.max_attempts} crops in a row were quieter than "
            f"min_rms_db={self.min_rms_db} dB (loudest {loudest:.1f} dB); files tried: {shown}. "
            "Are the files silent? Lower min_rms_db or clean the file list."
        )


class RirSampler:
    """Random whole room impulse responses (mono, float32), chosen uniformly.

    Loaded RIRs are kept in a small LRU cache (``cache_size`` entries), so a
    RIR set of typical size is read from disk once per process.

    Arguments
    ---------
    paths : list of str or Path
        Mono RIR files at ``sr``.
    sr : int
        Expected sample rate.
    rng : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Source of randomness.
    ids : list of str, optional
        Names in metadata (default: file stems).
    rt60s : list of float or None, optional
        Known RT60 of each RIR in seconds (e.g. from a manifest); ``None``
        entries are unknown (the mixer estimates and caches them).
    read_headers : bool
        Check rate and channels of every file at construction (default);
        ``False`` defers the checks to the first read.
    cache_size : int
        Number of RIRs kept in memory.
    max_bad_fraction : float
        Fraction of the RIRs that may turn out unusable at read time before an
        error (module docstring); they are skipped until then.

    Example
    -------
    >>> import soundfile as sf
    >>> path = str(getfixture("tmp_path") / "rir.wav")
    >>> sf.write(path, np.exp(-np.arange(4000) / 500.0), 16000)
    >>> rir = RirSampler([path], rng=0).sampler()
    >>> rir.shape, rir.dtype
    ((4000,), dtype('float32'))
    """

    def __init__(
        self,
        paths,
        sr=16000,
        rng=None,
        ids=None,
        rt60s=None,
        read_headers=True,
        cache_size=512,
        max_bad_fraction=0.1,
    ):
        self.paths = _as_path_list(paths, "RirSampler")
        self.sr = int(sr)
        if read_headers:
            self.num_frames = _read_headers(self.paths, self.sr)
        else:
            self.num_frames = [None] * len(self.paths)
        self.ids = [Path(p).stem for p in self.paths] if ids is None else [str(i) for i in ids]
        if len(self.ids) != len(self.paths):
            raise ValueError("ids must have one entry per path")
        self.rt60s = [None] * len(self.paths) if rt60s is None else list(rt60s)
        if len(self.rt60s) != len(self.paths):
            raise ValueError("rt60s must have one entry per path")
        self.cache_size = int(cache_size)
        self._cache = OrderedDict()
        self.rng = _make_rng(rng)
        self.bad = BadFiles(type(self).__name__, len(self.paths), max_bad_fraction)

    @property
    def bad_files(self) -> dict:
        """RIRs found unusable at read time (path -> reason), in this process."""
        return self.bad.files

    @classmethod
    def from_manifest(cls, manifest_path, data_root=None, save_root=None, **kwargs):
        """Build from a ``data_prepare`` RIR manifest (``"rt60"`` used when present).

        Headers are not read (checks happen at first read). Other keyword
        arguments go to the constructor.
        """
        sr = int(kwargs.pop("sr", 16000))
        ids, paths, _, entries = _manifest_entries(manifest_path, data_root, save_root, sr)
        rt60s = [entry.get("rt60") for entry in entries]
        kwargs.setdefault("read_headers", False)
        return cls(paths, sr=sr, ids=ids, rt60s=rt60s, **kwargs)

    def reseed(self, seed) -> None:
        """Replace the generator: ``numpy.random.default_rng(seed)``."""
        self.rng = _make_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        """Parameters and a digest of the file list (for skip-if-done checks)."""
        return {
            "class": type(self).__name__,
            "sr": self.sr,
            "num_files": len(self.paths),
            "files_sha1": _files_digest(self.paths, [str(n) for n in self.num_frames]),
        }

    def load(self, index: int) -> np.ndarray:
        """RIR number ``index`` (float32, read-only view of the cached array).

        Raises ``AudioFileError`` naming the file when it is unreadable,
        off-rate, multichannel, non-finite or all zeros.
        """
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        rir = _read_segment(self.paths[index], 0, None, self.sr)
        if not np.any(rir):
            raise AudioFileError(f"{self.paths[index]}: RIR is all zeros")
        rir.setflags(write=False)
        self._cache[index] = rir
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return rir

    def sample_index(self) -> int:
        """Index of a uniformly chosen RIR (not checked: see :meth:`sample_good_index`)."""
        return int(self.rng.integers(0, len(self.paths)))

    def sample_good_index(self) -> int:
        """Index of a uniformly chosen RIR that loads; bad files are skipped and counted.

        Raises ``AudioFileError`` past the bad-file bound (module docstring).
        """
        while True:
            index = self.sample_index()
            try:
                self.load(index)
            except AudioFileError as err:
                self.bad.report(self.paths[index], err)
                continue
            self.bad.ok()
            return index

    def sampler(self, return_info=False):
        """Draw one whole RIR (float32, a copy the caller may modify).

        Arguments
        ---------
        return_info : bool
            Also return ``{"index", "id", "path", "rt60"}`` (``rt60`` may be None).

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, dict)
        """
        index = self.sample_good_index()
        rir = self.load(index).copy()
        if return_info:
            info = {
                "index": index,
                "id": self.ids[index],
                "path": self.paths[index],
                "rt60": self.rt60s[index],
            }
            return rir, info
        return rir
