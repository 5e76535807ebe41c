"""Spectrogram figures of custom_modules.evaluation.plotting."""

import numpy as np
import pytest

from custom_modules.evaluation.plotting import (
    _spectrogram_figure,
    log_spectrogram_db,
    save_spectrograms_png,
    spectrogram_image,
)

SR = 16000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data):
    """(width, height) from the IHDR chunk."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    target = 0.5 * np.sin(2 * np.pi * 1000 * t)
    noise = 0.05 * rng.normal(size=SR)
    return {"mixture": target + noise, "target": target, "estimate": target + 0.1 * noise}


def test_sine_level_and_frequency_axis():
    t = np.arange(SR) / SR
    spec_db, (t0, t1, f0, f1) = log_spectrogram_db(0.5 * np.sin(2 * np.pi * 1000 * t), SR, 512, 128)
    assert spec_db.shape[0] == 257
    # 1000 Hz is bin 32 at 31.25 Hz spacing; amplitude 0.5 reads -6.02 dB.
    middle = spec_db[:, spec_db.shape[1] // 2]
    assert int(np.argmax(middle)) == 32
    assert middle[32] == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert t0 < 0.0 < 1.0 < t1 and f0 < 0.0 < SR / 2 < f1


def test_save_spectrograms_png(tmp_path, signals):
    path = tmp_path / "figs" / "example.png"
    assert save_spectrograms_png(path, signals, sr=SR, title="example 0") == path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000
    width, height = png_size(data)
    one_panel = tmp_path / "one.png"
    save_spectrograms_png(one_panel, {"target": signals["target"]}, sr=SR)
    one_width, one_height = png_size(one_panel.read_bytes())
    # Panels are stacked vertically: same width, taller with three panels.
    assert width == one_width
    assert height > one_height
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["example.png", "figs", "one.png"]


def test_panels_share_one_colour_scale(signals):
    quiet = {"loud": signals["target"], "quiet": 0.01 * signals["target"]}
    figure = _spectrogram_figure(quiet, SR, None, 512, 128, 50)
    limits = {image.get_clim() for ax in figure.axes for image in ax.get_images()}
    assert len(limits) == 1
    vmin, vmax = limits.pop()
    loud_peak = log_spectrogram_db(quiet["loud"], SR)[0].max()
    assert vmax == pytest.approx(loud_peak)
    assert vmax - vmin == pytest.approx(80.0)
    panel_titles = [ax.get_title(loc="left") for ax in figure.axes if ax.get_images()]
    assert panel_titles == ["loud", "quiet"]


def test_spectrogram_image_shape_and_dtype(signals):
    image = spectrogram_image(signals, sr=SR, title="epoch 3")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 10  # a rendered figure, not a blank canvas
    single = spectrogram_image(signals["target"], sr=SR)
    assert single.ndim == 3 and single.shape[2] == 3
    # One panel per signal, stacked vertically: same width, taller with three.
    assert single.shape[1] == image.shape[1] and single.shape[0] < image.shape[0]


def test_silent_signal_renders_without_nan(tmp_path):
    silent = np.zeros(SR // 2)
    spec_db, _ = log_spectrogram_db(silent, SR)
    assert np.all(np.isfinite(spec_db))
    image = spectrogram_image({"silent": silent}, sr=SR)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    path = save_spectrograms_png(tmp_path / "silent.png", {"a": silent, "b": silent}, sr=SR)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    # With a loud panel, the silent one sits at the bottom of the shared scale.
    t = np.arange(SR // 2) / SR
    figure = _spectrogram_figure(
        {"tone": np.sin(2 * np.pi * 440 * t), "silent": silent}, SR, None, 512, 128, 50
    )
    silent_data = figure.axes[1].get_images()[0].get_array()
    assert np.all(np.isfinite(silent_data)) and np.all(silent_data == silent_data.min())


def test_short_signal_is_padded():
    spec_db, _ = log_spectrogram_db(np.ones(10), SR, 512, 128)
    assert spec_db.shape[0] == 257 and np.all(np.isfinite(spec_db))


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ({}, "non-empty dict"),
        ([np.zeros(10)], "non-empty dict"),
        ({"estimate": np.r_[0.0, np.nan]}, "'estimate' contains NaN"),
        ({"stereo": np.zeros((2, 100))}, "'stereo' must be a non-empty 1-D"),
        ({"empty": np.array([])}, "'empty' must be a non-empty 1-D"),
    ],
)
def test_bad_signals_raise_clear_errors(tmp_path, signals, message):
    with pytest.raises(ValueError, match=message):
        save_spectrograms_png(tmp_path / "bad.png", signals)
    assert not (tmp_path / "bad.png").exists()


def test_bad_stft_parameters_raise():
    with pytest.raises(ValueError, match="hop"):
        log_spectrogram_db(np.ones(1000), SR, n_fft=256, hop=512)
    with pytest.raises(ValueError, match="n_fft"):
        log_spectrogram_db(np.ones(1000), SR, n_fft=1)
