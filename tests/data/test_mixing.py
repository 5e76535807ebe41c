"""Tests of custom_modules.data.mixing: mixer invariants, seeding, fixed sets, Dataset."""

import io
import json
import os

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile as sf
import torch

from custom_modules.audio.files import load_manifest
from custom_modules.audio.levels import eval_rms_db, eval_snr
from custom_modules.audio.rir import convolve_same_length, decay_rir, early_rir
from custom_modules.data.fixed_sets import float_wav_bytes
from custom_modules.data.mixing import (
    OnTheFlyDataset,
    RandomMixtureSampler,
    fixed_set_digest,
    write_fixed_set,
)
from custom_modules.data.sampling import RirSampler, SignalSampler

SR = 16000
CROP_SEC = 0.25
CROP = int(CROP_SEC * SR)


def write_wav(path, samples):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), SR, subtype="FLOAT")
    return str(path)


def synthetic_rir(rng, length, rt60, predelay, main_amp=1.0):
    t = np.arange(length - predelay) / SR
    tail = rng.normal(size=t.size) * 10 ** (-3 * t / rt60) * 0.3
    rir = np.zeros(length)
    rir[predelay:] = tail
    rir[predelay] = main_amp
    return rir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Speech-like, noise and RIR files, generated once for the module."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    speech = []
    for i in range(4):
        t = np.arange(int(rng.uniform(0.8, 1.5) * SR)) / SR
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        voiced = np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.2 * rng.normal(size=t.size)
        speech.append(write_wav(folder / "speech" / f"s{i}.wav", 0.2 * envelope * voiced))
    noise = [
        write_wav(folder / "noise" / f"n{i}.wav", rng.normal(0, 0.05, 2 * SR)) for i in range(3)
    ]
    rirs = [
        write_wav(folder / "rir" / "r0.wav", synthetic_rir(rng, 4000, 0.3, 20, main_amp=-0.8)),
        write_wav(folder / "rir" / "r1.wav", synthetic_rir(rng, 6000, 0.5, 40)),
    ]
    return {"folder": folder, "speech": speech, "noise": noise, "rir": rirs}


def make_mixer(corpus, rirs=None, **kwargs):
    kwargs.setdefault("rng", 0)
    return RandomMixtureSampler(
        SignalSampler(corpus["speech"], crop_size_sec=CROP_SEC),
        SignalSampler(corpus["noise"], crop_size_sec=CROP_SEC),
        RirSampler(corpus["rir"] if rirs is None else rirs),
        **kwargs,
    )


def dry_crop(segments):
    """The dry speech crop rebuilt from the metadata segments."""
    return np.concatenate(
        [sf.read(s["path"], dtype="float32")[0][s["start"] : s["stop"]] for s in segments]
    ).astype(np.float64)


