"""Room impulse response (RIR) utilities: RT60, late-reverb decay, convolution.

* ``estimate_rt60``: reverberation time from the decay of a RIR, either by a
  linear fit of the windowed power in dB (``"decay_fit"``) or of Schroeder's
  backward-integrated energy decay curve (``"schroeder"``).
* ``decay_rir`` / ``early_rir``: targets for dereverberation, keeping the
  direct path and early reflections and attenuating (or removing) the rest.
* ``convolve_same_length``: reverberate a signal without changing its length.
* ``plot_rir_decay``: PNG of the power decay of a RIR and its decayed version.

All functions take 1-D RIRs (finite, not silent) and raise a ``ValueError``
naming the problem otherwise. Times are in seconds, rates in Hz.
"""

from __future__ import annotations

import io

import numpy as np
import scipy.signal

from custom_modules.audio.files import atomic_write_bytes

# Analysis constants (not configuration): the window of the power envelope
# and the levels that delimit the decay fit, see ``decay_fit_range``.
POWER_WINDOW_SEC = 0.010
POWER_HOP_SEC = 0.0025
FIT_START_DB = -5.0
FIT_STOP_DB = -35.0
NOISE_MARGIN_DB = 10.0
MIN_FIT_RANGE_DB = 10.0
POWER_FLOOR_DB = 150.0


def _as_rir(rir, name: str = "rir") -> np.ndarray:
    """``rir`` as a 1-D float64 array, checked to be finite and not silent."""
    array = np.asarray(rir, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one channel), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if not np.any(array):
        raise ValueError(f"{name} is silent (all zeros)")
    return array


