"""Tests of the SpEx+ triplet writer (custom_modules.data.librispeech_mixtures) and triplet drawing.

A LibriSpeech-layout corpus of synthetic voiced "speech" (harmonic tones with
syllable-rate envelopes and pauses, at random levels) is generated in a
temporary folder; levels are checked with pyloudnorm itself on what is written.
"""

import functools
import hashlib
import json

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from custom_modules.audio.files import atomic_write_json, load_manifest
from custom_modules.audio.loudness import integrated_loudness, normalize_loudness
from custom_modules.data.librispeech_mixtures import (
    OnTheFlyTripletDataset,
    main,
    prepare_librispeech_mixtures,
    triplet_file,
    write_triplets,
)
from custom_modules.data.triplets import SpeakerPool, TripletMaker

SR = 16000
METER = pyloudnorm.Meter(SR)
# Official split -> speakers, and utterances per speaker (one speaker of the
# training split has a single utterance: interferer only).
CORPUS = {
    "train-clean-100": {"101": 3, "102": 2, "103": 2, "104": 1},
    "dev-clean": {"201": 2, "202": 2},
    "test-clean": {"301": 2, "302": 2},
}


def voiced(rng, seconds, level_db):
    """Speech-like test signal: harmonics of a gliding f0, 4 Hz syllables, a pause."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None)
    x = x * envelope + 0.003 * rng.normal(size=n)
    x[n // 3 : n // 3 + n // 10] *= 0.01  # a pause
    return 10 ** (level_db / 20) * x / np.sqrt(np.mean(x**2))


def write_corpus(root, seed=0):
    """LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac."""
    rng = np.random.default_rng(seed)
    for split, speakers in CORPUS.items():
        for speaker, count in speakers.items():
            chapter = root / "LibriSpeech" / split / speaker / "10"
            chapter.mkdir(parents=True)
            for utt in range(count):
                audio = voiced(rng, rng.uniform(0.6, 2.0), rng.uniform(-35, -15))
                sf.write(str(chapter / f"{speaker}-10-{utt:04d}.flac"), audio, SR)
    return root


def speech_manifest(folder, files):
    """Hand-written speech manifest: {id: (path, speaker)}."""
    entries = {}
    for key, (path, speaker) in files.items():
        info = sf.info(str(path))
        entries[key] = {
            "path": str(path),
            "duration": info.frames / info.samplerate,
            "sr": info.samplerate,
            "speaker": speaker,
        }
    path = folder / "speech.json"
    atomic_write_json(path, entries)
    return path


def small_pool(folder, seconds=(1.0, 1.2, 0.8, 1.5), seed=1):
    """Two speakers, two utterances each, written as wavs; returns the manifest path."""
    rng = np.random.default_rng(seed)
    files = {}
    for i, length in enumerate(seconds):
        speaker = "A" if i < 2 else "B"
        path = folder / f"u{i}.wav"
        sf.write(str(path), voiced(rng, length, rng.uniform(-30, -18)), SR)
        files[f"u{i}"] = (path, speaker)
    return speech_manifest(folder, files)


def read(path):
    return sf.read(str(path), dtype="float32")[0]


def set_digest(manifest_path):
    digest = hashlib.sha1()
    out_dir = manifest_path.parent
    for key in sorted(json.loads(manifest_path.read_text())):
        for kind in ("mix", "ref", "target"):
            digest.update((out_dir / triplet_file(kind, key)).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Corpus + a prepared set with a TIR range and saved interferers."""
    root = write_corpus(tmp_path_factory.mktemp("corpus"))
    save = tmp_path_factory.mktemp("prep")
    outputs = prepare_librispeech_mixtures(
        root,
        save,
        num_train=12,
        num_valid=4,
        num_test=4,
        seed=7,
        maker=functools.partial(TripletMaker.from_manifests, tir_db_range=(-5.0, 5.0)),
        save_interferer=True,
        num_workers=1,
        progress=False,
    )
    return root, save, outputs


