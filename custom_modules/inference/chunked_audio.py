"""Bounded-memory building blocks for enhancing long recordings.

* :class:`ResampledReader`: random access to one channel of an audio file,
  resampled block by block with ``scipy.signal.resample_poly`` (each block
  read with a margin covering the filter, so blocks equal whole-file
  resampling to float rounding).
* :func:`enhance_in_chunks`: runs a waveform model over overlapping chunks
  and crossfades them with complementary windows, writing consecutive output
  blocks; :func:`crossfade_windows` places the fade for generic or causal
  models (see there). Used by :mod:`custom_modules.inference.enhance`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from custom_modules.audio.files import AudioFileError, read_audio_info


class ResampledReader:
    """Random access to one channel of an audio file, resampled to ``target_sr``.

    ``read(start, stop)`` returns output-rate samples ``[start, stop)`` from
    only the input samples they depend on, equal (to float rounding) to
    ``scipy.signal.resample_poly`` of the whole channel, whose filter is
    ``10 * max(up, down)`` taps long on each side at the upsampled rate.

    Arguments
    ---------
    path : str or Path
        Any file soundfile reads.
    target_sr : int
        Output rate.
    channel : int
        Channel read from multichannel files.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.wav"
    >>> sf.write(path, np.zeros((8000, 2)), 8000)
    >>> with ResampledReader(path, target_sr=16000) as reader:
    ...     (reader.num_samples, reader.read(100, 300).shape, reader.num_channels)
    (16000, (200,), 2)
    """

    def __init__(self, path, target_sr=16000, channel=0):
        self.path = Path(path)
        info = read_audio_info(self.path)
        if not 0 <= channel < info.channels:
            raise AudioFileError(f"{path}: has {info.channels} channel(s), asked for {channel}")
        self.source_sr, self.num_channels, self.channel = info.samplerate, info.channels, channel
        self.num_input = info.frames
        ratio = Fraction(target_sr, self.source_sr)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.num_samples = -(-self.num_input * self.up // self.down)  # resample_poly's length
        self.margin = math.ceil(10 * max(self.up, self.down) / self.up) + 1  # input samples
        try:
            self._file = sf.SoundFile(str(self.path))
        except (RuntimeError, sf.LibsndfileError) as err:
            raise AudioFileError(f"{path}: cannot open ({err})") from err

    @property
    def duration(self) -> float:
        """Input duration in seconds."""
        return self.num_input / self.source_sr

    def _read_input(self, start: int, stop: int) -> np.ndarray:
        try:
            self._file.seek(start)
            data = self._file.read(stop - start, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise AudioFileError(
                f"{self.path}: cannot read samples {start}-{stop} ({err})"
            ) from err
        if data.shape[0] != stop - start:
            raise AudioFileError(
                f"{self.path}: truncated: the header announces {self.num_input} frames "
                f"but only {start + data.shape[0]} could be read"
            )
        samples = np.ascontiguousarray(data[:, self.channel])
        if not np.all(np.isfinite(samples)):
            raise AudioFileError(f"{self.path}: contains NaN or Inf samples")
        return samples

    def read(self, start: int, stop: int) -> np.ndarray:
        """Output-rate samples ``[start, stop)`` as float32."""
        if not 0 <= start < stop <= self.num_samples:
            raise ValueError(f"bad range [{start}, {stop}) for {self.num_samples} samples")
        if self.up == self.down:
            return self._read_input(start, stop)
        # Start on a multiple of `down` so that block outputs fall on the whole-file grid.
        in_start = max(0, (start * self.down // self.up - self.margin) // self.down * self.down)
        in_stop = min(self.num_input, -(-(stop - 1) * self.down // self.up) + self.margin + 1)
        resampled = resample_poly(self._read_input(in_start, in_stop), self.up, self.down)
        offset = in_start // self.down * self.up
        return resampled[start - offset : stop - offset].astype(np.float32)

    def close(self):
        """Close the underlying file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def chunk_starts(num_samples: int, chunk: int, overlap: int) -> list:
    """Start of every chunk: hop ``chunk - overlap``; only the last may be shorter.

    The last chunk always extends past the overlap it shares with the previous one.

    Example
    -------
    >>> chunk_starts(25, chunk=10, overlap=2)
    [0, 8, 16]
    >>> chunk_starts(7, chunk=10, overlap=2)
    [0]
    """
    if not 0 <= 2 * overlap <= chunk:
        raise ValueError(f"need 0 <= overlap ({overlap}) <= chunk / 2 ({chunk} / 2)")
    if num_samples <= chunk:
        return [0]
    hop = chunk - overlap
    return [k * hop for k in range(math.ceil((num_samples - chunk) / hop) + 1)]


