"""Spectrogram figures for listening-free inspection of enhancement results.

``save_spectrograms_png`` writes one log-magnitude spectrogram panel per named
signal (e.g. mixture / target / estimate), stacked vertically on a shared
colour scale; ``spectrogram_image`` renders the same figure to an RGB array
for TensorBoard's ``add_image(..., dataformats="HWC")``.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas
directly, so no pyplot global state (backend, current figure) is touched and
nothing leaks between calls.
"""

from __future__ import annotations

import io

import numpy as np
import scipy.signal

from custom_modules.audio.files import atomic_write_bytes

DYNAMIC_RANGE_DB = 80.0
# Level given to exact zeros (silent frames) before the colour scale clips it.
SILENCE_DB = -300.0
SILENT_VMAX_DB = 0.0


def _check_signals(signals) -> dict:
    """Validated ``{name: 1-D float64 array}`` from a dict (or one array)."""
    if isinstance(signals, np.ndarray):
        signals = {"signal": signals}
    if not isinstance(signals, dict) or not signals:
        raise ValueError("signals must be a non-empty dict {name: 1-D array}")
    checked = {}
    for name, signal in signals.items():
        array = np.asarray(signal, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                f"signal {name!r} must be a non-empty 1-D array, got shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"signal {name!r} contains NaN or Inf values")
        checked[str(name)] = array
    return checked


def log_spectrogram_db(signal, sr=16000, n_fft=512, hop=128):
    """Log-magnitude STFT (Hann window) in dB.

    Magnitudes are scaled so that a sine of amplitude 1 peaks near 0 dB; exact
    zeros give -300 dB (finite, no warning). Signals shorter than ``n_fft``
    are zero-padded to ``n_fft`` samples.

    Arguments
    ---------
    signal : array_like
        1-D signal.
    sr : int
        Sample rate in Hz.
    n_fft : int
        Window and FFT length in samples.
    hop : int
        Hop between frames in samples (at most ``n_fft``).

    Returns
    -------
    (numpy.ndarray, tuple)
        dB magnitudes of shape ``(n_fft // 2 + 1, frames)`` and the
        ``(t0, t1, f0, f1)`` extent in seconds and Hz for ``imshow``.

    Example
    -------
    >>> spec_db, extent = log_spectrogram_db(np.zeros(1600), sr=16000, n_fft=512, hop=128)
    >>> spec_db.shape[0], bool(np.all(np.isfinite(spec_db)))
    (257, True)
    """
    if int(n_fft) != n_fft or n_fft < 2:
        raise ValueError(f"n_fft must be an integer >= 2, got {n_fft}")
    if int(hop) != hop or not 1 <= hop <= n_fft:
        raise ValueError(f"hop must be an integer in [1, n_fft={n_fft}], got {hop}")
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sr must be a positive integer, got {sr}")
    array = _check_signals({"signal": signal})["signal"]
    if array.size < n_fft:
        # The STFT needs half a window of signal; pad short signals to one window.
        array = np.concatenate([array, np.zeros(int(n_fft) - array.size)])
    window = scipy.signal.get_window("hann", int(n_fft))
    stft = scipy.signal.ShortTimeFFT(
        window, hop=int(hop), fs=int(sr), mfft=int(n_fft), scale_to="magnitude"
    )
    # "magnitude" scaling gives a sine of amplitude A a peak of A / 2 (one
    # side of the spectrum); doubling puts it at A.
    magnitude = 2.0 * np.abs(stft.stft(array))
    with np.errstate(divide="ignore"):
        spec_db = np.maximum(20.0 * np.log10(magnitude), SILENCE_DB)
    # Centred bins: each pixel is drawn around its frame time and bin frequency.
    return spec_db, stft.extent(array.size, center_bins=True)


def _spectrogram_figure(signals, sr, title, n_fft, hop, dpi):
    from matplotlib.figure import Figure

    checked = _check_signals(signals)
    spectra = {name: log_spectrogram_db(x, sr, n_fft, hop) for name, x in checked.items()}
    peaks = [spec.max() for spec, _ in spectra.values()]
    vmax = max(peaks)
    if vmax <= SILENCE_DB:
        vmax = SILENT_VMAX_DB  # every signal is silent: any finite scale will do
    vmin = vmax - DYNAMIC_RANGE_DB

    figure = Figure(figsize=(8.0, 1.0 + 2.0 * len(spectra)), dpi=dpi, layout="constrained")
    axes = figure.subplots(len(spectra), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, (name, (spec_db, extent)) in zip(axes, spectra.items(), strict=True):
        t0, t1, f0, f1 = extent
        image = ax.imshow(
            np.clip(spec_db, vmin, vmax),
            origin="lower",
            aspect="auto",
            extent=(t0, t1, f0 / 1000.0, f1 / 1000.0),
            vmin=vmin,
            vmax=vmax,
            cmap="magma",
            interpolation="nearest",
        )
        ax.set_ylabel("freq (kHz)")
        ax.set_title(name, fontsize="medium", loc="left")
    axes[-1].set_xlabel("time (s)")
    figure.colorbar(image, ax=list(axes), label="dB")
    if title:
        figure.suptitle(title)
    return figure


def save_spectrograms_png(path, signals, sr=16000, title=None, n_fft=512, hop=128, dpi=100):
    """Write stacked log-magnitude spectrograms of named signals to a PNG.

    Arguments
    ---------
    path : str or Path
        Output file (parent folders created; written atomically).
    signals : dict
        ``{name: 1-D array}``, one panel each, top to bottom in dict order.
    sr : int
        Sample rate in Hz.
    title : str, optional
        Figure title.
    n_fft, hop : int
        STFT window/FFT length and hop in samples.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    str or Path
        ``path``.

    Notes
    -----
    The colour scale is shared: its top is the loudest bin over all panels and
    it spans 80 dB. Silent signals render as the bottom colour.
    """
    figure = _spectrogram_figure(signals, sr, title, n_fft, hop, dpi)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def spectrogram_image(signals, sr=16000, title=None, n_fft=512, hop=128, dpi=60):
    """The figure of ``save_spectrograms_png`` as an ``(H, W, 3)`` uint8 RGB array.

    Arguments
    ---------
    signals : dict or numpy.ndarray
        ``{name: 1-D array}``, or a single 1-D array (one panel).
    sr, title, n_fft, hop, dpi
        As in ``save_spectrograms_png`` (a lower default dpi keeps TensorBoard
        event files small).

    Returns
    -------
    numpy.ndarray
        RGB image, shape ``(H, W, 3)``, dtype uint8.

    Example
    -------
    >>> image = spectrogram_image(np.zeros(1600), sr=16000)
    >>> image.ndim, image.shape[2], image.dtype
    (3, 3, dtype('uint8'))
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = _spectrogram_figure(signals, sr, title, n_fft, hop, dpi)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
