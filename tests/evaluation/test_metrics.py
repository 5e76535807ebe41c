"""Tests of the evaluation metrics (real recordings via REAL_AUDIO_DIR where needed)."""

import math

import numpy as np
import pytest
import torch

from custom_modules.audio.files import read_audio
from custom_modules.evaluation.metrics import (
    MetricComputer,
    MetricError,
    compute_metrics,
    pesq_wb,
    si_snr,
    snr,
    stoi,
    summarize,
    utterance_metrics,
)

# Published values for the python-pesq example pair (see $REAL_AUDIO_DIR/README.md).
PESQ_WB_PAIR = 1.0832337141036987
PESQ_WB_SELF = 4.643888


@pytest.fixture(scope="module")
def pesq_pair(real_audio_dir):
    reference, sr = read_audio(real_audio_dir / "pairs" / "pesq_speech.wav", expected_sr=16000)
    degraded, _ = read_audio(
        real_audio_dir / "pairs" / "pesq_speech_bab_0dB.wav", expected_sr=16000
    )
    return degraded, reference, sr


@pytest.mark.real_audio
def test_pesq_wb_reproduces_published_values(pesq_pair):
    degraded, reference, sr = pesq_pair
    assert pesq_wb(degraded, reference, sr) == pytest.approx(PESQ_WB_PAIR, abs=1e-6)
    assert pesq_wb(reference, reference, sr) == pytest.approx(PESQ_WB_SELF, abs=1e-6)