def crossfade_windows(overlap: int, lookahead=None, ramp=320):
    """Complementary fade-in and fade-out (``fade_in + fade_out = 1``) over an overlap.

    Without ``lookahead`` (any model): a raised cosine over the whole overlap.
    With ``lookahead`` (a causal model whose output sample ``t`` depends on
    input samples up to ``t + lookahead``): the later chunk takes over as late
    as possible, with a raised-cosine ramp of ``ramp`` samples ending
    ``lookahead`` samples before the overlap ends, where the earlier chunk
    still saw all the future it needs. The later chunk has then accumulated
    ``overlap - lookahead - ramp`` samples of past; when that covers the
    model's receptive field, both chunks agree with whole-file processing.
    An overlap not longer than ``lookahead`` falls back to the full-length fade.

    Example
    -------
    >>> fade_in, fade_out = crossfade_windows(4)
    >>> bool(np.allclose(fade_in + fade_out, 1.0)), bool(fade_in[0] < fade_in[-1])
    (True, True)
    >>> fade_in, _ = crossfade_windows(10, lookahead=3, ramp=2)
    >>> [round(float(v), 2) for v in fade_in]
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.15, 0.85, 1.0, 1.0, 1.0]
    """
    fade_in = np.zeros(overlap)
    if lookahead is None or overlap <= lookahead:
        ramp_start, ramp_stop = 0, overlap
    else:
        ramp_stop = overlap - lookahead
        ramp_start = max(0, ramp_stop - ramp)
    length = ramp_stop - ramp_start
    fade_in[ramp_start:ramp_stop] = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
    fade_in[ramp_stop:] = 1.0
    return fade_in.astype(np.float32), (1.0 - fade_in).astype(np.float32)


def enhance_in_chunks(
    process, read, num_samples, write, chunk, overlap, lookahead=None, ramp=320
) -> float:
    """Enhance a signal chunk by chunk, crossfading overlaps; returns the output peak.

    Arguments
    ---------
    process : callable
        float32 array ``(n,)`` -> enhanced array ``(n,)``.
    read : callable
        ``read(start, stop)`` -> input samples ``[start, stop)``.
    num_samples : int
        Signal length.
    write : callable
        Receives consecutive output blocks, ``num_samples`` samples in total.
    chunk, overlap : int
        Chunk length and overlap in samples (``overlap <= chunk / 2``).
    lookahead, ramp : int, optional
        Crossfade placement for causal models (see :func:`crossfade_windows`).

    Example
    -------
    >>> signal = np.arange(25, dtype=np.float32)
    >>> blocks = []
    >>> peak = enhance_in_chunks(lambda x: 2 * x, lambda a, b: signal[a:b], 25,
    ...                          blocks.append, chunk=10, overlap=2)
    >>> bool(np.allclose(np.concatenate(blocks), 2 * signal)), peak
    (True, 48.0)
    """
    starts = chunk_starts(num_samples, chunk, overlap)
    fade_in, fade_out = crossfade_windows(overlap, lookahead, ramp)
    hop = chunk - overlap
    tail = None  # faded-out overlap of the previous chunk
    peak = 0.0
    for index, start in enumerate(starts):
        stop = min(start + chunk, num_samples)
        out = np.asarray(process(read(start, stop)), dtype=np.float32)
        if out.shape != (stop - start,):
            raise ValueError(f"the model returned shape {out.shape} for {stop - start} samples")
        if not np.all(np.isfinite(out)):
            raise ValueError(f"the model output has NaN or Inf in samples {start}-{stop}")
        if tail is not None:
            out[:overlap] = out[:overlap] * fade_in + tail
        if index == len(starts) - 1:
            block = out
        else:  # full-length chunk: its end is crossfaded with the next one
            block, tail = out[:hop], out[hop:] * fade_out
        write(block)
        peak = max(peak, float(np.max(np.abs(block))))
    return peak
