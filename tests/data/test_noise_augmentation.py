"""Tests of custom_modules.data.noise_augmentation and its use by the mixer."""

from itertools import pairwise

import numpy as np
import pytest
import scipy.signal

from custom_modules.audio.levels import eval_rms_db
from custom_modules.data.noise_augmentation import RandomNoiseAugmentation
from tests.data.test_mixing import corpus, make_mixer  # noqa: F401  (module fixture)

SR = 16000


def band_levels_db(signal, edges):
    freqs, psd = scipy.signal.welch(signal, SR, nperseg=1024)
    return np.array(
        [10 * np.log10(psd[(freqs >= lo) & (freqs < hi)].mean()) for lo, hi in pairwise(edges)]
    )


def test_coloring_follows_the_drawn_gain_curve_within_its_bounds():
    augment = RandomNoiseAugmentation(coloring_prob=1.0, max_gain_db=12.0, num_bands=4, sr=SR)
    white = np.random.default_rng(0).normal(size=8 * SR)
    edges = [100, 300, 1000, 3000, 7000]
    reference = band_levels_db(white, edges)
    spreads = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        colored = augment(white, rng)
        assert colored.shape == white.shape and colored.dtype == np.float64
        # The same draw, replayed: the coloured band levels follow the gain curve.
        replay = np.random.default_rng(seed)
        replay.random()
        gains = replay.uniform(-12.0, 12.0, 5)
        curve = augment.gain_curve_db(gains, 8 * SR)
        freqs = np.fft.rfftfreq(8 * SR, 1 / SR)
        expected = np.array(
            [
                10 * np.log10(np.mean(10 ** (curve[(freqs >= lo) & (freqs < hi)] / 10)))
                for lo, hi in pairwise(edges)
            ]
        )
        np.testing.assert_allclose(band_levels_db(colored, edges) - reference, expected, atol=0.6)
        assert np.all(np.abs(curve) <= 12.0 + 1e-9)
        spreads.append(np.ptp(band_levels_db(colored, edges)))
    assert max(spreads) > 6.0  # the colouring really changes the spectral shape


def test_reversal_and_probabilities():
    crop = np.arange(10, dtype=np.float64)
    always = RandomNoiseAugmentation(coloring_prob=0.0, reverse_prob=1.0)
    np.testing.assert_array_equal(always(crop, np.random.default_rng(0)), crop[::-1])
    never = RandomNoiseAugmentation(coloring_prob=0.0, reverse_prob=0.0)
    rng = np.random.default_rng(0)
    assert never(crop, rng) is crop
    assert rng.random() == np.random.default_rng(0).random()  # no draw was made
    half = RandomNoiseAugmentation(coloring_prob=0.0, reverse_prob=0.5)
    rng = np.random.default_rng(1)
    reversed_share = np.mean([half(crop, rng)[0] == 9.0 for _ in range(2000)])
    assert 0.45 < reversed_share < 0.55


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coloring_prob": 1.5}, "coloring_prob"),
        ({"reverse_prob": -0.1}, "reverse_prob"),
        ({"max_gain_db": -1.0}, "max_gain_db"),
        ({"num_bands": 0}, "num_bands"),
        ({"min_freq": 9000.0}, "min_freq"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomNoiseAugmentation(**kwargs)


def test_mixer_with_augmentation_keeps_exact_snr_and_levels(corpus):  # noqa: F811
    augment = RandomNoiseAugmentation(coloring_prob=1.0, max_gain_db=15.0, reverse_prob=0.5)
    mixer = make_mixer(corpus, rng=4, noise_augmentation=augment)
    plain = make_mixer(corpus, rng=4)
    assert mixer.describe()["noise_augmentation"]["max_gain_db"] == 15.0
    assert "noise_augmentation" not in plain.describe()  # fixed-set digests unchanged
    differs = 0
    for _ in range(10):
        example, reference = mixer.sample_example(), plain.sample_example()
        snr = eval_rms_db(example.target) - eval_rms_db(example.noise)
        assert snr == pytest.approx(example.metadata["snr_db"], abs=1e-6)
        np.testing.assert_allclose(
            example.mixture, example.speech.astype(np.float64) + example.noise, atol=1e-6
        )
        differs += not np.allclose(example.noise, reference.noise)
    assert differs >= 8


def test_mixer_with_a_no_op_augmentation_equals_the_plain_mixer(corpus):  # noqa: F811
    off = RandomNoiseAugmentation(coloring_prob=0.0, reverse_prob=0.0)
    with_off, plain = make_mixer(corpus, rng=5, noise_augmentation=off), make_mixer(corpus, rng=5)
    for _ in range(5):
        a, b = with_off.sample_example(), plain.sample_example()
        np.testing.assert_array_equal(a.mixture, b.mixture)
        np.testing.assert_array_equal(a.target, b.target)
