"""RIR utilities of custom_modules.audio.rir: RT60 estimation, decay, early part, convolution, plot."""

import numpy as np
import pyroomacoustics as pra
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from custom_modules.audio.rir import (
    convolve_same_length,
    decay_fit_range,
    decay_rir,
    early_rir,
    estimate_rt60,
    main_tap_index,
    plot_rir_decay,
    windowed_power_db,
)

SR = 16000
METHODS = ("decay_fit", "schroeder")
SIMULATED_RT60S = (0.3, 0.5, 0.8)
# A small shoebox room at full image-source order (ray tracing off): the three
# simulations take about 2 s together.
ROOM_DIM = (4.0, 3.5, 2.7)
SOURCE = (1.3, 1.1, 1.4)
MICROPHONE = (2.9, 2.3, 1.5)


def synthetic_rir(rt60, seed, floor_db=-60.0, duration=None, predelay=200):
    """Exponentially decaying Gaussian noise (exact RT60) after a direct-path spike.

    The tail starts 20 dB below the spike; stationary noise sits ``floor_db``
    below the start of the tail, also in the pre-delay.
    """
    rng = np.random.default_rng(seed)
    n = int((duration or max(1.0, 1.5 * rt60)) * SR)
    t = np.arange(n) / SR
    tail = 0.1 * rng.normal(size=n) * 10.0 ** (-3.0 * t / rt60)
    noise_amp = 0.1 * 10.0 ** (floor_db / 20.0)
    rir = np.concatenate([np.zeros(predelay), tail]) + noise_amp * rng.normal(size=n + predelay)
    rir[predelay] = 1.0
    return rir


@pytest.fixture(scope="module")
def simulated_rooms():
    """rt60 -> (rir, pyroomacoustics' measure_rt60 with 60 and 30 dB decay)."""
    rooms = {}
    for rt60 in SIMULATED_RT60S:
        absorption, max_order = pra.inverse_sabine(rt60, ROOM_DIM)
        room = pra.ShoeBox(ROOM_DIM, fs=SR, materials=pra.Material(absorption), max_order=max_order)
        room.add_source(list(SOURCE))
        room.add_microphone(list(MICROPHONE))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        measured_60 = float(pra.experimental.measure_rt60(rir, fs=SR, decay_db=60))
        measured_30 = float(pra.experimental.measure_rt60(rir, fs=SR, decay_db=30))
        rooms[rt60] = (rir, measured_60, measured_30)
    return rooms


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rt60", SIMULATED_RT60S)
def test_rt60_of_simulated_rooms_within_20_percent(simulated_rooms, rt60, method):
    """Against both the design RT60 (Sabine) and pyroomacoustics' own -5..-65 dB measure.

    The image-source decay is not exactly exponential, so these two references
    differ by up to 25 % themselves; our -5..-35 dB fit lies between them.
    """
    rir, measured_60, _ = simulated_rooms[rt60]
    estimate = estimate_rt60(rir, SR, method=method)
    assert estimate == pytest.approx(rt60, rel=0.20)
    assert estimate == pytest.approx(measured_60, rel=0.20)


@pytest.mark.parametrize("rt60", SIMULATED_RT60S)
def test_schroeder_matches_pyroomacoustics_t30(simulated_rooms, rt60):
    """Same definition (Schroeder curve, -5 to -35 dB), independent implementation."""
    rir, _, measured_30 = simulated_rooms[rt60]
    assert estimate_rt60(rir, SR, method="schroeder") == pytest.approx(measured_30, rel=0.03)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("rt60", "floor_db"), [(0.15, -60), (0.6, -40), (1.2, -60), (1.5, -80)])
def test_rt60_of_synthetic_rirs_with_noise_floor(rt60, floor_db, method):
    estimates = [estimate_rt60(synthetic_rir(rt60, seed, floor_db), SR, method) for seed in (0, 1)]
    np.testing.assert_allclose(estimates, rt60, rtol=0.06)


def test_fit_range_stays_above_noise_floor():
    rir = synthetic_rir(0.6, seed=2, floor_db=-40.0)
    start, stop = decay_fit_range(rir, SR)
    main = main_tap_index(rir)
    # The tail decays 100 dB/s from its start; the noise is 40 dB below that
    # start, so the windowed power reaches floor + 10 dB at 0.3 s: the fit
    # must stop there at the latest, and start after the direct path.
    assert main < start < stop
    assert (stop - main) / SR <= 0.31
    assert (stop - main) / SR > 0.2  # but it does use the decay down to near the floor


