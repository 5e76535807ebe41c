"""Streaming STFT and inverse STFT with the framing of ``ComplexSpectralMapping``.

The offline model (``custom_modules/models/unet_tcm.py``) frames the waveform
causally: ``n_fft // 2`` zeros are prepended, frame ``k`` covers samples
``[k*hop - n_fft//2, k*hop - n_fft//2 + n_fft)`` and is weighted by a periodic
Hann window of ``win_length`` samples centred in ``n_fft``; synthesis is
``torch.istft(center=True)``: weighted overlap-add divided by the sum of the
squared windows, then the first ``n_fft // 2`` samples dropped.

Here the same computation runs one hop (one chunk) at a time:

* ``StreamingSTFT.push(chunk)`` appends ``hop`` samples and returns the
  spectrum of the frame they complete (None for the first
  ``frame_delay_chunks`` chunks, which is never the case with the defaults).
* ``StreamingISTFT.push(frame)`` overlap-adds one enhanced frame and returns the
  ``hop`` output samples that no later frame can change any more.

Latency
-------
Output sample ``t`` is final once the frame after it has been added, except
that a periodic Hann window is zero at its first sample, so that frame
contributes nothing there. With the defaults (``n_fft = win_length = 320``,
``hop = 160``) chunk ``c`` (input samples ``[160c, 160c + 160)``) yields
offline output samples ``[160c - 159, 160c]``: the chunk stream is the offline
output delayed by ``stream_delay = 159`` samples. Counted from the moment an
input sample enters a real-time audio loop that plays each output chunk during
the next hop, the algorithmic latency is ``stream_delay + hop = 319`` samples
(19.94 ms, the 20 ms window minus the zero first sample of the Hann window).
``stream_delay_samples`` gives the general figure.

Example
-------
>>> import numpy as np
>>> stft, istft = StreamingSTFT(), StreamingISTFT()
>>> frame = stft.push(np.zeros(160, dtype=np.float32))  # (bins, real/imag)
>>> frame.shape
(161, 2)
>>> istft.push(frame).shape
(160,)
>>> stream_delay_samples(320, 320, 160)
159
"""

from __future__ import annotations

import math

import numpy as np