def test_written_levels_are_minus_20_lufs(prepared):
    _, _, outputs = prepared
    for manifest_path in outputs.values():
        manifest = load_manifest(manifest_path)
        for entry in manifest.values():
            target, ref = read(entry["target"]), read(entry["ref"])
            interferer = read(entry["interferer"])
            # Sources are >= 0.6 s: pyloudnorm measures them directly.
            assert METER.integrated_loudness(target) == pytest.approx(-20.0, abs=0.5)
            assert METER.integrated_loudness(ref) == pytest.approx(-20.0, abs=0.5)
            assert METER.integrated_loudness(interferer) == pytest.approx(
                -20.0 - entry["tir_db"], abs=0.5
            )
            # Float output: exact levels, nothing scaled; TIR drawn in range.
            assert entry["clip_gain_db"] == 0.0 and entry["target_lufs"] == -20.0
            assert -5.0 <= entry["tir_db"] <= 5.0
    tirs = [e["tir_db"] for p in outputs.values() for e in json.loads(p.read_text()).values()]
    assert np.std(tirs) > 1.0  # a range, not a constant


def test_mix_is_exact_sum_and_manifest_reproduces_sources(prepared):
    _, _, outputs = prepared
    manifest = load_manifest(outputs["train"])
    for entry in manifest.values():
        mix, target, interferer = (read(entry[k]) for k in ("mix", "target", "interferer"))
        assert mix.shape == target.shape == interferer.shape
        assert mix.size / SR == pytest.approx(entry["duration"])
        np.testing.assert_array_equal(mix, target + interferer)
        # Source file + offset + gain recorded in the manifest give the written target.
        source = sf.read(entry["target_file"], dtype="float64")[0]
        start = entry["target_offset"]
        segment = source[start : start + entry["target_length"]]
        expected = segment * 10 ** (entry["target_gain_db"] / 20)
        np.testing.assert_allclose(target, expected, atol=1e-6)
        # Shortest policy: the mix is as long as the shorter source utterance.
        lengths = [sf.info(entry[f"{k}_file"]).frames for k in ("target", "interferer")]
        assert mix.size == min(lengths)


def test_speakers_disjoint_and_references_differ(prepared):
    _, save, outputs = prepared
    speakers = {}
    for split, manifest_path in outputs.items():
        manifest = json.loads(manifest_path.read_text())
        assert len(manifest) == {"train": 12, "valid": 4, "test": 4}[split]
        found = set()
        for entry in manifest.values():
            assert entry["target_speaker"] != entry["interferer_speaker"]
            assert entry["ref_id"] != entry["target_id"]
            # The reference is an utterance of the target speaker (LibriSpeech file name).
            ref_speaker = entry["ref_file"].rsplit("/", 1)[1].split("-")[0]
            assert ref_speaker == entry["target_speaker"]
            found |= {entry["target_speaker"], entry["interferer_speaker"]}
        speakers[split] = found
    assert speakers["train"] <= set(CORPUS["train-clean-100"])
    assert speakers["valid"] <= set(CORPUS["dev-clean"])
    assert speakers["test"] <= set(CORPUS["test-clean"])
    assert not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"])
    assert not speakers["valid"] & speakers["test"]
    # Classes of the speaker head: training speakers with >= 2 utterances.
    assert json.loads((save / "train_speakers.json").read_text()) == ["101", "102", "103"]
    train = json.loads(outputs["train"].read_text()).values()
    assert "104" not in {e["target_speaker"] for e in train}


def test_csv_manifest_matches_json(prepared):
    _, _, outputs = prepared
    lines = (outputs["test"].parent / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:5] == ["ID", "mix", "ref", "target", "interferer"]
    manifest = json.loads(outputs["test"].read_text())
    assert len(lines) == 1 + len(manifest)
    first_id, first = next(iter(manifest.items()))
    row = dict(zip(header, lines[1].split(","), strict=True))
    assert row["ID"] == first_id and row["mix"] == f"mix/{first_id}-mixed.wav"
    assert float(row["tir_db"]) == pytest.approx(first["tir_db"])