@pytest.mark.parametrize(
    ("rir", "message"),
    [
        (np.zeros(1000), "silent"),
        (np.ones((2, 100)), "1-D"),
        (np.r_[1.0, np.nan, 0.5], "NaN or Inf"),
        (np.array([]), "empty"),
        # Stationary noise: no decay to measure.
        (np.random.default_rng(0).normal(size=16000), "cannot estimate"),
    ],
)
def test_estimate_rt60_rejects_bad_rirs(rir, message):
    with pytest.raises(ValueError, match=message):
        estimate_rt60(rir, SR)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, 12000),
    time_constant=st.floats(1.0, 5000.0),
    cut=st.floats(0.0, 1.0),
)
def test_estimate_rt60_never_returns_nan(seed, length, time_constant, cut):
    """Arbitrary decaying/truncated/odd RIRs: a positive finite RT60 or a clear error."""
    rng = np.random.default_rng(seed)
    rir = rng.normal(size=length) * np.exp(-np.arange(length) / time_constant)
    rir[max(1, int(cut * length)) :] = 0.0
    for method in METHODS:
        try:
            value = estimate_rt60(rir, SR, method)
        except ValueError as err:
            assert "cannot estimate" in str(err)
        else:
            assert np.isfinite(value) and value > 0


def test_estimate_rt60_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        estimate_rt60(synthetic_rir(0.5, 0), SR, method="sabine")


def test_main_tap_index_uses_absolute_value():
    assert main_tap_index(np.array([0.2, 0.5, -0.9, 0.8])) == 2
    with pytest.raises(ValueError, match="silent"):
        main_tap_index(np.zeros(4))


def tail_slope_db_per_sec(rir, first_sec, last_sec):
    times, power_db = windowed_power_db(rir, SR)
    keep = (times >= first_sec) & (times <= last_sec)
    return np.polyfit(times[keep], power_db[keep], 1)[0]


@pytest.fixture(scope="module")
def long_rirs(simulated_rooms):
    return {
        "synthetic_1.2s": synthetic_rir(1.2, seed=7, floor_db=-80.0, duration=2.0),
        "synthetic_1.5s": synthetic_rir(1.5, seed=8, floor_db=-80.0, duration=2.0),
        "pyroomacoustics_0.8s": simulated_rooms[0.8][0],
    }


@pytest.mark.parametrize("name", ["synthetic_1.2s", "synthetic_1.5s", "pyroomacoustics_0.8s"])
def test_decay_rir_head_identical_and_tail_decays_60_db_per_rt60(long_rirs, name):
    rir = long_rirs[name]
    decayed = decay_rir(rir, decay_rt60_sec=0.3, early_reverb_sec=0.020, sr=SR)
    assert decayed.shape == rir.shape
    joint = main_tap_index(rir) + int(round(0.020 * SR))
    # Head (up to and including the joint) bit-identical.
    assert np.array_equal(decayed[: joint + 1], rir[: joint + 1])
    # Tail: the original times 10 ** (-60 dB / 20 per 0.3 s), starting at 1 at the joint.
    elapsed = (np.arange(joint + 1, rir.size) - joint) / SR
    np.testing.assert_allclose(decayed[joint + 1 :], rir[joint + 1 :] * 10 ** (-3 * elapsed / 0.3))
    # Continuous at the joint: the first attenuated sample loses one sample's
    # worth of decay (200 dB/s / 16 kHz = 0.0125 dB), no step.
    step_db = 20 * np.log10(abs(rir[joint + 1]) / abs(decayed[joint + 1]))
    assert step_db == pytest.approx(200.0 / SR, rel=1e-9)
    # Fitted decay of the processed tail: 60 dB per 0.3 s (200 dB/s) faster than the original.
    first, last = (joint + 160) / SR, (joint + 160) / SR + 0.25
    extra = tail_slope_db_per_sec(decayed, first, last) - tail_slope_db_per_sec(rir, first, last)
    assert extra == pytest.approx(-200.0, rel=0.02)  # spec: 10 %; measured within 0.1 %