def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples centred in ``n_fft`` (as ``torch.stft``).

    Example
    -------
    >>> w = hann_window(320, 320)
    >>> w.shape, float(w[0]), float(w[160])
    ((320,), 0.0, 1.0)
    """
    if not 0 < win_length <= n_fft:
        raise ValueError(f"need 0 < win_length ({win_length}) <= n_fft ({n_fft})")
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)
    padded = np.zeros(n_fft)
    offset = (n_fft - win_length) // 2
    padded[offset : offset + win_length] = window
    return padded


def _check_framing(n_fft: int, win_length: int, hop_length: int) -> None:
    if not 0 < hop_length < win_length <= n_fft:
        raise ValueError(
            f"need 0 < hop_length ({hop_length}) < win_length ({win_length}) <= n_fft ({n_fft})"
        )


def frame_delay_chunks(n_fft: int, hop_length: int) -> int:
    """Chunks of ``hop_length`` samples received before the first frame is complete, minus one.

    Frame ``k`` needs input samples up to ``k*hop + n_fft - n_fft//2 - 1``, so
    the chunk that completes it is ``k + frame_delay_chunks``.

    Example
    -------
    >>> frame_delay_chunks(320, 160), frame_delay_chunks(512, 128)
    (0, 1)
    """
    return math.ceil((n_fft - n_fft // 2) / hop_length) - 1


def stream_delay_samples(n_fft: int, win_length: int, hop_length: int) -> int:
    """Delay of the streamed output relative to the offline output, in samples.

    ``streamed[s] == offline[s - delay]`` (zeros before the start). See the
    module docstring for how it is derived.

    Example
    -------
    >>> stream_delay_samples(320, 320, 160), stream_delay_samples(512, 400, 128)
    (159, 327)
    """
    _check_framing(n_fft, win_length, hop_length)
    window_offset = (n_fft - win_length) // 2
    return frame_delay_chunks(n_fft, hop_length) * hop_length + n_fft // 2 - window_offset - 1


class _Framing:
    """Framing shared by the streaming analysis and synthesis (defaults as the offline model)."""

    def __init__(self, n_fft=320, win_length=None, hop_length=None):
        win_length = n_fft if win_length is None else win_length
        hop_length = win_length // 2 if hop_length is None else hop_length
        _check_framing(n_fft, win_length, hop_length)
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.num_freqs = n_fft // 2 + 1
        self.window = hann_window(win_length, n_fft).astype(np.float32)


class StreamingSTFT(_Framing):
    """Causal framing and real FFT, one chunk of ``hop_length`` samples at a time.

    Spectra are ``(n_fft // 2 + 1, 2)`` float32 arrays: real and imaginary
    parts interleaved per bin (a complex64 spectrum viewed as float32).

    Arguments
    ---------
    n_fft, win_length, hop_length : int
        As in ``ComplexSpectralMapping`` (window defaults to ``n_fft``, hop to
        half the window).

    Example
    -------
    >>> stft = StreamingSTFT(n_fft=320)
    >>> stft.push(np.ones(160, dtype=np.float32)).shape
    (161, 2)
    """

    def __init__(self, n_fft=320, win_length=None, hop_length=None):
        super().__init__(n_fft, win_length, hop_length)
        # Samples at the end of the stream that belong to no complete frame yet
        # (0 when n_fft - n_fft//2 is a multiple of the hop, as with the defaults).
        self._lag = (n_fft // 2 - n_fft) % self.hop_length
        self._buffer = np.zeros(n_fft + self._lag, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next chunk is the start of a new signal."""
        self._buffer[:] = 0.0
        # Samples of the zero-padded stream received so far (the prepended zeros).
        self._received = self.n_fft // 2

    def push(self, chunk: np.ndarray):
        """Append ``hop_length`` samples; return the spectrum of the frame they complete.

        Returns None for the first ``frame_delay_chunks`` chunks (no frame is
        complete yet; never with the defaults), else a (n_fft//2+1, 2) array.
        """
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.shape != (self.hop_length,):
            raise ValueError(f"expected a chunk of shape ({self.hop_length},), got {chunk.shape}")
        hop = self.hop_length
        self._buffer[:-hop] = self._buffer[hop:]
        self._buffer[-hop:] = chunk
        if self._received < len(self._buffer):
            self._received += hop
            if self._received < len(self._buffer):
                return None
        spectrum = np.fft.rfft(self._buffer[: self.n_fft] * self.window)  # complex64
        return spectrum.astype(np.complex64, copy=False).view(np.float32).reshape(-1, 2)


class StreamingISTFT(_Framing):
    """Weighted overlap-add synthesis matching ``torch.istft(center=True)``, one frame at a time.

    The output is the offline synthesis delayed by ``delay`` samples
    (``stream_delay_samples``); samples before the start of the signal are 0.

    Arguments
    ---------
    n_fft, win_length, hop_length : int
        As in ``StreamingSTFT``.

    Example
    -------
    >>> istft = StreamingISTFT(n_fft=320)
    >>> istft.push(np.zeros((161, 2), dtype=np.float32)).shape
    (160,)
    >>> istft.delay
    159
    """

    def __init__(self, n_fft=320, win_length=None, hop_length=None):
        super().__init__(n_fft, win_length, hop_length)
        win_length, hop_length = self.win_length, self.hop_length
        self.delay = stream_delay_samples(n_fft, win_length, hop_length)
        # Index (relative to the newest frame's start) of the first sample not yet final.
        self._first_open = (n_fft - win_length) // 2 + 1
        self._signal = np.zeros(n_fft + hop_length, dtype=np.float32)
        # Window envelope (sum of squared windows) of the samples emitted by push once
        # every frame covering them exists; before that it is accumulated as offline.
        squared = self.window.astype(np.float64) ** 2
        start = self._first_open
        steady = [
            squared[j::hop_length].sum()  # every earlier frame covering relative position j
            for j in range(start, start + hop_length)
        ]
        self._steady_inverse = (1.0 / np.array(steady)).astype(np.float32)
        self._warmup_frames = math.ceil(n_fft / hop_length)
        self._envelope = np.zeros(n_fft + hop_length, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame is frame 0 of a new signal."""
        self._signal[:] = 0.0
        self._envelope[:] = 0.0
        self._frames = 0
        # Samples of frame 0's output that precede the signal start (emitted as zeros).
        window_offset = (self.n_fft - self.win_length) // 2
        self._leading = max(0, self.n_fft // 2 - window_offset - 1)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Overlap-add one frame (n_fft//2+1, 2) real/imag; return ``hop_length`` final samples."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if frame.shape != (self.num_freqs, 2):
            raise ValueError(f"expected a frame of shape ({self.num_freqs}, 2), got {frame.shape}")
        hop, n_fft, start = self.hop_length, self.n_fft, self._first_open
        samples = np.fft.irfft(frame.view(np.complex64)[:, 0], n=n_fft)
        np.multiply(samples, self.window, out=samples)
        self._signal[:n_fft] += samples
        if self._frames >= self._warmup_frames:
            out = self._signal[start : start + hop] * self._steady_inverse
        else:  # start of the signal: the envelope of the frames that exist so far
            self._envelope[:n_fft] += self.window * self.window
            envelope = self._envelope[start : start + hop]
            # torch.istft divides by the envelope; it is 0 only before the signal
            # start (inside the leading zeros), where there is nothing to divide.
            out = np.zeros(hop, dtype=np.float32)
            np.divide(self._signal[start : start + hop], envelope, out=out, where=envelope > 0)
            self._envelope[:-hop] = self._envelope[hop:]
            self._envelope[-hop:] = 0.0
            self._frames += 1
        if self._leading > 0:
            zeros = min(self._leading, hop)
            out[:zeros] = 0.0
            self._leading -= zeros
        self._signal[:-hop] = self._signal[hop:]
        self._signal[-hop:] = 0.0
        return out