def test_skip_if_done_determinism_and_regeneration(tmp_path):
    manifest = small_pool(tmp_path)
    out, maker = tmp_path / "set", TripletMaker.from_manifests(manifest)
    first = write_triplets(maker, out, 6, seed=3, progress=False)
    digest = set_digest(first)
    stamp = first.stat().st_mtime_ns
    assert write_triplets(maker, out, 6, seed=3, progress=False).stat().st_mtime_ns == stamp
    # Same seed elsewhere, with two worker processes: the same bytes.
    other = write_triplets(maker, tmp_path / "other", 6, seed=3, progress=False, num_workers=2)
    assert set_digest(other) == digest
    # Another option: regenerated.
    louder = TripletMaker.from_manifests(manifest, loudness_lufs=-18.0)
    assert write_triplets(louder, out, 6, seed=3, progress=False).stat().st_mtime_ns != stamp
    assert set_digest(first) != digest
    # Another seed and fewer triplets: regenerated, old files removed.
    write_triplets(maker, out, 3, seed=4, progress=False)
    assert set_digest(first) != digest
    assert len(list((out / "mix").iterdir())) == 3
    # A deleted wav makes the set incomplete: regenerated.
    victim = next((out / "targets").iterdir())
    victim.unlink()
    write_triplets(maker, out, 3, seed=4, progress=False)
    assert victim.is_file()


def test_longest_policy_pads_and_max_sec_caps(tmp_path):
    manifest = small_pool(tmp_path, seconds=(2.0, 1.0, 0.5, 0.7))
    longest = TripletMaker.from_manifests(manifest, length_policy="longest")
    path = write_triplets(longest, tmp_path / "long", 6, seed=0, progress=False)
    for entry in load_manifest(path).values():
        mix, target = read(entry["mix"]), read(entry["target"])
        lengths = {k: sf.info(entry[f"{k}_file"]).frames for k in ("target", "interferer")}
        assert mix.size == max(lengths.values()) == target.size
        assert entry["target_length"] == lengths["target"]
        assert not np.any(target[lengths["target"] :])  # zero padding after the utterance
    capped = TripletMaker.from_manifests(manifest, max_sec=0.3, ref_max_sec=0.25)
    capped = write_triplets(capped, tmp_path / "cap", 6, seed=0)
    for entry in load_manifest(capped).values():
        assert read(entry["mix"]).size <= int(0.3 * SR)
        assert read(entry["ref"]).size == int(0.25 * SR)
        # Sub-block signals are measured on their cyclic repetition: still at -20 LUFS.
        assert integrated_loudness(read(entry["target"]), SR) == pytest.approx(-20.0, abs=0.05)


def test_pcm16_peak_policy_keeps_mix_consistent(tmp_path):
    rng = np.random.default_rng(5)
    files = {}
    for i in range(4):
        # Sparse clicks: quiet loudness, huge peaks once normalised to -20 LUFS.
        x = voiced(rng, 1.0, -30)
        x[rng.integers(0, SR, 5)] = 0.9
        path = tmp_path / f"p{i}.wav"
        sf.write(str(path), x, SR, subtype="FLOAT")
        files[f"p{i}"] = (path, "A" if i < 2 else "B")
    manifest = speech_manifest(tmp_path, files)
    maker = TripletMaker.from_manifests(manifest)
    path = write_triplets(maker, tmp_path / "pcm", 4, seed=0, subtype="PCM_16", progress=False)
    entries = load_manifest(path).values()
    assert all(e["clip_gain_db"] < 0 for e in entries)
    for entry in entries:
        mix, target, ref = (
            sf.read(entry[k], dtype="int16")[0].astype(np.int32) for k in ("mix", "target", "ref")
        )
        assert np.max(np.abs(mix)) <= 0.99 * 32768 + 1
        interferer = mix - target
        # Recorded final levels are what is written.
        assert METER.integrated_loudness(target / 32768.0) == pytest.approx(
            entry["target_lufs"], abs=0.05
        )
        assert METER.integrated_loudness(interferer / 32768.0) == pytest.approx(
            entry["interferer_lufs"], abs=0.05
        )
        assert METER.integrated_loudness(ref / 32768.0) == pytest.approx(
            entry["ref_lufs"], abs=0.05
        )
        assert entry["target_lufs"] == pytest.approx(-20.0 + entry["clip_gain_db"])