@pytest.mark.parametrize("name", ["synthetic_1.2s", "synthetic_1.5s", "pyroomacoustics_0.8s"])
def test_decay_rir_rt60_combines_with_original(long_rirs, name):
    """Decay rates add: RT60 of the result = 1 / (1/RT60_original + 1/0.3)."""
    rir = long_rirs[name]
    original = estimate_rt60(rir, SR)
    expected = 1.0 / (1.0 / original + 1.0 / 0.3)
    assert estimate_rt60(decay_rir(rir, 0.3, 0.020, SR), SR) == pytest.approx(expected, rel=0.10)


def test_decay_rir_validates_arguments():
    rir = synthetic_rir(0.5, 0)
    with pytest.raises(ValueError, match="decay_rt60_sec"):
        decay_rir(rir, decay_rt60_sec=0.0)
    with pytest.raises(ValueError, match="early part"):
        decay_rir(rir, early_reverb_sec=-0.01)
    with pytest.raises(ValueError, match="NaN or Inf"):
        decay_rir(np.r_[rir, np.inf])
    # A joint past the end leaves the RIR unchanged.
    short = rir[:250]
    assert np.array_equal(decay_rir(short, sr=SR), short)


def test_early_rir_keeps_main_tap_plus_early_part():
    rir = synthetic_rir(0.5, seed=3)
    main = main_tap_index(rir)
    early = early_rir(rir, early_sec=0.050, sr=SR)
    joint = main + 800
    assert early.shape == rir.shape
    assert np.array_equal(early[: joint + 1], rir[: joint + 1])
    assert not np.any(early[joint + 1 :])
    direct_only = early_rir(rir, early_sec=0.0, sr=SR)
    assert np.array_equal(direct_only[: main + 1], rir[: main + 1])
    assert not np.any(direct_only[main + 1 :])
    with pytest.raises(ValueError, match="silent"):
        early_rir(np.zeros(10))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n_x", "n_rir"), [(50, 7), (7, 50), (64, 64), (1, 3)])
def test_convolve_same_length_matches_direct_convolution(dtype, n_x, n_rir):
    rng = np.random.default_rng(n_x * 100 + n_rir)
    x = rng.normal(size=n_x).astype(dtype)
    rir = rng.normal(size=n_rir)
    out = convolve_same_length(x, rir)
    assert out.dtype == dtype and out.shape == (n_x,)
    expected = np.convolve(x.astype(np.float64), rir)[:n_x]
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_convolve_same_length_validates_inputs():
    x = np.ones(10)
    with pytest.raises(ValueError, match="1-D"):
        convolve_same_length(np.ones((2, 5)), np.ones(3))
    with pytest.raises(ValueError, match="floating"):
        convolve_same_length(np.ones(10, dtype=np.int16), np.ones(3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        convolve_same_length(np.r_[x, np.nan], np.ones(3))
    with pytest.raises(ValueError, match="silent"):
        convolve_same_length(x, np.zeros(3))


def test_plot_rir_decay_writes_png(tmp_path):
    path = tmp_path / "plots" / "rir_decay.png"
    returned = plot_rir_decay(synthetic_rir(0.6, seed=4), SR, path, decay_rt60_sec=0.3)
    assert returned == path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (700, 400)
    assert [p.name for p in path.parent.iterdir()] == ["rir_decay.png"]  # no temp file left


@pytest.mark.real_audio
def test_real_rirs_give_rt60_or_clear_error(real_audio_dir):
    """Measured/simulated RIRs from other projects: a plausible RT60, or a clear error."""
    rir_paths = sorted((real_audio_dir / "rir").glob("*.wav"))
    assert rir_paths
    for path in rir_paths:
        rir, sr = sf.read(path)
        try:
            estimates = [estimate_rt60(rir, sr, method) for method in METHODS]
        except ValueError as err:
            assert "cannot estimate" in str(err), path
            continue
        assert all(0.02 < value < 3.0 for value in estimates), (path, estimates)
    # speechbrain's rir1.wav has a clean decay from 0 to -50 dB over 0.7 s.
    rir, sr = sf.read(real_audio_dir / "rir" / "sb_rir1.wav")
    fit, schroeder = (estimate_rt60(rir, sr, method) for method in METHODS)
    assert 0.45 < fit < 0.75
    assert schroeder == pytest.approx(fit, rel=0.10)
    # rir2.wav is stationary noise after its first tap: no decay to measure.
    rir, sr = sf.read(real_audio_dir / "rir" / "sb_rir2.wav")
    with pytest.raises(ValueError, match="no measurable decay"):
        estimate_rt60(rir, sr)
