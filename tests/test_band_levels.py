"""scripts.band_levels: band level differences per frame class, and its command line."""

import numpy as np
import pytest

from scripts.band_levels import band_level_differences, main

SR = 16000


def speech_like(seed=0):
    """Noise bursts at three levels: 1 s loud, 1 s 30 dB down, 1 s 60 dB down, 1 s loud."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(4 * SR) * np.repeat([1.0, 0.03, 0.001, 1.0], SR)


def test_a_perfect_estimate_is_zero_everywhere():
    target = speech_like()
    levels = band_level_differences(target.copy(), target, SR)
    assert {frames for frames, _ in levels} == {"strong", "weak", "quiet"}
    assert len(levels) == 9 and all(abs(value) < 1e-9 for value in levels.values())


def test_noise_left_in_the_pauses_shows_in_quiet_frames_only():
    target = speech_like()
    noise = np.zeros_like(target)
    noise[2 * SR : 3 * SR] = 0.01 * np.random.default_rng(1).standard_normal(SR)  # in the pause
    levels = band_level_differences(target + noise, target, SR)
    assert all(levels[("quiet", band)] > 15 for band in ("0-2k", "2-4k", "4-8k"))
    assert all(abs(levels[("strong", band)]) < 0.1 for band in ("0-2k", "2-4k", "4-8k"))


def test_removed_high_band_shows_as_a_loss_in_that_band():
    target = speech_like()
    spectrum = np.fft.rfft(target)
    spectrum[np.fft.rfftfreq(len(target), 1 / SR) >= 4000] *= 0.1  # -20 dB above 4 kHz
    levels = band_level_differences(np.fft.irfft(spectrum, len(target)), target, SR)
    # within 2 dB: the Hann window leaks some 2-4k energy across the 4 kHz edge
    assert levels[("strong", "4-8k")] == pytest.approx(-20, abs=2.0)
    assert abs(levels[("strong", "0-2k")]) < 0.5


def test_bad_input_raises_and_a_missing_manifest_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="same length"):
        band_level_differences(np.zeros(1000), np.zeros(999), SR)
    with pytest.raises(ValueError, match=">= 512"):
        band_level_differences(np.zeros(100), np.zeros(100), SR)
    assert main(["--test_set", str(tmp_path), "--run", str(tmp_path)]) == 1
    assert "manifest.json: no fixed-set manifest" in capsys.readouterr().err