def _check_positive(value, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _check_sr(sr) -> int:
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sr must be a positive integer, got {sr}")
    return int(sr)


def main_tap_index(rir) -> int:
    """Index of the main tap (the largest absolute value, i.e. the direct path).

    Example
    -------
    >>> main_tap_index(np.array([0.0, 0.1, -0.9, 0.3]))
    2
    """
    return int(np.argmax(np.abs(_as_rir(rir))))


def windowed_power_db(rir, sr: int = 16000, window_sec=POWER_WINDOW_SEC, hop_sec=POWER_HOP_SEC):
    """Short-time power of a RIR in dB (Hann-weighted mean of the squares).

    Frame ``i`` is centred on sample ``i * hop`` (the signal is zero-padded by
    half a window on both sides). Levels are floored at 150 dB below the
    largest frame so that exact zeros stay finite.

    Arguments
    ---------
    rir : array_like
        1-D impulse response.
    sr : int
        Sample rate in Hz.
    window_sec, hop_sec : float
        Window length and hop in seconds (10 ms and 2.5 ms by default).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Frame-centre times in seconds and power in dB re RMS 1.

    Example
    -------
    >>> times, power_db = windowed_power_db(np.ones(1600), sr=16000)
    >>> times.shape == power_db.shape == (40,)
    True
    """
    x = _as_rir(rir)
    sr = _check_sr(sr)
    window_len = max(2, int(round(_check_positive(window_sec, "window_sec") * sr)))
    hop = max(1, int(round(_check_positive(hop_sec, "hop_sec") * sr)))
    # The periodic Hann window, normalised to unit sum, gives a weighted mean.
    window = scipy.signal.get_window("hann", window_len)
    window /= window.sum()
    half = window_len // 2
    padded = np.concatenate([np.zeros(half), x * x, np.zeros(window_len - half)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, window_len)[: x.size : hop]
    power = frames @ window
    floor = power.max() * 10.0 ** (-POWER_FLOOR_DB / 10.0)
    power_db = 10.0 * np.log10(np.maximum(power, floor))
    times = np.arange(power.size) * hop / sr
    return times, power_db


def schroeder_curve_db(energy: np.ndarray, tail_energy: float = 0.0) -> np.ndarray:
    """Schroeder backward integral of ``energy`` (squared samples) in dB re its start.

    Arguments
    ---------
    energy : numpy.ndarray
        Squared samples, 1-D.
    tail_energy : float
        Energy assumed to follow the last sample (the decay hidden under the
        noise floor when ``energy`` was truncated there); 0 by default.

    Returns
    -------
    numpy.ndarray
        Energy decay curve in dB, 0 at the first sample. Zeros after the last
        non-zero sample give ``-inf`` when ``tail_energy`` is 0 (no warning).

    Example
    -------
    >>> schroeder_curve_db(np.array([0.5, 0.25, 0.25]))[:2]
    array([ 0.        , -3.01029996])
    """
    remaining = np.cumsum(energy[::-1])[::-1] + tail_energy
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(remaining / remaining[0])


def _decay_analysis(x: np.ndarray, sr: int):
    """``(main, truncation, start, stop)`` sample indices; see ``decay_fit_range``."""
    main = int(np.argmax(np.abs(x)))
    tail = x[main:]
    energy = tail * tail
    window_len = int(round(POWER_WINDOW_SEC * sr))
    noise_len = max(window_len, tail.size // 10)
    noise_power = float(np.mean(energy[-noise_len:]))
    times, power_db = windowed_power_db(tail, sr)
    frame_samples = np.round(times * sr).astype(int)
    peak_db = power_db.max()
    noise_db = max(10.0 * np.log10(max(noise_power, 1e-300)), peak_db - POWER_FLOOR_DB)

    # Truncate at the first frame clear of the direct path that is within
    # NOISE_MARGIN_DB of the floor: beyond it, the noise dominates.
    below = (power_db < noise_db + NOISE_MARGIN_DB) & (frame_samples >= window_len)
    truncation = int(frame_samples[np.argmax(below)]) if np.any(below) else tail.size
    if truncation <= window_len:
        raise ValueError(
            "rir: no measurable decay (the windowed power is within "
            f"{NOISE_MARGIN_DB:.0f} dB of the noise floor, estimated from the last 10 %, "
            "within 10 ms of the main tap); cannot estimate its RT60"
        )
    edc_db = schroeder_curve_db(energy[:truncation])
    start = int(np.argmax(edc_db <= FIT_START_DB))
    reaches_stop_level = edc_db <= FIT_STOP_DB
    stop = int(np.argmax(reaches_stop_level)) if np.any(reaches_stop_level) else truncation
    decay_range_db = edc_db[start] - edc_db[stop - 1]
    if stop - start < 2 or not decay_range_db >= MIN_FIT_RANGE_DB:
        raise ValueError(
            f"rir: less than {MIN_FIT_RANGE_DB:.0f} dB of decay above the noise floor "
            f"(floor {noise_db - peak_db:.1f} dB re the peak power); cannot estimate its RT60"
        )
    return main, main + truncation, main + start, main + stop


def decay_fit_range(rir, sr: int = 16000):
    """Sample range of the reverberant decay used by ``estimate_rt60``.

    The choice, made to work on measured RIRs with a noise floor as well as on
    noise-free simulated ones:

    1. The RIR before the main tap (pre-delay) is ignored.
    2. Noise floor: the mean power of the last 10 % of the RIR (at least one
       10 ms window). The decay is truncated where the 10 ms windowed power
       first falls below the floor + 10 dB (at least 10 ms after the main
       tap), so that the noise neither bends the Schroeder curve nor
       flattens the fit.
    3. Within that, the fit spans the Schroeder curve from -5 dB (past the
       direct sound and strongest early reflections) to -35 dB (as a T30), or
       to the truncation point if the noise comes first.

    Arguments
    ---------
    rir : array_like
        1-D impulse response.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    (int, int)
        ``(start, stop)`` sample indices into ``rir`` (stop exclusive).

    Raises
    ------
    ValueError
        When less than 10 dB of decay lies above the noise floor.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(8000) / 8000
    >>> start, stop = decay_fit_range(rng.normal(size=8000) * 10 ** (-3 * t / 0.4), sr=8000)
    >>> 0 < start < stop <= 8000
    True
    """
    _, _, start, stop = _decay_analysis(_as_rir(rir), _check_sr(sr))
    return start, stop


def _slope_to_rt60(slope_db_per_sec: float) -> float:
    if not slope_db_per_sec < 0:
        raise ValueError("rir: the fitted energy does not decay; cannot estimate its RT60")
    return float(-60.0 / slope_db_per_sec)


def estimate_rt60(rir, sr: int = 16000, method: str = "decay_fit") -> float:
    """Reverberation time (RT60, seconds) of a RIR from its energy decay.

    Both methods fit a line to a level-vs-time curve over the range chosen by
    ``decay_fit_range`` (-5 dB to -35 dB of the Schroeder curve, above the
    noise floor) and return ``-60 / slope``:

    * ``"decay_fit"``: the windowed power (Hann, 10 ms) in dB;
    * ``"schroeder"``: Schroeder's backward-integrated energy decay curve,
      integrated up to where the noise floor starts, plus the energy that the
      windowed-power fit extrapolates beyond that point (so the truncation
      does not bend the curve).

    Arguments
    ---------
    rir : array_like
        1-D impulse response (finite, not silent).
    sr : int
        Sample rate in Hz.
    method : str
        ``"decay_fit"`` (default) or ``"schroeder"``.

    Returns
    -------
    float
        RT60 in seconds.

    Raises
    ------
    ValueError
        For an unknown method, an invalid RIR, or a RIR without at least 10 dB
        of decay above its noise floor.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(16000) / 16000
    >>> rir = rng.normal(size=16000) * 10 ** (-3 * t / 0.5)
    >>> abs(estimate_rt60(rir, 16000) - 0.5) < 0.05
    True
    """
    if method not in ("decay_fit", "schroeder"):
        raise ValueError(f"method must be 'decay_fit' or 'schroeder', got {method!r}")
    x = _as_rir(rir)
    sr = _check_sr(sr)
    slope, _, _, _ = _fit_decay_line(x, sr, method)
    return _slope_to_rt60(slope)


def _fit_decay_line(x: np.ndarray, sr: int, method: str):
    """``(slope_db_per_sec, intercept_db, start_sec, stop_sec)`` of the decay fit."""
    main, truncation, start, stop = _decay_analysis(x, sr)
    times, power_db = windowed_power_db(x, sr)
    in_range = (times >= start / sr) & (times < stop / sr)
    if np.count_nonzero(in_range) < 3:
        raise ValueError(
            "rir: decay range shorter than 3 windowed-power frames; cannot estimate its RT60"
        )
    slope, intercept = np.polyfit(times[in_range], power_db[in_range], 1)
    if method == "schroeder":
        # Truncating the integral at the noise floor bends the curve down at
        # its end; add the energy the fitted exponential decay would have
        # after the truncation point (Lundeby-style compensation).
        tail_energy = 0.0
        if slope < 0:
            power_at_truncation = 10.0 ** ((intercept + slope * truncation / sr) / 10.0)
            decay_rate_per_sample = -slope * np.log(10.0) / 10.0 / sr
            tail_energy = power_at_truncation / decay_rate_per_sample
        edc_db = schroeder_curve_db(x[main:truncation] ** 2, tail_energy)
        slope, intercept = np.polyfit(
            np.arange(start, stop) / sr, edc_db[start - main : stop - main], 1
        )
    return float(slope), float(intercept), start / sr, stop / sr


def _joint_index(main: int, seconds: float, sr: int) -> int:
    """Last sample kept unchanged: the main tap plus ``seconds``."""
    if not np.isfinite(seconds) or seconds < 0:
        raise ValueError(f"the early part length must be >= 0 seconds, got {seconds}")
    return main + int(round(seconds * sr))


def decay_rir(rir, decay_rt60_sec=0.3, early_reverb_sec=0.020, sr=16000) -> np.ndarray:
    """Attenuate the late reverberation of a RIR by an exponential decay.

    Samples up to the main tap + ``early_reverb_sec`` (inclusive) are kept
    bit-identical; later samples are multiplied by an envelope that is 1 at
    that joint (continuous) and falls by 60 dB every ``decay_rt60_sec``.

    The envelope multiplies the RIR's own decay, so decay rates in dB/s add:
    a tail with RT60 ``T`` comes out with RT60 ``1 / (1/T + 1/decay_rt60_sec)``
    (e.g. 1.2 s and 0.3 s give 0.24 s).

    Arguments
    ---------
    rir : array_like
        1-D impulse response (finite, not silent).
    decay_rt60_sec : float
        Time for the applied envelope to fall by 60 dB, in seconds.
    early_reverb_sec : float
        Length kept unchanged after the main tap, in seconds.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        The decayed RIR, float64, same length as ``rir``.

    Example
    -------
    >>> rir = np.r_[0.0, 1.0, np.full(1000, 0.1)]
    >>> out = decay_rir(rir, decay_rt60_sec=0.3, sr=16000)
    >>> out.shape, bool(np.all(out[:322] == rir[:322])), bool(out[-1] < rir[-1])
    ((1002,), True, True)
    """
    x = _as_rir(rir)
    sr = _check_sr(sr)
    rt60 = _check_positive(decay_rt60_sec, "decay_rt60_sec")
    joint = _joint_index(int(np.argmax(np.abs(x))), early_reverb_sec, sr)
    out = x.copy()
    if joint + 1 < x.size:
        # 60 dB in power per rt60 is 10 ** (-3 t / rt60) in amplitude.
        elapsed = np.arange(1, x.size - joint) / sr
        out[joint + 1 :] *= 10.0 ** (-3.0 * elapsed / rt60)
    return out


def early_rir(rir, early_sec=0.050, sr=16000) -> np.ndarray:
    """The direct path and early reflections of a RIR: zeros after main tap + ``early_sec``.

    Arguments
    ---------
    rir : array_like
        1-D impulse response (finite, not silent).
    early_sec : float
        Length kept after the main tap, in seconds (0 keeps up to the main tap).
    sr : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        float64, same length as ``rir``; samples up to index
        ``main_tap_index(rir) + round(early_sec * sr)`` (inclusive) unchanged.

    Example
    -------
    >>> early_rir(np.array([0.0, 1.0, 0.5, 0.25, 0.1]), early_sec=1.0, sr=1)
    array([0. , 1. , 0.5, 0. , 0. ])
    """
    x = _as_rir(rir)
    joint = _joint_index(int(np.argmax(np.abs(x))), early_sec, _check_sr(sr))
    out = x.copy()
    out[joint + 1 :] = 0.0
    return out


def convolve_same_length(x, rir) -> np.ndarray:
    """Convolve ``x`` with ``rir`` (FFT) and crop the result to ``len(x)``.

    The output is aligned with the input: the RIR's pre-delay (samples before
    its main tap) delays the output, as a real room would.

    Arguments
    ---------
    x : numpy.ndarray
        1-D floating-point signal (finite).
    rir : array_like
        1-D impulse response (finite, not silent).

    Returns
    -------
    numpy.ndarray
        Reverberant signal, same length and dtype as ``x``.

    Example
    -------
    >>> convolve_same_length(np.ones(5, dtype=np.float32), np.array([1.0, 0.5])).dtype
    dtype('float32')
    """
    signal = np.asarray(x)
    if signal.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {signal.shape}")
    if not np.issubdtype(signal.dtype, np.floating):
        raise ValueError(f"x must be a floating-point array, got dtype {signal.dtype}")
    if signal.size == 0:
        raise ValueError("x is empty")
    if not np.all(np.isfinite(signal)):
        raise ValueError("x contains NaN or Inf values")
    # Taps past len(x) cannot reach the cropped output: drop them first.
    impulse = _as_rir(rir)[: signal.size]
    wet = scipy.signal.oaconvolve(signal.astype(np.float64), impulse)[: signal.size]
    return wet.astype(signal.dtype, copy=False)


def plot_rir_decay(rir, sr, path, decay_rt60_sec=0.3):
    """Write a PNG of the windowed power decay of a RIR and its decayed version.

    Both curves are the 10 ms windowed power in dB against time, each with its
    fitted decay line (dashed, over the fit range); the legend gives the RT60
    of ``estimate_rt60(..., method="decay_fit")`` ("n/a" when the decay cannot
    be fitted). The file is written atomically.

    Arguments
    ---------
    rir : array_like
        1-D impulse response.
    sr : int
        Sample rate in Hz.
    path : str or Path
        Output PNG file (parent folders are created).
    decay_rt60_sec : float
        Passed to ``decay_rir``.

    Returns
    -------
    str or Path
        ``path``.
    """
    from matplotlib.figure import Figure

    x = _as_rir(rir)
    sr = _check_sr(sr)
    decayed = decay_rir(x, decay_rt60_sec=decay_rt60_sec, sr=sr)
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for label, curve in (("original", x), (f"decayed ({decay_rt60_sec:g} s envelope)", decayed)):
        times, power_db = windowed_power_db(curve, sr)
        try:
            slope, intercept, fit_start, fit_stop = _fit_decay_line(curve, sr, "decay_fit")
            rt60_text = f"{_slope_to_rt60(slope):.3f} s"
        except ValueError:
            slope, rt60_text = None, "n/a"
        (line,) = axes.plot(times, power_db, label=f"{label}, fitted RT60 {rt60_text}")
        if slope is not None:
            fit_times = np.array([fit_start, fit_stop])
            axes.plot(fit_times, intercept + slope * fit_times, "--", color=line.get_color())
    axes.axvline(main_tap_index(x) / sr, color="gray", linestyle=":", label="main tap")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("windowed power (dB, Hann 10 ms)")
    axes.set_ylim(bottom=max(axes.get_ylim()[0], windowed_power_db(x, sr)[1].max() - 100.0))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