def assert_proportional(actual, reference, rtol=1e-5):
    """``actual == c * reference`` for some c > 0, to ``rtol`` of its norm."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    scale = float(actual @ reference / (reference @ reference))
    assert scale > 0
    residual = np.linalg.norm(actual - scale * reference) / np.linalg.norm(actual)
    assert residual < rtol, residual


def test_shapes_dtypes_and_finite(corpus):
    mixer = make_mixer(corpus)
    for _ in range(30):
        mixture, target = mixer.sampler()
        assert mixture.shape == target.shape == (CROP,)
        assert mixture.dtype == target.dtype == np.float32
        assert np.all(np.isfinite(mixture)) and np.all(np.isfinite(target))
        assert np.max(np.abs(mixture)) <= 1.0
    assert mixer.num_generated == 30


def test_reverberant_target_leaves_exactly_the_noise(corpus):
    mixer = make_mixer(corpus, prob_rir_sig=1.0, reverb_target="reverberant")
    for _ in range(10):
        example = mixer.sample_example()
        meta = example.metadata
        assert meta["speech_rir"] is not None and meta["target_type"] == "reverberant"
        np.testing.assert_array_equal(example.target, example.speech)
        residual = example.mixture.astype(np.float64) - example.target
        # No speech leaks: the residual is the noise up to float32 rounding of the mixture.
        scale = np.max(np.abs(example.mixture))
        np.testing.assert_allclose(residual, example.noise, rtol=0, atol=2 * 2**-24 * scale)
        assert eval_snr(example.mixture, example.target) == pytest.approx(meta["snr_db"], abs=1e-4)


@pytest.mark.parametrize("reverb_target", ["dry", "early", "decay", "reverberant"])
def test_realised_snr_and_levels_equal_sampled(corpus, reverb_target):
    mixer = make_mixer(corpus, reverb_target=reverb_target, rng=3)
    for _ in range(12):
        example = mixer.sample_example()
        meta = example.metadata
        snr = eval_rms_db(example.target) - eval_rms_db(example.noise)
        assert snr == pytest.approx(meta["snr_db"], abs=1e-6)
        assert -5.0 <= meta["noise_gain_db"] <= 5.0 and meta["snr_db"] == -meta["noise_gain_db"]
        expected_target_db = -20.0 + meta["mixture_gain_db"] + 20 * np.log10(meta["clip_scale"])
        assert eval_rms_db(example.target) == pytest.approx(expected_target_db, abs=1e-6)
        assert meta["target_rms_db"] == pytest.approx(expected_target_db, abs=1e-9)
        np.testing.assert_allclose(
            example.mixture, example.speech.astype(np.float64) + example.noise, atol=1e-6
        )


def test_targets_follow_the_rir_definitions(corpus):
    """Each target type against the reference functions of custom_modules.audio.rir."""
    for reverb_target in ("dry", "early", "decay", "reverberant"):
        mixer = make_mixer(corpus, prob_rir_sig=1.0, reverb_target=reverb_target, rng=7)
        for _ in range(4):
            example = mixer.sample_example()
            meta = example.metadata
            dry = dry_crop(meta["speech"])
            rir = sf.read(meta["speech_rir"]["path"])[0]
            assert_proportional(example.speech, convolve_same_length(dry, rir))
            main = meta["speech_rir"]["main_tap"]
            if reverb_target == "dry":
                reference = np.zeros_like(dry)
                reference[main:] = rir[main] * dry[: dry.size - main]  # the direct path
            elif reverb_target == "early":
                reference = convolve_same_length(dry, early_rir(rir, 0.050, SR))
            elif reverb_target == "decay":
                reference = convolve_same_length(dry, decay_rir(rir, 0.3, 0.020, SR))
            else:
                reference = convolve_same_length(dry, rir)
            assert_proportional(example.target, reference)
            # One common factor for the speech in the mixture and the target.
            wet_reference = convolve_same_length(dry, rir)
            ratio_speech = np.linalg.norm(example.speech) / np.linalg.norm(wet_reference)
            ratio_target = np.linalg.norm(example.target) / np.linalg.norm(reference)
            # RIRs are used at unit main tap, so compare the two ratios.
            assert ratio_speech == pytest.approx(ratio_target, rel=1e-5)


def test_without_rir_target_is_the_dry_speech(corpus):
    mixer = make_mixer(corpus, prob_rir_sig=0.0, prob_rir_noise=0.0)
    example = mixer.sample_example()
    assert example.metadata["speech_rir"] is None and example.metadata["noise_rir"] is None
    assert example.metadata["target_type"] == "dry"
    np.testing.assert_array_equal(example.target, example.speech)
    assert_proportional(example.target, dry_crop(example.metadata["speech"]), rtol=1e-6)


def test_same_seed_same_mixtures(corpus):
    a, b = make_mixer(corpus, rng=11), make_mixer(corpus, rng=11)
    first = [a.sampler() for _ in range(6)]
    for mixture, target in first:
        other_mixture, other_target = b.sampler()
        np.testing.assert_array_equal(mixture, other_mixture)
        np.testing.assert_array_equal(target, other_target)
    a.reseed(11)
    np.testing.assert_array_equal(a.sampler()[0], first[0][0])
    a.reseed(11)
    example = a.sample_example()  # same draws as sampler(), plus components
    np.testing.assert_array_equal(example.mixture, first[0][0])
    np.testing.assert_array_equal(example.target, first[0][1])
    a.reseed(12)
    assert not np.array_equal(a.sampler()[0], first[0][0])


def test_clipping_policy_is_applied_and_counted(corpus):
    loud = make_mixer(corpus, mixture_gain_range_db=(25.0, 25.0))
    for _ in range(5):
        mixture, target, meta = loud.sampler(return_metadata=True)
        peak = np.max(np.abs(mixture))
        assert peak == pytest.approx(0.99, rel=1e-6)
        assert 0 < meta["clip_scale"] < 1
        target_db = -20.0 + 25.0 + 20 * np.log10(meta["clip_scale"])
        assert eval_rms_db(target) == pytest.approx(target_db, abs=1e-6)
    assert loud.num_clipped == loud.num_generated == 5

    quiet = make_mixer(corpus, mixture_gain_range_db=(-30.0, -30.0))
    for _ in range(5):
        _, _, meta = quiet.sampler(return_metadata=True)
        assert meta["clip_scale"] == 1.0
    assert quiet.num_clipped == 0 and quiet.num_generated == 5


def test_silent_target_after_rir_is_redrawn(corpus, tmp_path):
    # Main tap after the end of the crop: nothing of the speech reaches the crop.
    late = write_wav(tmp_path / "late_rir.wav", np.r_[np.zeros(CROP + 500), 1.0, 0.5])
    mixer = make_mixer(
        corpus,
        rirs=[late, corpus["rir"][0]],
        prob_rir_sig=1.0,
        prob_rir_noise=1.0,
        reverb_target="early",
        rng=1,
    )
    attempts = []
    for _ in range(15):
        mixture, target, meta = mixer.sampler(return_metadata=True)
        assert np.all(np.isfinite(mixture)) and np.all(np.isfinite(target))
        assert meta["speech_rir"]["id"] == "r0" and meta["noise_rir"]["id"] == "r0"
        attempts.append(meta["speech_attempts"] + meta["noise_attempts"])
    assert max(attempts) > 2

    only_late = make_mixer(corpus, rirs=[late], prob_rir_sig=1.0, max_attempts=5)
    with pytest.raises(RuntimeError, match=r"5 targets in a row.*late_rir\.wav"):
        only_late.sampler()


def test_metadata_is_json_ready_with_rt60(corpus, tmp_path):
    entries = {
        "room": {
            "path": "{data_root}/r1.wav",
            "duration": 6000 / SR,
            "sr": SR,
            "channels": 1,
            "rt60": 0.5,
        }
    }
    (tmp_path / "rir_train.json").write_text(json.dumps(entries))
    rirs = RirSampler.from_manifest(tmp_path / "rir_train.json", data_root=corpus["folder"] / "rir")
    mixer = RandomMixtureSampler(
        SignalSampler(corpus["speech"], crop_size_sec=CROP_SEC),
        SignalSampler(corpus["noise"], crop_size_sec=CROP_SEC),
        rirs,
        prob_rir_sig=1.0,
        rng=0,
    )
    _, _, meta = mixer.sampler(return_metadata=True)
    assert meta["speech_rir"]["rt60"] == 0.5 and meta["speech_rir"]["id"] == "room"
    for key in ("speech", "noise", "snr_db", "mixture_gain_db", "clip_scale", "noise_rir"):
        assert key in meta
    assert json.loads(json.dumps(meta, allow_nan=False)) == meta

    estimated = make_mixer(corpus, prob_rir_sig=1.0, rng=2)
    for _ in range(6):
        _, _, meta = estimated.sampler(return_metadata=True)
        true_rt60 = {"r0": 0.3, "r1": 0.5}[meta["speech_rir"]["id"]]
        assert meta["speech_rir"]["rt60"] == pytest.approx(true_rt60, rel=0.2)


def test_constructor_errors(corpus):
    with pytest.raises(ValueError, match="reverb_target"):
        make_mixer(corpus, reverb_target="wet")
    with pytest.raises(ValueError, match="same crop_size_sec"):
        RandomMixtureSampler(
            SignalSampler(corpus["speech"], crop_size_sec=0.25),
            SignalSampler(corpus["noise"], crop_size_sec=0.5),
            None,
            prob_rir_sig=0.0,
            prob_rir_noise=0.0,
        )
    with pytest.raises(ValueError, match="rir_sampler is None"):
        RandomMixtureSampler(
            SignalSampler(corpus["speech"], crop_size_sec=0.25),
            SignalSampler(corpus["noise"], crop_size_sec=0.25),
            None,
        )


def as_arrays(items):
    return [item["mixture"].numpy() for item in items]


def test_dataset_seeding_per_item_epoch_and_rank(corpus, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dataset = OnTheFlyDataset(make_mixer(corpus), length=4, seed=5)
    again = OnTheFlyDataset(make_mixer(corpus, rng=99), length=4, seed=5)
    item = dataset[2]
    assert item["id"] == "r0_e0_00000002"
    assert item["mixture"].dtype == torch.float32 and item["mixture"].shape == (CROP,)
    torch.testing.assert_close(item["mixture"], again[2]["mixture"], rtol=0, atol=0)
    torch.testing.assert_close(item["target"], again[2]["target"], rtol=0, atol=0)

    epoch0 = as_arrays([dataset[i] for i in range(4)])
    dataset.set_epoch(1)
    epoch1 = as_arrays([dataset[i] for i in range(4)])
    assert not any(np.array_equal(a, b) for a in epoch0 for b in epoch1)

    rank1 = OnTheFlyDataset(make_mixer(corpus), length=4, seed=5, rank=1)
    rank1_items = as_arrays([rank1[i] for i in range(4)])
    assert not any(np.array_equal(a, b) for a in epoch0 for b in rank1_items)
    monkeypatch.setenv("RANK", "1")
    env_rank = OnTheFlyDataset(make_mixer(corpus), length=4, seed=5)
    assert env_rank[0]["id"].startswith("r1_")
    np.testing.assert_array_equal(env_rank[0]["mixture"].numpy(), rank1_items[0])


def test_dataloader_workers_do_not_repeat_examples(corpus, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dataset = OnTheFlyDataset(make_mixer(corpus), length=8, seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    with_workers = [row.numpy() for batch in loader for row in batch["mixture"]]
    assert len(with_workers) == 8
    distinct = {row.tobytes() for row in with_workers}
    assert len(distinct) == 8
    in_process = [dataset[i]["mixture"].numpy() for i in range(8)]
    for a, b in zip(with_workers, in_process, strict=True):
        np.testing.assert_array_equal(a, b)  # the stream does not depend on num_workers


def test_float_wav_bytes_are_exact_and_timeless(tmp_path):
    samples = np.random.default_rng(0).normal(0, 0.3, 1001).astype(np.float32)
    data = float_wav_bytes(samples, SR)
    # libsndfile's own float WAV carries a PEAK chunk with the time of writing.
    plain = io.BytesIO()
    sf.write(plain, samples, SR, format="WAV", subtype="FLOAT")
    assert b"PEAK" in plain.getvalue() and b"PEAK" not in data
    decoded, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == SR
    np.testing.assert_array_equal(decoded, samples)
    path = tmp_path / "x.wav"
    path.write_bytes(data)
    sr, decoded = scipy.io.wavfile.read(path)  # an independent reader
    assert sr == SR and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, samples)


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_write_fixed_set_reproducible_and_skip_if_done(corpus, tmp_path):
    kwargs = {"reverb_target": "reverberant", "prob_rir_sig": 1.0}
    first = write_fixed_set(make_mixer(corpus, **kwargs), tmp_path / "a", 4, seed=3, progress=False)
    second = write_fixed_set(
        make_mixer(corpus, rng=77, **kwargs), tmp_path / "b", 4, seed=3, progress=False
    )
    assert fixed_set_digest(first) == fixed_set_digest(second)

    manifest = load_manifest(first)
    assert sorted(manifest) == [f"ex{i:06d}" for i in range(4)]
    for entry in manifest.values():
        mixture, sr = sf.read(entry["mixture"], dtype="float32")
        target, _ = sf.read(entry["target"], dtype="float32")
        assert sr == SR and mixture.shape == target.shape == (CROP,)
        assert entry["duration"] == pytest.approx(CROP_SEC)
        # Float32 WAV keeps the reverberant-target invariant on disk.
        assert eval_snr(mixture, target) == pytest.approx(entry["snr_db"], abs=1e-4)

    before = mtimes(tmp_path / "a")
    write_fixed_set(make_mixer(corpus, **kwargs), tmp_path / "a", 4, seed=3, progress=False)
    assert mtimes(tmp_path / "a") == before  # skipped

    write_fixed_set(make_mixer(corpus, **kwargs), tmp_path / "a", 4, seed=4, progress=False)
    assert fixed_set_digest(first) != fixed_set_digest(second)
    options = json.loads((tmp_path / "a" / "fixed_set_options.json").read_text())
    assert options["seed"] == 4


def test_write_fixed_set_repairs_and_prunes(corpus, tmp_path):
    out = tmp_path / "valid"
    manifest_path = write_fixed_set(make_mixer(corpus), out, 3, seed=0, progress=False)
    digest = fixed_set_digest(manifest_path)
    os.remove(out / "target" / "ex000001.wav")
    write_fixed_set(make_mixer(corpus), out, 3, seed=0, progress=False)
    assert fixed_set_digest(manifest_path) == digest  # regenerated identically

    write_fixed_set(make_mixer(corpus), out, 2, seed=0, progress=False)
    assert sorted(p.name for p in (out / "mixture").iterdir()) == ["ex000000.wav", "ex000001.wav"]
    # Changing a sampler parameter invalidates the set too.
    options_path = out / "fixed_set_options.json"
    before = options_path.stat().st_ino
    write_fixed_set(make_mixer(corpus, prob_rir_sig=0.9), out, 2, seed=0, progress=False)
    assert options_path.stat().st_ino != before  # rewritten (atomic replace: new inode)
    assert json.loads(options_path.read_text())["sampler"]["prob_rir_sig"] == 0.9


@pytest.mark.real_audio
def test_real_audio_mixtures(real_audio_dir):
    def files(kind):
        return sorted(str(p) for p in (real_audio_dir / kind).glob("*.wav"))

    mixer = RandomMixtureSampler(
        SignalSampler(files("speech"), crop_size_sec=2.0),
        SignalSampler(files("noise"), crop_size_sec=2.0),
        RirSampler(files("rir")),
        prob_rir_sig=1.0,
        rng=0,
    )
    for _ in range(15):
        example = mixer.sample_example()
        assert example.mixture.shape == (32000,)
        assert np.all(np.isfinite(example.mixture)) and np.max(np.abs(example.mixture)) <= 1
        snr = eval_rms_db(example.target) - eval_rms_db(example.noise)
        assert snr == pytest.approx(example.metadata["snr_db"], abs=1e-6)
        rir = sf.read(example.metadata["speech_rir"]["path"])[0]
        dry = dry_crop(example.metadata["speech"])
        assert_proportional(example.target, convolve_same_length(dry, decay_rir(rir, sr=SR)))
