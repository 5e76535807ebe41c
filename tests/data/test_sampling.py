"""Tests of custom_modules.data.sampling (crops of files, RIRs, error policies)."""

import json
import time

import numpy as np
import pytest
import soundfile as sf

from custom_modules.audio.files import AudioFileError
from custom_modules.audio.levels import eval_rms_db
from custom_modules.audio.seeding import derive_seed_sequences
from custom_modules.data import sampling
from custom_modules.data.sampling import RirSampler, SignalSampler

SR = 16000


def write_wav(path, samples, sr=SR, subtype="FLOAT"):
    """Write a float32 WAV fixture (FLOAT keeps the samples exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype=subtype)
    return str(path)


def noise(seconds, rng, level=0.1, sr=SR):
    return (rng.normal(0.0, level, int(round(seconds * sr)))).astype(np.float32)


@pytest.fixture()
def long_files(tmp_path):
    rng = np.random.default_rng(1)
    return [write_wav(tmp_path / f"long{i}.wav", noise(2.0 + i, rng)) for i in range(3)]


def test_crop_has_exact_length_and_matches_file_segment(long_files):
    sampler = SignalSampler(long_files, crop_size_sec=0.75, rng=0)
    for _ in range(20):
        crop, info = sampler.sampler(return_info=True)
        assert crop.shape == (12000,) and crop.dtype == np.float32
        (segment,) = info["segments"]  # files are longer than the crop: one segment
        assert segment["stop"] - segment["start"] == 12000
        expected, _ = sf.read(segment["path"], dtype="float32")
        np.testing.assert_array_equal(crop, expected[segment["start"] : segment["stop"]])
        assert info["rms_db"] == pytest.approx(eval_rms_db(crop))


def test_reads_only_the_crop_never_whole_files(long_files, monkeypatch):
    calls = []
    real_read = sampling.sf.read

    def spy(path, start=0, stop=None, **kwargs):
        calls.append((start, stop))
        return real_read(path, start=start, stop=stop, **kwargs)

    monkeypatch.setattr(sampling.sf, "read", spy)
    sampler = SignalSampler(long_files, crop_size_sec=0.5, rng=1)
    for _ in range(10):
        sampler.sampler()
    assert len(calls) == 10
    assert all(stop is not None and stop - start == 8000 for start, stop in calls)


def test_short_files_are_concatenated(tmp_path):
    rng = np.random.default_rng(2)
    paths = [write_wav(tmp_path / f"short{i}.wav", noise(0.3, rng)) for i in range(4)]
    sampler = SignalSampler(paths, crop_size_sec=1.0, rng=3)
    crop, info = sampler.sampler(return_info=True)
    assert crop.shape == (16000,)
    segments = info["segments"]
    assert len(segments) == 4  # 0.3 + 0.3 + 0.3 + 0.1 s
    assert [s["stop"] - s["start"] for s in segments] == [4800, 4800, 4800, 1600]
    rebuilt = np.concatenate(
        [sf.read(s["path"], dtype="float32")[0][s["start"] : s["stop"]] for s in segments]
    )
    np.testing.assert_array_equal(crop, rebuilt)


def test_files_are_chosen_in_proportion_to_their_length(tmp_path):
    rng = np.random.default_rng(4)
    short = write_wav(tmp_path / "one_second.wav", noise(1.0, rng))
    long = write_wav(tmp_path / "three_seconds.wav", noise(3.0, rng))
    sampler = SignalSampler([short, long], crop_size_sec=0.01, rng=5)
    draws = [sampler._draw_file() for _ in range(4000)]
    share_long = np.mean(np.asarray(draws) == 1)
    # Binomial(4000, 0.75): standard deviation 0.007.
    assert abs(share_long - 0.75) < 0.03


def test_quiet_crops_are_rejected(tmp_path):
    rng = np.random.default_rng(6)
    loud = write_wav(tmp_path / "loud.wav", noise(2.0, rng, level=0.1))  # -20 dB
    quiet = write_wav(tmp_path / "quiet.wav", noise(2.0, rng, level=0.001))  # -60 dB
    sampler = SignalSampler([loud, quiet], crop_size_sec=0.5, min_rms_db=-38, rng=7)
    attempts = []
    for _ in range(30):
        crop, info = sampler.sampler(return_info=True)
        assert eval_rms_db(crop) >= -38
        assert all(s["path"] == loud for s in info["segments"])
        attempts.append(info["attempts"])
    assert max(attempts) > 1  # some quiet crops were drawn and rejected


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_silent_files_give_bounded_error_naming_paths(tmp_path, level):
    paths = [
        write_wav(tmp_path / f"silent{i}.wav", np.full(SR, level, dtype=np.float32))
        for i in range(2)
    ]
    sampler = SignalSampler(paths, crop_size_sec=0.5, min_rms_db=-38, rng=0, max_attempts=20)
    started = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        sampler.sampler()
    assert time.perf_counter() - started < 5.0
    message = str(err.value)
    assert "-38" in message and "20 crops" in message
    assert any(p in message for p in paths)


def test_wrong_sample_rate_is_named_at_construction(tmp_path):
    rng = np.random.default_rng(8)
    good = write_wav(tmp_path / "good.wav", noise(1.0, rng))
    bad = write_wav(tmp_path / "at_8k.wav", noise(1.0, rng, sr=8000), sr=8000)
    with pytest.raises(AudioFileError, match=r"at_8k\.wav.*8000 Hz.*data preparation"):
        SignalSampler([good, bad], crop_size_sec=0.5)
    with pytest.raises(AudioFileError, match=r"at_8k\.wav"):
        RirSampler([bad])


def test_multichannel_file_is_named_at_construction(tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), np.zeros((SR, 2), dtype=np.float32) + 0.1, SR)
    with pytest.raises(AudioFileError, match=r"stereo\.wav: 2 channels"):
        SignalSampler([str(stereo)], crop_size_sec=0.5)
    with pytest.raises(AudioFileError, match=r"stereo\.wav: 2 channels"):
        RirSampler([str(stereo)])


def test_nan_samples_are_named(tmp_path):
    samples = noise(1.0, np.random.default_rng(9))
    samples[100] = np.nan
    path = write_wav(tmp_path / "has_nan.wav", samples)
    sampler = SignalSampler([path], crop_size_sec=0.99, min_rms_db=None, rng=0)
    with pytest.raises(AudioFileError, match=r"has_nan\.wav: contains NaN"):
        for _ in range(20):
            sampler.sampler()


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"definitely not RIFF")
    with pytest.raises(AudioFileError, match=r"not_audio\.wav"):
        SignalSampler([str(bad)])
    with pytest.raises(ValueError, match="empty list"):
        SignalSampler([])


def test_same_seed_same_crops_and_reseed(long_files):
    a = SignalSampler(long_files, crop_size_sec=0.2, rng=11)
    b = SignalSampler(long_files, crop_size_sec=0.2, rng=11)
    crops_a = [a.sampler() for _ in range(5)]
    crops_b = [b.sampler() for _ in range(5)]
    for x, y in zip(crops_a, crops_b, strict=True):
        np.testing.assert_array_equal(x, y)
    b.reseed(12)
    assert not np.array_equal(b.sampler(), a.sampler())
    a.reseed(np.random.SeedSequence(5))
    b.reseed(np.random.SeedSequence(5))
    np.testing.assert_array_equal(a.sampler(), b.sampler())


def test_derive_seed_sequences_is_pure_and_independent():
    root = np.random.SeedSequence(42)
    first = [s.generate_state(2).tolist() for s in derive_seed_sequences(root, 3)]
    again = [s.generate_state(2).tolist() for s in derive_seed_sequences(root, 3)]
    assert first == again
    assert len({tuple(s) for s in first}) == 3


def make_manifest(folder, entries):
    path = folder / "manifest.json"
    path.write_text(json.dumps(entries))
    return path


def test_from_manifest_uses_durations_and_checks_at_first_read(tmp_path):
    rng = np.random.default_rng(13)
    write_wav(tmp_path / "data" / "a.wav", noise(1.5, rng))
    write_wav(tmp_path / "data" / "b.wav", noise(1.5, rng, sr=8000), sr=8000)
    entries = {
        "a": {"path": "{data_root}/a.wav", "duration": 1.5, "sr": SR, "channels": 1},
    }
    manifest = make_manifest(tmp_path, entries)
    sampler = SignalSampler.from_manifest(manifest, data_root=tmp_path / "data", crop_size_sec=1.0)
    crop, info = sampler.sampler(return_info=True)
    assert crop.shape == (SR,) and info["segments"][0]["id"] == "a"

    # A manifest that lies about the rate: error naming the file at first read.
    entries["b"] = {"path": "{data_root}/b.wav", "duration": 1.5, "sr": SR, "channels": 1}
    manifest = make_manifest(tmp_path, entries)
    sampler = SignalSampler.from_manifest(
        manifest, data_root=tmp_path / "data", crop_size_sec=1.0, rng=0
    )
    with pytest.raises(AudioFileError, match=r"b\.wav: sample rate 8000 Hz"):
        for _ in range(50):
            sampler.sampler()

    # A manifest saying another rate: error naming the file at construction.
    entries["b"]["sr"] = 8000
    manifest = make_manifest(tmp_path, entries)
    with pytest.raises(AudioFileError, match=r"b\.wav.*8000 Hz"):
        SignalSampler.from_manifest(manifest, data_root=tmp_path / "data")


def test_stale_manifest_duration_is_named(tmp_path):
    write_wav(tmp_path / "a.wav", noise(1.0, np.random.default_rng(14)))
    manifest = make_manifest(
        tmp_path, {"a": {"path": "{data_root}/a.wav", "duration": 3.0, "sr": SR, "channels": 1}}
    )
    sampler = SignalSampler.from_manifest(manifest, data_root=tmp_path, crop_size_sec=0.5, rng=0)
    with pytest.raises(AudioFileError, match=r"a\.wav: asked for frames.*manifest duration"):
        for _ in range(50):
            sampler.sampler()


def test_rir_sampler_returns_whole_mono_rirs(tmp_path):
    rng = np.random.default_rng(15)
    rirs = []
    for i, length in enumerate((800, 1600, 4000)):
        rir = rng.normal(size=length) * np.exp(-np.arange(length) / 300.0)
        rirs.append(write_wav(tmp_path / f"rir{i}.wav", rir))
    sampler = RirSampler(rirs, rng=16)
    seen = set()
    for _ in range(30):
        rir, info = sampler.sampler(return_info=True)
        expected, _ = sf.read(info["path"], dtype="float32")
        np.testing.assert_array_equal(rir, expected)
        assert rir.dtype == np.float32 and rir.ndim == 1
        seen.add(info["index"])
    assert seen == {0, 1, 2}
    rir[:] = 0.0  # the returned array is the caller's copy
    assert np.any(sampler.load(info["index"]))


def test_rir_sampler_rejects_silent_rir_and_reads_manifest_rt60(tmp_path):
    write_wav(tmp_path / "zero.wav", np.zeros(500))
    write_wav(tmp_path / "ok.wav", np.r_[1.0, np.zeros(499)])
    with pytest.raises(AudioFileError, match=r"zero\.wav: RIR is all zeros"):
        RirSampler([str(tmp_path / "zero.wav")]).sampler()
    manifest = make_manifest(
        tmp_path,
        {
            "ok": {
                "path": "{data_root}/ok.wav",
                "duration": 500 / SR,
                "sr": SR,
                "channels": 1,
                "rt60": 0.4,
            }
        },
    )
    sampler = RirSampler.from_manifest(manifest, data_root=tmp_path, rng=0)
    rir, info = sampler.sampler(return_info=True)
    assert info["rt60"] == 0.4 and info["id"] == "ok" and rir.shape == (500,)


@pytest.mark.real_audio
def test_real_speech_crops_and_real_rirs(real_audio_dir):
    speech = sorted(str(p) for p in (real_audio_dir / "speech").glob("*.wav"))
    sampler = SignalSampler(speech, crop_size_sec=5.0, min_rms_db=-38, rng=0)
    multi_file = 0
    for _ in range(10):
        crop, info = sampler.sampler(return_info=True)
        assert crop.shape == (80000,) and crop.dtype == np.float32
        assert info["rms_db"] >= -38 and np.all(np.isfinite(crop))
        multi_file += len(info["segments"]) > 1
    assert multi_file > 0  # several real files are shorter than 5 s
    rirs = sorted(str(p) for p in (real_audio_dir / "rir").glob("*.wav"))
    rir_sampler = RirSampler(rirs, rng=0)
    for _ in range(5):
        rir = rir_sampler.sampler()
        assert rir.ndim == 1 and rir.size >= 0.5 * SR and np.any(rir)


def test_file_weighting_draws_every_file_alike(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, seconds in (("long", 20.0), ("short", 1.0)):
        path = tmp_path / f"{name}.wav"
        sf.write(str(path), rng.normal(0, 0.1, int(seconds * 16000)), 16000)
        paths.append(str(path))
    counts = {}
    for weighting in ("duration", "file"):
        sampler = SignalSampler(paths, crop_size_sec=0.5, rng=1, weighting=weighting)
        draws = [sampler.sampler(return_info=True)[1]["segments"][0]["path"] for _ in range(400)]
        counts[weighting] = draws.count(paths[1]) / len(draws)
    assert counts["duration"] < 0.1  # 1 s of 21 s
    assert 0.4 < counts["file"] < 0.6
    assert (
        SignalSampler(paths, crop_size_sec=0.5, weighting="file").describe()["weighting"] == "file"
    )
    assert "weighting" not in SignalSampler(paths, crop_size_sec=0.5).describe()
    with pytest.raises(ValueError, match="weighting"):
        SignalSampler(paths, crop_size_sec=0.5, weighting="speaker")


def test_source_mix_gives_each_kind_of_noise_its_share(tmp_path):
    rng = np.random.default_rng(0)
    paths, sources = [], []
    for i, (source, seconds) in enumerate(
        [("recorded", 2.0), ("generated/babble", 10.0), ("generated/babble", 10.0),
         ("generated/synthetic_noise", 10.0)]
    ):  # fmt: skip
        path = tmp_path / f"n{i}.wav"
        sf.write(str(path), rng.normal(0, 0.1, int(seconds * 16000)), 16000)
        paths.append(str(path))
        sources.append(source)
    mix = {"generated/babble": 0.25, "generated/synthetic_noise": 0.25, "*": 0.5}
    sampler = SignalSampler(paths, crop_size_sec=0.5, rng=2, sources=sources, source_mix=mix)
    draws = [sampler.sampler(return_info=True)[1]["segments"][0]["path"] for _ in range(800)]
    share = {kind: sum(draws.count(p) for p, s in zip(paths, sources, strict=True) if s == kind)
             / len(draws) for kind in set(sources)}  # fmt: skip
    assert share["recorded"] == pytest.approx(0.5, abs=0.06)  # 2 s of 32 s, yet half the draws
    assert share["generated/babble"] == pytest.approx(0.25, abs=0.05)
    assert sampler.describe()["source_mix"] == mix
    # A kind without files is left out and the others renormalised.
    only = SignalSampler(paths[:1], crop_size_sec=0.5, sources=sources[:1], source_mix=mix)
    assert only._cumulative[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one source label per file"):
        SignalSampler(paths, crop_size_sec=0.5, source_mix=mix)
