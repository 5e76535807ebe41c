"""Levels, gains, SNRs and mixing of custom_modules.audio.levels: exact to 1e-12 dB."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custom_modules.audio.levels import (
    apply_gain,
    eval_mean_square,
    eval_rms_db,
    eval_snr,
    gain_to_mult,
    mix_speech_with_noise,
    mult_to_gain,
    normalize_to_rms,
    power_to_db,
)

TOL_DB = 1e-12
LENGTHS = (1, 7, 160, 16000)
SCALES = (1e-6, 1e-3, 0.3, 1.0, 1e3)


def reference_rms_db(x):
    """Independent RMS level: exactly rounded sum of squares (math.fsum)."""
    values = np.asarray(x, dtype=np.float64).ravel()
    return 10.0 * math.log10(math.fsum(v * v for v in values) / values.size)


def random_signal(seed, length, scale):
    return scale * np.random.default_rng(seed).normal(size=length)


signal_params = st.tuples(
    st.integers(0, 2**32 - 1),
    st.integers(1, 3000),
    st.floats(-8.0, 4.0),  # log10 of the scale
)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("scale", SCALES)
def test_rms_db_matches_reference(length, scale):
    x = random_signal(length, length, scale)
    assert eval_rms_db(x) == pytest.approx(reference_rms_db(x), abs=TOL_DB)
    assert eval_mean_square(x) == pytest.approx(math.fsum(x * x) / length, rel=1e-13)
    assert power_to_db(eval_mean_square(x)) == pytest.approx(eval_rms_db(x), abs=TOL_DB)


def test_rms_db_of_known_signals():
    assert eval_rms_db(np.array([1.0, -1.0] * 50)) == 0.0  # full-scale square wave
    t = np.arange(16000) / 16000
    sine = np.sin(2 * np.pi * 100 * t)
    assert eval_rms_db(sine) == pytest.approx(10 * math.log10(0.5), abs=TOL_DB)
    assert eval_rms_db(np.full((3, 4), 0.1)) == pytest.approx(-20.0, abs=TOL_DB)


@pytest.mark.parametrize("scale", (1e-150, 1e150))
def test_rms_db_extreme_scales_do_not_overflow(scale):
    x = random_signal(0, 1000, 1.0)
    expected = eval_rms_db(x) + 20 * math.log10(scale)
    assert eval_rms_db(x * scale) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(params=signal_params, target=st.floats(-90.0, 20.0))
def test_normalize_to_rms_is_exact(params, target):
    seed, length, log_scale = params
    x = random_signal(seed, length, 10.0**log_scale)
    scaled, gain_db = normalize_to_rms(x, target)
    assert scaled.dtype == np.float64 and scaled.shape == x.shape
    assert eval_rms_db(scaled) == pytest.approx(target, abs=TOL_DB)
    assert reference_rms_db(scaled) == pytest.approx(target, abs=TOL_DB)
    assert gain_db == pytest.approx(target - reference_rms_db(x), abs=TOL_DB)


@settings(max_examples=60, deadline=None)
@given(params=signal_params, gain=st.floats(-120.0, 120.0))
def test_apply_gain_changes_level_by_gain(params, gain):
    seed, length, log_scale = params
    x = random_signal(seed, length, 10.0**log_scale)
    assert reference_rms_db(apply_gain(x, gain)) - reference_rms_db(x) == pytest.approx(
        gain, abs=TOL_DB
    )


@settings(max_examples=100, deadline=None)
@given(gain=st.floats(-200.0, 200.0), mult=st.floats(1e-8, 1e8))
def test_gain_mult_round_trips(gain, mult):
    assert mult_to_gain(gain_to_mult(gain)) == pytest.approx(gain, abs=TOL_DB)
    assert gain_to_mult(mult_to_gain(mult)) == pytest.approx(mult, rel=1e-13)


def test_gain_mult_known_values_and_arrays():
    assert gain_to_mult(20.0) == pytest.approx(10.0, rel=1e-15)
    assert gain_to_mult(-6.0) == pytest.approx(0.5011872336272722, rel=1e-15)
    assert mult_to_gain(2.0) == pytest.approx(6.020599913279624, abs=TOL_DB)
    np.testing.assert_allclose(gain_to_mult(np.array([0.0, 40.0])), [1.0, 100.0], rtol=1e-15)
    np.testing.assert_allclose(power_to_db(np.array([1.0, 1e-3])), [0.0, -30.0], atol=TOL_DB)
    assert gain_to_mult(-np.inf) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mult_to_gain(0.0) == -np.inf
        assert power_to_db(0.0) == -np.inf


@pytest.mark.parametrize(
    ("func", "value"),
    [
        (power_to_db, -1.0),
        (power_to_db, np.nan),
        (power_to_db, np.inf),
        (mult_to_gain, -0.5),
        (mult_to_gain, np.nan),
        (gain_to_mult, np.nan),
        (gain_to_mult, np.inf),
    ],
)
def test_conversions_reject_invalid_values(func, value):
    with pytest.raises(ValueError):
        func(value)


@settings(max_examples=60, deadline=None)
@given(
    params=signal_params,
    rms_signal_db=st.floats(-60.0, 0.0),
    snr_db=st.floats(-20.0, 40.0),
)
def test_mix_realises_level_and_snr(params, rms_signal_db, snr_db):
    seed, length, log_scale = params
    rng = np.random.default_rng(seed)
    signal = 10.0**log_scale * rng.normal(size=length)
    noise = rng.uniform(-1.0, 1.0, size=length)
    mixture, scaled_signal, scaled_noise = mix_speech_with_noise(
        signal, noise, rms_signal_db, snr_db
    )
    assert reference_rms_db(scaled_signal) == pytest.approx(rms_signal_db, abs=TOL_DB)
    assert reference_rms_db(scaled_noise) == pytest.approx(rms_signal_db - snr_db, abs=TOL_DB)
    realised_snr = reference_rms_db(scaled_signal) - reference_rms_db(scaled_noise)
    assert realised_snr == pytest.approx(snr_db, abs=TOL_DB)
    # Through the mixture itself (mixture - signal recovers the noise).
    assert eval_snr(mixture, scaled_signal) == pytest.approx(snr_db, abs=TOL_DB)
    np.testing.assert_array_equal(mixture, scaled_signal + scaled_noise)
    # Pure positive scalings of the inputs.
    ratio = scaled_signal / signal
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-14)
    assert ratio[0] > 0


def test_eval_snr_definition_and_edge_cases():
    rng = np.random.default_rng(3)
    signal = rng.normal(size=4000)
    error = 0.05 * rng.normal(size=4000)
    expected = 10 * math.log10(math.fsum(signal**2) / math.fsum(error**2))
    assert eval_snr(signal + error, signal) == pytest.approx(expected, abs=1e-11)
    assert eval_snr(signal, signal) == np.inf
    # A silent estimate leaves the whole signal as error: 0 dB.
    assert eval_snr(np.zeros_like(signal), signal) == pytest.approx(0.0, abs=TOL_DB)
    with pytest.raises(ValueError, match="silent"):
        eval_snr(signal, np.zeros_like(signal))
    with pytest.raises(ValueError, match="shape"):
        eval_snr(signal[:-1], signal)


def test_float32_input_computes_in_float64():
    x = random_signal(5, 1000, 0.1).astype(np.float32)
    scaled, _ = normalize_to_rms(x, -25.0)
    assert scaled.dtype == np.float64
    assert eval_rms_db(scaled) == pytest.approx(-25.0, abs=TOL_DB)
    assert apply_gain(x, 3.0).dtype == np.float64


def test_silent_inputs_are_documented_not_nan():
    zeros = np.zeros(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert eval_rms_db(zeros) == -np.inf
        assert eval_mean_square(zeros) == 0.0
        np.testing.assert_array_equal(apply_gain(zeros, 10.0), zeros)
    with pytest.raises(ValueError, match=r"silent \(all zeros\); cannot normalize"):
        normalize_to_rms(zeros, -20.0)
    noise = random_signal(1, 100, 1.0)
    with pytest.raises(ValueError, match=r"signal is silent \(all zeros\); cannot mix"):
        mix_speech_with_noise(zeros, noise, -20.0, 5.0)
    with pytest.raises(ValueError, match=r"noise is silent \(all zeros\); cannot mix"):
        mix_speech_with_noise(noise, zeros, -20.0, 5.0)


@pytest.mark.parametrize("bad", [np.array([0.1, np.nan]), np.array([np.inf, 0.0]), np.array([])])
def test_non_finite_or_empty_input_raises(bad):
    with pytest.raises(ValueError, match="NaN or Inf|empty"):
        eval_rms_db(bad)
    with pytest.raises(ValueError, match="NaN or Inf|empty"):
        normalize_to_rms(bad, -20.0)
    with pytest.raises(ValueError, match="NaN or Inf|empty"):
        apply_gain(bad, 1.0)


def test_mix_rejects_length_mismatch_and_non_finite_levels():
    signal = random_signal(2, 100, 1.0)
    with pytest.raises(ValueError, match="same length"):
        mix_speech_with_noise(signal, signal[:50], -20.0, 5.0)
    with pytest.raises(ValueError, match="snr_db"):
        mix_speech_with_noise(signal, signal, -20.0, np.nan)
    with pytest.raises(ValueError, match="target_rms_db"):
        normalize_to_rms(signal, np.inf)
