"""Per-file work of data preparation, and the process pool that runs it.

One call of :func:`inspect_file` reads one file's header, checks its samples
(chunked, so memory stays bounded for long files), converts it to the target
rate / channel 0 when needed (written once into ``<save_root>/resampled/``) and,
for RIRs, estimates the RT60 on the converted signal. :func:`run_tasks` runs
it over many files in a process pool with a tqdm progress bar.

Policy:

* A problem with the *input* (unreadable header, a WAV holding fewer frames
  than its header declares, zero frames, NaN/Inf samples, all-zero channel 0)
  makes the file "bad": the result carries the reason and data preparation
  lists it in its report.
* A readable RIR whose RT60 cannot be estimated (too little decay above its
  noise floor, e.g. near-anechoic) is kept with ``rt60: null`` and
  ``rt60_error`` saying why.
* A problem writing the *output* (disk full, permissions) is not the file's
  fault: it is raised and stops the preparation.
* Multichannel files keep channel 0 only (the documented policy for RIRs and
  noises; speech corpora are mono). Channel 0 is what is checked.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from custom_modules.audio.files import wav_frame_counts, write_audio

# Frames read per block when checking samples: bounds memory for long files.
BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True)
class FileTask:
    """What a worker needs to know about one file (small, cheap to pickle).

    Arguments
    ---------
    path : str
        Absolute path of the source file.
    rel_path : str
        Path relative to the data root, with "/" separators.
    save_root : str
        Save folder; converted copies go to ``<save_root>/resampled/<rel_path>``.
    sample_rate : int
        Target sample rate.
    is_rir : bool
        Keep RIR precision (float wav) and estimate the RT60.
    entry_path : str, optional
        Manifest path of the file when it is used as it is (default
        ``{data_root}/<rel_path>``); files outside the data root (extra
        folders) give their absolute path, generated ones ``{save_root}/...``.
    """

    path: str
    rel_path: str
    save_root: str
    sample_rate: int
    is_rir: bool = False
    entry_path: str | None = None


@dataclass(frozen=True)
class FileResult:
    """Outcome for one file: an ``entry`` (manifest fields) or a ``reason`` it is bad."""

    rel_path: str
    entry: dict | None = None
    reason: str | None = None


def converted_rel_path(rel_path: str) -> str:
    """Relative path of the converted copy under ``<save_root>``.

    Example
    -------
    >>> converted_rel_path("clean/a/b.wav")
    'resampled/clean/a/b.wav'
    """
    return f"resampled/{rel_path}"


def _output_subtype(path: str, is_rir: bool) -> str:
    # RIRs keep float precision (their tails are tens of dB down); corpus
    # audio is fine as 16-bit PCM. FLAC has no float subtype.
    if not is_rir:
        return "PCM_16"
    return "PCM_24" if path.lower().endswith(".flac") else "FLOAT"


def _read_channel0_checked(handle: sf.SoundFile, keep: bool):
    """Stream channel 0 of an open file in blocks; return (samples or None, frames, reason)."""
    kept = []
    frames = 0
    any_nonzero = False
    for block in handle.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
        channel0 = block[:, 0]
        if not np.all(np.isfinite(channel0)):
            return None, frames, "non-finite samples (NaN or Inf)"
        if not any_nonzero and np.any(channel0 != 0):
            any_nonzero = True
        if keep:
            kept.append(channel0.copy())
        frames += len(channel0)
    if frames == 0:
        return None, 0, "zero length (no readable frames)"
    if not any_nonzero:
        return None, frames, "silent (all samples of channel 0 are zero)"
    samples = np.concatenate(kept) if keep else None
    return samples, frames, None


def _resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return samples
    # Imported here: scipy.signal takes seconds to import, and CLIs (--help)
    # and 16 kHz corpora do not need it.
    from scipy.signal import resample_poly

    ratio = math.gcd(orig_sr, target_sr)
    # Polyphase FIR resampling (scipy's default Kaiser window), computed in float64.
    resampled = resample_poly(samples.astype(np.float64), target_sr // ratio, orig_sr // ratio)
    return resampled.astype(np.float32)


def _reusable_copy(src: str, dst: Path, sample_rate: int, frames: int) -> bool:
    """A converted copy from an earlier (possibly interrupted) run that is still valid."""
    if not dst.exists() or dst.stat().st_mtime < os.stat(src).st_mtime:
        return False
    try:
        info = sf.info(str(dst))
    except (RuntimeError, sf.LibsndfileError):
        return False
    return info.samplerate == sample_rate and info.channels == 1 and info.frames == frames


def _one_line(text) -> str:
    # The report is TSV: one line per file.
    return " ".join(str(text).split())


def inspect_file(task: FileTask) -> FileResult:
    """Check, convert (if needed) and describe one audio file.

    Returns
    -------
    FileResult
        ``entry`` has ``path`` (``{data_root}/...`` for untouched files,
        ``{save_root}/resampled/...`` for converted copies), ``duration`` (s),
        ``sr``, ``channels`` (of the file at ``path``), ``orig_sr`` /
        ``orig_channels`` when converted and ``rt60`` (s, or None with
        ``rt60_error``) for RIRs.
    """
    src = task.path
    try:
        handle = sf.SoundFile(src)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        return FileResult(task.rel_path, reason=_one_line(f"unreadable header ({err})"))
    try:
        counts = wav_frame_counts(src)
    except OSError:
        counts = None  # soundfile could open it: let the sample checks decide
    if counts is not None and counts[1] < counts[0]:
        handle.close()
        return FileResult(
            task.rel_path,
            reason=f"truncated: the header says {counts[0]} frames, only {counts[1]} are readable",
        )
    with handle:
        orig_sr, orig_channels = handle.samplerate, handle.channels
        if handle.frames <= 0:
            return FileResult(task.rel_path, reason="zero length (no audio frames)")
        convert = orig_sr != task.sample_rate or orig_channels > 1
        keep_samples = convert or task.is_rir
        try:
            samples, frames, reason = _read_channel0_checked(handle, keep_samples)
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            return FileResult(task.rel_path, reason=_one_line(f"cannot read samples ({err})"))
    if reason is not None:
        return FileResult(task.rel_path, reason=reason)

    entry = {}
    if convert:
        rel_out = converted_rel_path(task.rel_path)
        dst = Path(task.save_root) / rel_out
        expected_frames = math.ceil(frames * task.sample_rate / orig_sr)
        if _reusable_copy(src, dst, task.sample_rate, expected_frames):
            if task.is_rir:
                samples, _ = sf.read(str(dst), dtype="float32")
        else:
            samples = _resample(samples, orig_sr, task.sample_rate)
            write_audio(dst, samples, task.sample_rate, subtype=_output_subtype(src, task.is_rir))
        entry["path"] = "{save_root}/" + rel_out
        entry["duration"] = round(expected_frames / task.sample_rate, 6)
        entry["sr"] = task.sample_rate
        entry["channels"] = 1
        entry["orig_sr"] = orig_sr
        entry["orig_channels"] = orig_channels
    else:
        entry["path"] = task.entry_path or "{data_root}/" + task.rel_path
        entry["duration"] = round(frames / orig_sr, 6)
        entry["sr"] = orig_sr
        entry["channels"] = orig_channels

    if task.is_rir:
        # Imported here so the manifest modules import without the RIR tools.
        from custom_modules.audio.rir import estimate_rt60

        try:
            rt60 = float(estimate_rt60(samples, task.sample_rate))
            if not math.isfinite(rt60) or rt60 <= 0:
                raise ValueError(f"estimate is {rt60}")
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            # A readable RIR stays usable (e.g. a near-anechoic one decays too
            # fast to measure): kept, with the RT60 left unknown and why.
            entry["rt60"] = None
            entry["rt60_error"] = _one_line(err)
        else:
            entry["rt60"] = round(rt60, 4)
    return FileResult(task.rel_path, entry=entry)


def default_workers(num_workers) -> int:
    """``num_workers`` or, when None, the number of CPUs."""
    return max(1, num_workers if num_workers is not None else (os.cpu_count() or 1))


def pool_context():
    # "fork" where available (Linux), as torch's DataLoader workers: no start-up
    # cost and no re-import of the caller's __main__ (forkserver and spawn
    # re-run unguarded scripts). Workers only use numpy/scipy/soundfile, never
    # the caller's threads. Elsewhere "spawn" (scripts need a __main__ guard).
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _preload_for_workers(tasks: list) -> None:
    # Forked workers inherit the parent's modules: import the slow ones once
    # here instead of once per worker (scipy.signal takes seconds).
    import scipy.signal  # noqa: F401

    if any(task.is_rir for task in tasks):
        import custom_modules.audio.rir  # noqa: F401


def run_tasks(tasks: list, num_workers: int, desc: str) -> list:
    """Run :func:`inspect_file` on every task, in a process pool when ``num_workers`` > 1.

    Results come back in task order; tqdm shows progress.
    """
    progress = tqdm(total=len(tasks), desc=desc, unit="file", dynamic_ncols=True)
    results = []
    try:
        if num_workers <= 1 or len(tasks) < 2:
            for task in tasks:
                results.append(inspect_file(task))
                progress.update()
        else:
            # Chunks amortise the inter-process round trips on many small
            # files while leaving enough chunks for load balancing.
            chunksize = max(1, min(64, len(tasks) // (num_workers * 8)))
            _preload_for_workers(tasks)
            with ProcessPoolExecutor(num_workers, mp_context=pool_context()) as pool:
                for result in pool.map(inspect_file, tasks, chunksize=chunksize):
                    results.append(result)
                    progress.update()
    finally:
        progress.close()
    return results
