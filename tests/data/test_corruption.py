"""Tests of the fixed STFT-corruption procedure, its dataset wrapper and report merging."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from custom_modules.audio.levels import eval_rms_db
from custom_modules.data.corruption import (
    StftCorruptedDataset,
    StftCorruption,
    item_seed,
    merge_test_reports,
)


def speechlike(rng, num_samples=8000, sr=16000):
    """Harmonics of a gliding f0 under a syllabic envelope, plus a little noise."""
    t = np.arange(num_samples) / sr
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    return voiced * np.clip(np.sin(2 * np.pi * 2 * t), 0, None) + 0.01 * rng.normal(
        size=num_samples
    )


def test_corrupt_spectrogram_follows_the_procedure_exactly():
    rng = np.random.default_rng(0)
    # Distinct magnitudes (ranking unambiguous), random phases.
    magnitudes = rng.permutation(np.arange(1, 2001)).astype(float) / 100
    spec = (magnitudes * np.exp(1j * rng.uniform(-np.pi, np.pi, 2000))).reshape(40, 50)
    out, zeroed, raised = StftCorruption().corrupt_spectrogram(spec, np.random.default_rng(1))
    flat_in, flat_out = spec.ravel(), out.ravel()
    loud = np.argsort(-np.abs(flat_in))[:200]  # top 10 % of 2000 bins
    rest = np.argsort(-np.abs(flat_in))[200:]  # the other 90 %
    assert len(zeroed) == 40  # 20 % of the 200 loud bins
    assert len(raised) == 900  # 50 % of the 1800 others
    assert set(zeroed) <= set(loud) and set(raised) <= set(rest)
    assert np.all(flat_out[zeroed] == 0)
    assert np.allclose(np.abs(flat_out[raised]), 1.0)
    assert np.allclose(np.angle(flat_out[raised]), np.angle(flat_in[raised]))  # phase kept
    untouched = np.setdiff1d(np.arange(2000), np.concatenate([zeroed, raised]))
    assert np.array_equal(flat_out[untouched], flat_in[untouched])
    assert np.array_equal(spec.ravel(), flat_in)  # the input is not modified


def test_every_strength_parameter_is_used():
    rng = np.random.default_rng(2)
    spec = rng.normal(size=(20, 50)) + 1j * rng.normal(size=(20, 50))  # 1000 bins
    corruption = StftCorruption(
        loud_fraction=0.3, loud_zero_fraction=0.5, rest_fraction=0.4, rest_set_fraction=0.25,
        set_magnitude=2.5,
    )  # fmt: skip
    out, zeroed, raised = corruption.corrupt_spectrogram(spec, np.random.default_rng(0))
    order = np.argsort(-np.abs(spec.ravel()), kind="stable")
    assert len(zeroed) == 150 and set(zeroed) <= set(order[:300])
    assert len(raised) == 100 and set(raised) <= set(order[600:])  # the 40 % quietest
    assert np.allclose(np.abs(out.ravel()[raised]), 2.5)


def test_silent_bins_get_phase_zero():
    spec = np.zeros((4, 10), dtype=complex)
    spec[0, :4] = 5.0  # the 10 % loudest
    out, _, raised = StftCorruption().corrupt_spectrogram(spec, np.random.default_rng(0))
    assert np.all(out.ravel()[raised] == 1.0 + 0.0j)


def test_same_generator_same_corruption_and_other_seed_other_corruption():
    clean = speechlike(np.random.default_rng(0))
    corruption = StftCorruption(n_fft=512, hop_length=128)
    a = corruption(clean, np.random.default_rng(7))[0]
    b = corruption(clean, np.random.default_rng(7))[0]
    c = corruption(clean, np.random.default_rng(8))[0]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("num_samples", [300, 4001, 16000])
def test_call_keeps_length_sets_level_and_degrades(num_samples):
    clean = speechlike(np.random.default_rng(1), num_samples)
    corrupted, target, info = StftCorruption(rms_db=-25)(clean, np.random.default_rng(0))
    assert corrupted.shape == target.shape == (num_samples,)
    assert corrupted.dtype == target.dtype == np.float32
    assert eval_rms_db(target) == pytest.approx(-25.0, abs=1e-3)
    assert np.allclose(target / np.max(np.abs(target)), clean / np.max(np.abs(clean)), atol=1e-6)
    assert np.isfinite(info["snr_db"]) and info["snr_db"] < 20
    assert info["num_zeroed"] > 0 and info["num_raised"] > 0


def test_no_corruption_is_the_identity_and_level_can_be_kept():
    clean = speechlike(np.random.default_rng(3), 5000) * 0.3
    nothing = StftCorruption(loud_zero_fraction=0.0, rest_set_fraction=0.0, rms_db=None)
    corrupted, target, info = nothing(clean, np.random.default_rng(0))
    assert np.allclose(target, clean, atol=1e-7)
    assert np.allclose(corrupted, clean, atol=1e-6)
    assert info["gain_db"] == 0.0 and info["num_zeroed"] == 0


def test_the_level_sets_the_strength_of_the_absolute_magnitude():
    clean = speechlike(np.random.default_rng(4), 16000)
    snr = {
        level: StftCorruption(rms_db=level)(clean, np.random.default_rng(0))[2]["snr_db"]
        for level in (-40, -25, -10)
    }
    assert snr[-40] < snr[-25] < snr[-10]


def test_bad_input_and_parameters_are_refused():
    corruption = StftCorruption()
    with pytest.raises(ValueError, match="silent"):
        corruption(np.zeros(1000), np.random.default_rng(0))
    with pytest.raises(ValueError, match="silent"):
        StftCorruption(rms_db=None)(np.zeros(1000), np.random.default_rng(0))
    with pytest.raises(ValueError, match="NaN"):
        corruption(np.array([0.1, np.nan, 0.2]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D"):
        corruption(np.ones((2, 100)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be <= 1"):
        StftCorruption(loud_fraction=0.2, rest_fraction=0.9)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        StftCorruption(loud_zero_fraction=1.5)
    with pytest.raises(ValueError, match="set_magnitude"):
        StftCorruption(set_magnitude=-1)
    with pytest.raises(ValueError, match="hop_length"):
        StftCorruption(n_fft=256, hop_length=0)


# ---- dataset wrapper --------------------------------------------------------------------


class EpochDataset(torch.utils.data.Dataset):
    """Like OnTheFlyDataset: the same clean signals, ids carry the epoch."""

    def __init__(self, signals):
        self.signals, self.epoch = signals, 0

    def __len__(self):
        return len(self.signals)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        return {"id": f"e{self.epoch}_{index}", "target": torch.from_numpy(self.signals[index])}


def test_dataset_items_are_fixed_per_seed_and_index():
    rng = np.random.default_rng(5)
    fixed = [
        {"id": f"test_{i:06d}", "target": speechlike(rng, 6000).astype(np.float32)}
        for i in range(3)
    ]
    data = StftCorruptedDataset(fixed, StftCorruption(n_fft=512, hop_length=128), seed=2025)
    first, again = data[1], data[1]
    assert first["id"] == "test_000001"
    assert torch.equal(first["mixture"], again["mixture"])  # fixed per-item seed
    assert first["mixture"].dtype == torch.float32 and first["mixture"].shape == (6000,)
    assert np.isfinite(first["snr_db"])
    expected, _, _ = data.corruption(
        fixed[1]["target"], np.random.default_rng(item_seed(2025, 1, "test_000001"))
    )
    assert np.array_equal(first["mixture"].numpy(), expected)
    other_seed = StftCorruptedDataset(fixed, data.corruption, seed=2024)[1]
    assert not torch.allclose(other_seed["mixture"], first["mixture"])
    assert torch.equal(other_seed["target"], first["target"])  # same clean target


def test_dataset_draws_new_corruptions_each_epoch_and_forwards_set_epoch():
    signals = [speechlike(np.random.default_rng(6), 6000).astype(np.float32)] * 2
    base = EpochDataset(signals)
    data = StftCorruptedDataset(base, StftCorruption(n_fft=512, hop_length=128), seed=0)
    epoch0 = data[0]["mixture"]
    assert not torch.equal(epoch0, data[1]["mixture"])  # same clean signal, other item
    data.set_epoch(1)
    assert base.epoch == 1
    assert not torch.equal(epoch0, data[0]["mixture"])
    data.set_epoch(0)
    assert torch.equal(epoch0, data[0]["mixture"])


def test_dataset_error_names_the_item():
    data = StftCorruptedDataset(
        [{"id": "silent_one", "target": np.zeros(2000)}], StftCorruption(), 0
    )
    with pytest.raises(ValueError, match="silent_one"):
        data[0]


def test_dataset_batches_with_padded_batch():
    from speechbrain.dataio.batch import PaddedBatch

    rng = np.random.default_rng(7)
    items = [{"id": f"u{i}", "target": speechlike(rng, n)} for i, n in enumerate((3000, 4000))]
    data = StftCorruptedDataset(items, StftCorruption(n_fft=256, hop_length=64), seed=1)
    batch = PaddedBatch([data[0], data[1]])
    assert batch.mixture.data.shape == (2, 4000)
    assert torch.allclose(batch.mixture.lengths, torch.tensor([0.75, 1.0]))


# ---- merged test reports -------------------------------------------------------------


def _write_report(folder, rows, summary):
    folder.mkdir(parents=True)
    with open(folder / "per_utterance.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "summary.json").write_text(json.dumps(summary))


def test_merge_test_reports(tmp_path):
    row = {"id": "a", "input_snr_db": "5.0", "si_snr_mixture": "5.0", "si_snr_estimate": "9.0"}
    _write_report(
        tmp_path / "stft",
        [row, {**row, "id": "b"}],
        {"num_utterances": 2, "si_snr_mixture": 5.0, "si_snr_estimate": 9.0, "si_snr_delta": 4.0},
    )
    _write_report(
        tmp_path / "mixer",
        [{**row, "id": "c", "si_snr_estimate": "7.5"}],
        {"num_utterances": 1, "si_snr_mixture": 2.0, "si_snr_estimate": 7.5, "si_snr_delta": 5.5},
    )
    summary = merge_test_reports(
        tmp_path, ["stft", "mixer"], ["si_snr"], labels={"si_snr": "SI-SDR"}
    )
    with open(tmp_path / "per_utterance.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["corruption"], r["id"]) for r in rows] == [
        ("stft", "a"),
        ("stft", "b"),
        ("mixer", "c"),
    ]
    assert rows[2]["si_snr_estimate"] == "7.5"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary and on_disk["num_utterances"] == 3
    assert on_disk["per_corruption"]["mixer"]["si_snr_delta"] == 5.5
    table = (tmp_path / "results_table.md").read_text().splitlines()
    assert table[0] == "| corruption | metric | input | enhanced | improvement |"
    assert table[2:] == [
        "| stft | SI-SDR | 5.000 | 9.000 | +4.000 |",
        "| mixer | SI-SDR | 2.000 | 7.500 | +5.500 |",
    ]
    with pytest.raises(FileNotFoundError, match="absent"):
        merge_test_reports(tmp_path, ["stft", "absent"], ["si_snr"])


# ---- real speech -------------------------------------------------------------------------


@pytest.mark.real_audio
def test_corruption_strength_on_real_speech(real_audio_dir):
    """At -25 dB RMS the default procedure gives a few dB of SNR on read speech."""
    paths = sorted((real_audio_dir / "speech").glob("*.wav"))[:6]
    assert paths
    corruption = StftCorruption(rms_db=-25)
    for path in paths:
        clean, sr = sf.read(str(path), dtype="float64")
        assert sr == 16000
        corrupted, target, info = corruption(clean, np.random.default_rng(0))
        assert 2.0 < info["snr_db"] < 10.0, (path.name, info)
        assert corrupted.shape == clean.shape