@pytest.mark.real_audio
def test_stoi_of_reference_against_itself_is_one_and_noise_lowers_it(pesq_pair):
    degraded, reference, sr = pesq_pair
    assert stoi(reference, reference, sr) == pytest.approx(1.0, abs=1e-9)
    noisy_score = stoi(degraded, reference, sr)
    assert 0.3 < noisy_score < 0.95  # babble at 0 dB is clearly less intelligible


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 30.0])
def test_snr_of_a_designed_mixture_equals_the_design(snr_db):
    rng = np.random.default_rng(0)
    speech = rng.standard_normal(16000)
    noise = rng.standard_normal(16000)
    noise *= np.sqrt(np.sum(speech**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    assert snr(speech + noise, speech) == pytest.approx(snr_db, abs=1e-9)
    assert snr(speech, speech) == math.inf


def test_si_snr_matches_orthogonal_construction_and_is_scale_invariant():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal(8000)
    reference -= reference.mean()
    residual = rng.standard_normal(8000)
    residual -= residual.mean()
    residual -= np.dot(residual, reference) / np.dot(reference, reference) * reference
    residual *= np.sqrt(np.sum(reference**2) / np.sum(residual**2) / 10 ** (4.0 / 10))
    estimate = 0.7 * (reference + residual)  # 4 dB by construction, whatever the gain
    assert si_snr(estimate, reference) == pytest.approx(4.0, abs=1e-9)
    for scale in (1e-3, 0.5, 3.0, -2.0):
        assert si_snr(scale * estimate + 0.25, reference) == pytest.approx(4.0, abs=1e-9)
        assert si_snr(estimate, scale * reference) == pytest.approx(4.0, abs=1e-9)
    assert si_snr(residual, reference) < -200  # orthogonal up to rounding
    assert si_snr(np.array([1.0, -1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, -1.0])) == -math.inf
    assert si_snr(3 * reference, reference) > 200  # a scaled copy, up to rounding
    assert si_snr(reference, reference) == math.inf


def test_invalid_pairs_raise_metric_errors():
    with pytest.raises(MetricError, match="silent"):
        snr(np.ones(100), np.zeros(100))
    with pytest.raises(MetricError, match="constant"):
        si_snr(np.ones(100), np.full(100, 0.5))
    with pytest.raises(MetricError, match="samples"):
        snr(np.ones(100), np.ones(99))
    with pytest.raises(MetricError, match="NaN"):
        si_snr(np.full(10, np.nan), np.ones(10))
    with pytest.raises(MetricError, match="1-D"):
        snr(np.ones((2, 10)), np.ones((2, 10)))
    with pytest.raises(MetricError, match="16000"):
        pesq_wb(np.ones(8000), np.ones(8000), sr=8000)


def test_failures_are_reported_not_raised():
    rng = np.random.default_rng(2)
    noise = 0.1 * rng.standard_normal(16000)
    silent = utterance_metrics("silent", noise, np.zeros(16000), 16000)
    assert all(math.isnan(silent[name]) for name in ("snr", "si_snr", "stoi", "pesq"))
    assert silent["pesq_error"].startswith("NoUtterancesError")
    assert "silent" in silent["stoi_error"] and "silent" in silent["snr_error"]

    short = utterance_metrics("short", noise[:3000], noise[:3000] + 0.01, 16000)
    assert math.isnan(short["pesq"]) and short["pesq_error"].startswith("BufferTooShortError")
    assert math.isnan(short["stoi"]) and "too little speech" in short["stoi_error"]
    assert np.isfinite(short["snr"]) and "snr_error" not in short


@pytest.mark.real_audio
def test_parallel_results_equal_serial_results(real_audio_dir):
    rng = np.random.default_rng(3)
    names = ["libri_367_130732-0001.wav", "arctic_aew_a0001.wav", "vctk_p286_011.wav"]
    references = [
        read_audio(real_audio_dir / "speech" / n, expected_sr=16000)[0][:40000] for n in names
    ]
    estimates = [
        ref + 0.05 * rng.standard_normal(ref.size).astype(np.float32) for ref in references
    ]
    references.append(np.zeros(16000, dtype=np.float32))  # a failing utterance in the batch
    estimates.append(0.1 * rng.standard_normal(16000).astype(np.float32))
    ids = ["a", "b", "c", "silent"]

    serial = compute_metrics(estimates, references, num_workers=0, ids=ids)
    with MetricComputer(num_workers=2) as computer:
        parallel = computer.compute(estimates, references, ids=ids)
        pool = computer._pool
        again = computer.compute([torch.from_numpy(e) for e in estimates[:2]], references[:2])
        assert computer._pool is pool  # reused across calls
    assert computer._pool is None

    assert [r["id"] for r in parallel] == ids
    for par, ser in zip(parallel, serial, strict=True):
        assert par.keys() == ser.keys()
        for key, value in ser.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(par[key])
            else:
                assert par[key] == value, key
    for first, second in zip(again, serial[:2], strict=True):
        assert first["pesq"] == second["pesq"] and first["stoi"] == second["stoi"]
    assert 1.0 < serial[0]["pesq"] < 4.7 and 0.5 < serial[0]["stoi"] <= 1.0
    assert serial[3]["pesq_error"].startswith("NoUtterancesError")


def test_lengths_crop_padded_batches():
    rng = np.random.default_rng(4)
    references = torch.from_numpy(rng.standard_normal((2, 1000)))
    estimates = references + 0.1 * torch.from_numpy(rng.standard_normal((2, 1000)))
    estimates[1, 600:] = 50.0  # padding garbage beyond the relative length 0.6
    records = compute_metrics(
        estimates, references, metrics=("snr",), num_workers=0, lengths=torch.tensor([1.0, 0.6])
    )
    expected = snr(estimates[1, :600].numpy(), references[1, :600].numpy())
    assert records[1]["snr"] == pytest.approx(expected, abs=1e-12)
    assert records[1]["snr"] > 10


def test_summarize_ignores_nan_and_counts_failures():
    records = [
        {"id": "a", "snr": 10.0, "pesq": 2.0},
        {"id": "b", "snr": 20.0, "pesq": math.nan, "pesq_error": "NoUtterancesError: x"},
        {"id": "c", "snr": 3.0, "pesq": 3.0},
    ]
    summary = summarize(records)
    assert summary["snr"] == pytest.approx(11.0)
    assert summary["pesq"] == pytest.approx(2.5)
    assert summary["pesq_failures"] == 1 and summary["snr_failures"] == 0
    assert summary["num_utterances"] == 3
    assert math.isnan(summarize([{"id": "a", "stoi": math.nan}])["stoi"])


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="unknown metric"):
        MetricComputer(metrics=("snr", "sdr"))
    with pytest.raises(ValueError, match="16000"):
        MetricComputer(sr=8000)
    with pytest.raises(ValueError, match="references"):
        compute_metrics([np.ones(10)], [], num_workers=0)