def test_noise_option_adds_noise_at_snr(tmp_path):
    manifest = small_pool(tmp_path)
    rng = np.random.default_rng(2)
    noise_path = tmp_path / "noise.wav"
    sf.write(str(noise_path), rng.normal(0, 0.05, SR // 2), SR)  # shorter than mixes: looped
    noise_manifest = tmp_path / "noise.json"
    atomic_write_json(
        noise_manifest, {"n": {"path": str(noise_path), "duration": 0.5, "sr": SR, "channels": 1}}
    )
    maker = TripletMaker.from_manifests(
        manifest, noise_manifest=noise_manifest, snr_db_range=(5.0, 10.0)
    )
    path = write_triplets(
        maker, tmp_path / "noisy", 4, seed=1, save_interferer=True, progress=False
    )
    for entry in load_manifest(path).values():
        mix, target, interferer = (read(entry[k]) for k in ("mix", "target", "interferer"))
        noise = mix - target - interferer
        assert 5.0 <= entry["snr_db"] <= 10.0
        assert METER.integrated_loudness(noise) == pytest.approx(-20 - entry["snr_db"], abs=0.5)
    with pytest.raises(ValueError, match="snr_db_range"):
        TripletMaker.from_manifests(manifest, noise_manifest=noise_manifest)
    # Without noise, the maker's snr_db_range is not used: the clean triplets of the same seed.
    clean = write_triplets(TripletMaker.from_manifests(manifest), tmp_path / "clean", 4, seed=1)
    unused = TripletMaker.from_manifests(manifest, snr_db_range=(5.0, 10.0))
    assert unused.snr_db_range is None
    same = write_triplets(unused, tmp_path / "unused", 4, seed=1)
    assert set_digest(same) == set_digest(clean)


def test_bad_inputs_give_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"b{i}.wav")
        sf.write(str(paths[-1]), voiced(rng, 0.8, -25), SR)
    one_each = speech_manifest(tmp_path, {f"b{i}": (p, f"S{i}") for i, p in enumerate(paths)})
    with pytest.raises(ValueError, match="no speaker has two utterances"):
        TripletMaker.from_manifests(one_each)
    single = speech_manifest(tmp_path, {f"b{i}": (p, "S") for i, p in enumerate(paths)})
    with pytest.raises(ValueError, match="1 speaker"):
        TripletMaker.from_manifests(single)
    manifest = small_pool(tmp_path)
    entries = json.loads(manifest.read_text())
    del entries["u1"]["speaker"]
    atomic_write_json(tmp_path / "nospk.json", entries)
    with pytest.raises(ValueError, match="'u1' has no speaker"):
        TripletMaker.from_manifests(tmp_path / "nospk.json")
    with pytest.raises(ValueError, match="8000 Hz"):
        TripletMaker.from_manifests(manifest, sr=8000)
    with pytest.raises(ValueError, match="length_policy"):
        TripletMaker.from_manifests(manifest, length_policy="pad")
    with pytest.raises(ValueError, match="tir_db_range"):
        TripletMaker.from_manifests(manifest, tir_db_range=(5, -5))
    with pytest.raises(ValueError, match="snr_db_range"):
        TripletMaker.from_manifests(manifest, snr_db_range=(5, -5))
    with pytest.raises(ValueError, match="subtype"):
        write_triplets(TripletMaker.from_manifests(manifest), tmp_path / "o", 1, 0, subtype="MP3")
    # Silent files: bounded redraws, then an error naming files.
    silent = {}
    for i in range(4):
        silent[f"s{i}"] = (tmp_path / f"s{i}.wav", "A" if i < 2 else "B")
        sf.write(str(silent[f"s{i}"][0]), np.zeros(SR), SR)
    with pytest.raises(RuntimeError, match=r"too quiet.*s\d\.wav"):
        write_triplets(TripletMaker.from_manifests(speech_manifest(tmp_path, silent)),
                       tmp_path / "o", 1, seed=0)  # fmt: skip
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_loudness_helpers():
    rng = np.random.default_rng(0)
    x = voiced(rng, 0.25, -30)  # shorter than the 400 ms block
    looped = np.tile(x, 8)
    assert integrated_loudness(x, SR) == pytest.approx(METER.integrated_loudness(looped), abs=0.2)
    y, gain_db = normalize_loudness(x, SR, -20.0)
    assert integrated_loudness(y, SR) == pytest.approx(-20.0, abs=1e-6)
    assert gain_db == pytest.approx(-20.0 - integrated_loudness(x, SR))
    assert integrated_loudness(np.zeros(100), SR) == float("-inf")
    assert normalize_loudness(np.zeros(SR), SR, -20.0)[1] is None


def test_on_the_fly_dataset(tmp_path):
    manifest = small_pool(tmp_path, seconds=(1.0, 1.2, 0.3, 1.5))
    maker = TripletMaker.from_manifests(manifest, max_sec=0.5, ref_max_sec=0.5)
    data = OnTheFlyTripletDataset(maker, length=6, seed=5, rank=0)
    assert data.speakers == ["A", "B"]
    item = data[2]
    assert set(item) == {"id", "mix", "ref", "target", "target_speaker", "speaker_index"}
    assert item["mix"].dtype == torch.float32 and item["mix"].numel() <= int(0.5 * SR)
    assert item["speaker_index"] == data.speakers.index(item["target_speaker"])
    # mix - target is the interferer, at -20 LUFS (TIR 0 dB).
    interferer = (item["mix"] - item["target"]).numpy()
    assert integrated_loudness(interferer, SR) == pytest.approx(-20.0, abs=0.01)
    again = data[2]
    assert torch.equal(item["mix"], again["mix"]) and torch.equal(item["ref"], again["ref"])
    mixes = [data[i]["mix"] for i in range(6)]
    data.set_epoch(1)
    assert data[2]["id"] == "r0_e1_00000002"
    assert not any(torch.equal(data[i]["mix"], mixes[i]) for i in range(6))
    other_rank = OnTheFlyTripletDataset(maker, length=6, seed=5, rank=1)
    assert not torch.equal(other_rank[2]["mix"], mixes[2])
    # Levels: every source at -20 LUFS (pure float, nothing scaled).
    for i in range(6):
        item = data[i]
        assert integrated_loudness(item["target"].numpy(), SR) == pytest.approx(-20, abs=0.05)
        assert integrated_loudness(item["ref"].numpy(), SR) == pytest.approx(-20, abs=0.05)
    # Renamed keys, fixed speaker classes (-1 for others), batched by SpeechBrain.
    renamed = OnTheFlyTripletDataset(
        maker,
        length=4,
        seed=5,
        speakers=["B", "X"],
        keys={"mix": "mixture", "ref": "reference"},
    )
    loader = torch.utils.data.DataLoader(renamed, batch_size=4, collate_fn=PaddedBatch)
    batch = next(iter(loader))
    assert batch.mixture.data.shape[0] == 4 and batch.reference.data.shape[0] == 4
    expected = [0 if s == "B" else -1 for s in batch.target_speaker]
    assert batch.speaker_index.tolist() == expected


def test_cli_help_and_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--tir_db_range" in capsys.readouterr().out
    root = write_corpus(tmp_path / "corpus", seed=3)
    argv = ["--data_folder", str(root), "--save_folder", str(tmp_path / "out")]
    argv += ["--num_train", "2", "--num_valid", "1", "--num_test", "0", "--tir_db_range", "1", "2"]
    outputs = main(argv)
    assert sorted(outputs) == ["train", "valid"]
    entries = json.loads(outputs["train"].read_text()).values()
    assert all(1.0 <= e["tir_db"] <= 2.0 for e in entries)
    with pytest.raises(ValueError, match="noise must be"):
        prepare_librispeech_mixtures(root, tmp_path / "out", noise="wham")


@pytest.mark.real_audio
def test_real_speech_levels(real_audio_dir, tmp_path):
    files = {}
    for path in sorted((real_audio_dir / "speech").glob("libri_*.wav")):
        speaker = path.stem.split("_")[1]
        files[path.stem] = (path, speaker)
    manifest = speech_manifest(tmp_path, files)
    pool = SpeakerPool.from_manifest(manifest)
    assert len(pool.target_speakers) >= 5
    maker = TripletMaker.from_manifests(manifest, max_sec=4.0)
    path = write_triplets(maker, tmp_path / "real", 8, seed=0, progress=False)
    for entry in load_manifest(path).values():
        for kind in ("target", "ref"):
            assert METER.integrated_loudness(read(entry[kind])) == pytest.approx(-20.0, abs=0.5)
    assert TripletMaker(pool, max_sec=4.0).describe() | {"speech_manifest": str(manifest)} == (
        maker.describe()
    )
    signals, meta = maker.with_peak_limit(0.99).make(np.random.default_rng(0))
    assert np.max(np.abs(signals["mix"])) <= 0.99 + 1e-12
    assert np.allclose(signals["mix"], signals["target"] + signals["interferer"])
