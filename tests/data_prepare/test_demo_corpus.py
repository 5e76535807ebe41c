"""Offline demo corpus (``data_prepare.demo``): layouts, audio, RT60, determinism, skip-if-done.

The tiny preset is generated three times (seed 0 with 2 workers, seed 0 with 1
worker, seed 1 over a stale partial tree); tests that need espeak-ng skip when
it is not installed. Unit tests of the noise kinds, the sentence grammar and
the options run everywhere.
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pyroomacoustics.experimental import measure_rt60
from scipy.signal import welch

from custom_modules.audio.files import load_manifest, read_json
from data_prepare.demo import corpus as demo
from data_prepare.demo.noise import NOISE_KINDS, mix_babble, synthesize_noise
from data_prepare.demo.speech import EspeakNotFoundError, draw_voice_profiles
from data_prepare.demo.tasks import run_task
from data_prepare.demo.text import make_sentence, make_transcript

HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(
    not HAS_ESPEAK, reason="espeak-ng is not installed (apt-get install -y espeak-ng)"
)
TINY = demo.SIZES["tiny"]
NUM_SPEAKERS = TINY.train_speakers + TINY.dev_speakers + TINY.test_speakers

# Real layouts, relative to the output root.
DNS_SPEECH = re.compile(
    r"clean_train/read_speech/book_(\d{5})_chp_(\d{4})_reader_(\d{5})_(\d+)_seg_(\d+)\.wav"
)
LIBRI = re.compile(
    r"LibriSpeech/(train-clean-100|dev-clean|test-clean)/(\d+)/(\d+)/(\d+)-(\d+)-(\d{4})\.flac"
)
MUSAN = re.compile(r"musan/noise/(free-sound|sound-bible)/noise-\1-\d{4}\.wav")
SLR26 = re.compile(
    r"impulse_responses_all/SLR26/simulated_rirs_48k/smallroom/(Room\d{3})/\1-\d{5}\.wav"
)
SLR28 = re.compile(
    r"impulse_responses_all/SLR28/RIRS_NOISES/real_rirs_isotropic_noises/[\w-]+\.wav"
)


def audio_files(root: Path) -> list:
    return sorted(p for p in root.rglob("*") if p.suffix in (".wav", ".flac"))


def all_files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Tiny corpora: seed 0 (2 workers), seed 0 again (1 worker), seed 1 (over a stale tree)."""
    if not HAS_ESPEAK:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    base = tmp_path_factory.mktemp("demo")
    first = demo.generate_demo_corpus(base / "a", seed=0, size="tiny", num_workers=2)
    again = demo.generate_demo_corpus(
        base / "b", seed=0, size="tiny", num_workers=1, progress=False
    )
    # A partial tree left by an interrupted run: marker "in progress" and a stale file.
    other = base / "c"
    stale = other / "clean_train" / "read_speech" / "book_99999_chp_0001_reader_99999_0_seg_1.wav"
    stale.parent.mkdir(parents=True)
    sf.write(stale, np.full(1600, 0.1), 16000)
    (other / demo.IN_PROGRESS).write_text("{}")
    demo.generate_demo_corpus(other, seed=1, size="tiny", num_workers=2, progress=False)
    return {"first": first, "again": again, "other": other, "stale": stale}


@needs_espeak
def test_every_file_follows_a_real_layout(corpora):
    root = corpora["first"]
    patterns = (DNS_SPEECH, LIBRI, MUSAN, SLR26, SLR28)
    files = audio_files(root)
    unmatched = [
        p.relative_to(root).as_posix()
        for p in files
        if not any(pattern.fullmatch(p.relative_to(root).as_posix()) for pattern in patterns)
    ]
    assert not unmatched
    rels = [p.relative_to(root).as_posix() for p in files]
    per_speaker = NUM_SPEAKERS * TINY.utts_per_speaker
    assert sum(bool(DNS_SPEECH.fullmatch(r)) for r in rels) == per_speaker
    assert sum(bool(LIBRI.fullmatch(r)) for r in rels) == per_speaker
    assert sum(bool(MUSAN.fullmatch(r)) for r in rels) == TINY.noise_clips * len(NOISE_KINDS)
    assert sum(bool(SLR26.fullmatch(r)) for r in rels) == TINY.rirs
    assert sum(bool(SLR28.fullmatch(r)) for r in rels) == TINY.real_rirs
    assert (root / demo.MARKER).is_file() and not (root / demo.IN_PROGRESS).exists()


@needs_espeak
def test_librispeech_flac_and_transcripts_agree(corpora):
    root = corpora["first"] / "LibriSpeech"
    chapters = sorted({p.parent for p in root.rglob("*.flac")})
    assert len(chapters) == NUM_SPEAKERS * TINY.chapters_per_speaker
    for chapter_dir in chapters:
        speaker, chapter = chapter_dir.parent.name, chapter_dir.name
        transcripts = list(chapter_dir.glob("*.trans.txt"))
        assert [t.name for t in transcripts] == [f"{speaker}-{chapter}.trans.txt"]
        lines = transcripts[0].read_text().splitlines()
        ids = [line.split(" ", 1)[0] for line in lines]
        assert sorted(ids) == sorted(p.stem for p in chapter_dir.glob("*.flac"))
        for line in lines:
            utt_id, text = line.split(" ", 1)
            assert utt_id.startswith(f"{speaker}-{chapter}-")
            assert re.fullmatch(r"[A-Z']+( [A-Z']+){3,}", text), line


@needs_espeak
def test_speakers_are_distinct_voices_and_splits_disjoint(corpora):
    root = corpora["first"]
    by_split = {}
    for path in root.glob("LibriSpeech/*/*"):
        by_split.setdefault(path.parent.name, set()).add(path.name)
    assert len(by_split["train-clean-100"]) >= TINY.train_speakers
    assert len(by_split["dev-clean"]) >= TINY.dev_speakers
    assert len(by_split["test-clean"]) >= TINY.test_speakers
    train, dev, test = by_split["train-clean-100"], by_split["dev-clean"], by_split["test-clean"]
    assert not (train & dev or train & test or dev & test)
    # clean_train holds every voice (the DNS recipe splits it by reader id itself).
    readers = {
        str(int(DNS_SPEECH.fullmatch(p.relative_to(root).as_posix()).group(3)))
        for p in root.glob("clean_train/read_speech/*.wav")
    }
    assert readers == train | dev | test
    info = read_json(root / "demo_info.json")
    voices = [tuple(s["voice"][k] for k in ("base", "variant")) for s in info["speakers"].values()]
    assert len(set(voices)) == len(voices) == NUM_SPEAKERS
    babble = {(v["base"], v["variant"]) for v in info["babble_voices"]}
    assert not babble & set(voices)
    speakers_txt = (root / "LibriSpeech" / "SPEAKERS.TXT").read_text()
    assert all(f"\n{spk:<6}|" in speakers_txt for spk in train | dev | test)


@needs_espeak
def test_dns_wav_and_librispeech_flac_hold_the_same_recording(corpora):
    root = corpora["first"]
    wav = sorted(root.glob("clean_train/read_speech/book_00001_*.wav"))[0]
    reader = int(DNS_SPEECH.fullmatch(wav.relative_to(root).as_posix()).group(3))
    flac = sorted(root.glob(f"LibriSpeech/*/{reader}/{reader}00/{reader}-{reader}00-0000.flac"))
    assert len(flac) == 1
    np.testing.assert_array_equal(sf.read(wav)[0], sf.read(flac[0])[0])


@needs_espeak
def test_audio_is_16k_mono_not_silent_not_clipped(corpora):
    root = corpora["first"]
    for path in audio_files(root):
        rel = path.relative_to(root).as_posix()
        data, sr = sf.read(path, always_2d=True)
        if SLR26.fullmatch(rel):
            assert sr == 48000 and data.shape[1] == 1, rel  # like the real SLR26
        elif SLR28.fullmatch(rel):
            assert sr == 16000 and data.shape[1] == 2, rel  # two-microphone stand-in
        else:
            assert sr == 16000 and data.shape[1] == 1, rel
        assert np.all(np.isfinite(data))
        peak = np.abs(data).max()
        rms_db = 10 * np.log10(np.mean(data**2))
        assert peak < 0.99, f"{rel}: clipped (peak {peak})"
        assert rms_db > -50, f"{rel}: silent ({rms_db:.1f} dB)"
        if DNS_SPEECH.fullmatch(rel) or LIBRI.fullmatch(rel):
            assert 1.5 <= len(data) / sr <= 8.0, rel
        if MUSAN.fullmatch(rel):
            low, high = TINY.noise_seconds
            assert low - 0.01 <= len(data) / sr <= high + 0.01, rel


@needs_espeak
def test_every_noise_kind_is_present(corpora):
    root = corpora["first"]
    kinds = {}
    for annotations in root.glob("musan/noise/*/ANNOTATIONS"):
        for line in annotations.read_text().splitlines():
            name, kind = line.split()[:2]
            assert (annotations.parent / f"{name}.wav").is_file()
            kinds.setdefault(kind, []).append(name)
    assert sorted(kinds) == sorted(NOISE_KINDS)
    assert all(len(names) == TINY.noise_clips for names in kinds.values())
    sources = {p.parent.name for p in root.glob("musan/noise/*/*.wav")}
    assert sources == {"free-sound", "sound-bible"}


@needs_espeak
def test_rirs_have_recorded_rt60_in_range(corpora):
    root = corpora["first"]
    for folder in (
        root / "impulse_responses_all/SLR26/simulated_rirs_48k/smallroom",
        root / "impulse_responses_all/SLR28/RIRS_NOISES/real_rirs_isotropic_noises",
    ):
        info = read_json(folder / "rir_info.json")
        listed = (folder / "rir_list").read_text().splitlines()
        assert len(info) == len(listed) == len(list(folder.rglob("*.wav")))
        for rir_id, entry in info.items():
            assert any(line.startswith(f"--rir-id {rir_id} ") for line in listed)
            assert 0.2 <= entry["rt60_target"] <= 0.8
            data, sr = sf.read(folder / entry["path"], always_2d=True)
            assert sr == entry["sr"]
            # Measured again on the written file, independently of the sidecar value.
            rt60 = measure_rt60(data[:, 0], fs=sr, decay_db=30)
            assert abs(rt60 - entry["rt60_measured"]) < 0.02
            assert abs(rt60 / entry["rt60_target"] - 1) < 0.15, (rir_id, rt60, entry)


@needs_espeak
def test_same_seed_gives_identical_bytes_for_any_worker_count(corpora):
    first, again = all_files(corpora["first"]), all_files(corpora["again"])
    assert first.keys() == again.keys()
    different = [rel for rel in first if first[rel].read_bytes() != again[rel].read_bytes()]
    assert not different


@needs_espeak
def test_other_seed_gives_other_audio_and_partial_tree_is_regenerated(corpora):
    first, other = all_files(corpora["first"]), all_files(corpora["other"])
    assert not corpora["stale"].exists()  # the interrupted run's leftovers are gone
    assert (corpora["other"] / demo.MARKER).is_file()
    assert not (corpora["other"] / demo.IN_PROGRESS).exists()
    shared_audio = [rel for rel in first if rel in other and rel.endswith((".wav", ".flac"))]
    assert len(shared_audio) > 20  # same layout, same names ...
    same = [rel for rel in shared_audio if first[rel].read_bytes() == other[rel].read_bytes()]
    assert not same  # ... different content


@needs_espeak
def test_complete_tree_is_skipped(corpora, capsys):
    root = corpora["first"]
    before = {rel: p.stat().st_mtime_ns for rel, p in all_files(root).items()}
    assert demo.main(["--out", str(root), "--size", "tiny", "--seed", "0"]) == 0
    assert "skipping" in capsys.readouterr().out
    after = {rel: p.stat().st_mtime_ns for rel, p in all_files(root).items()}
    assert after == before


@needs_espeak
def test_data_preparation_reads_the_demo_tree(corpora, tmp_path):
    """The recipes' path: Helper C's prepare_dns / prepare_librispeech on the demo tree."""
    from data_prepare.dns import prepare_dns
    from data_prepare.librispeech import prepare_librispeech

    root = corpora["first"]
    manifests = prepare_dns(root, tmp_path / "dns", num_workers=2)
    speech = {}
    for split in ("train", "valid", "test"):
        speech.update(load_manifest(manifests[("speech", split)]))
    assert len(speech) == NUM_SPEAKERS * TINY.utts_per_speaker
    assert len({entry["speaker"] for entry in speech.values()}) == NUM_SPEAKERS
    rirs = {}
    for split in ("train", "valid", "test"):
        rirs.update(load_manifest(manifests[("rir", split)]))
    assert len(rirs) == TINY.rirs + TINY.real_rirs
    assert all(e["sr"] == 16000 and e["channels"] == 1 for e in rirs.values())
    assert any(e.get("orig_sr") == 48000 for e in rirs.values())  # SLR26 resampled once
    libri = prepare_librispeech(root, tmp_path / "libri", num_workers=2)
    speakers = {
        split: {e["speaker"] for e in load_manifest(libri[("speech", split)]).values()}
        for split in ("train", "valid", "test")
    }
    assert len(speakers["train"]) == TINY.train_speakers
    assert len(speakers["valid"]) == TINY.dev_speakers
    assert len(speakers["test"]) == TINY.test_speakers


def test_missing_espeak_gives_the_install_command(tmp_path):
    with pytest.raises(EspeakNotFoundError, match="apt-get install -y espeak-ng"):
        demo.generate_demo_corpus(
            tmp_path / "out", size="tiny", espeak_binary="no-such-espeak-binary"
        )
    assert not (tmp_path / "out").exists()


def test_failing_synthesizer_error_names_the_task_and_command(tmp_path):
    fake = tmp_path / "broken-espeak"
    fake.write_text("#!/bin/sh\necho 'voice not found' >&2\nexit 3\n")
    fake.chmod(0o755)
    profile = draw_voice_profiles(np.random.default_rng(0), 1)[0]
    task = {
        "id": "speech:9001-900100-0000",
        "kind": "speech",
        "seed": np.random.SeedSequence(0),
        "profile": profile.to_dict(),
        "text": "Hello there.",
        "paths": [str(tmp_path / "out.wav")],
        "sr": 16000,
        "espeak": str(fake),
    }
    with pytest.raises(RuntimeError, match=r"speech:9001-900100-0000 failed.*exit 3.*voice not"):
        run_task(task)
    assert not (tmp_path / "out.wav").exists()


def test_foreign_folder_is_refused_and_left_alone(tmp_path):
    if not HAS_ESPEAK:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    precious = tmp_path / "mine.txt"
    precious.write_text("user data")
    with pytest.raises(FileExistsError, match="not a demo corpus"):
        demo.generate_demo_corpus(tmp_path, size="tiny", progress=False)
    assert precious.read_text() == "user data"
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]


def test_size_presets_and_overrides_are_validated():
    assert demo.resolve_size("default").train_speakers >= 12  # the spec's minimum of voices
    assert demo.resolve_size("tiny", rirs=5).rirs == 5
    with pytest.raises(ValueError, match="unknown demo size"):
        demo.resolve_size("huge")
    with pytest.raises(ValueError, match="train_speakers"):
        demo.resolve_size("tiny", train_speakers=0)
    with pytest.raises(ValueError, match="chapters_per_speaker"):
        demo.resolve_size("tiny", utts_per_speaker=1)
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0


def _spectral_slope(x, sr=16000, band=(100.0, 4000.0)):
    """Slope of log10 PSD versus log10 frequency in ``band`` (0 white, -1 pink, -2 brown)."""
    freqs, psd = welch(x, fs=sr, nperseg=4096)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    return np.polyfit(np.log10(freqs[keep]), np.log10(psd[keep]), 1)[0]


def test_noise_kinds_have_their_spectral_signature():
    sr, n = 16000, 16000 * 8
    rng = np.random.default_rng(3)
    assert abs(_spectral_slope(synthesize_noise("white", n, rng))) < 0.15
    assert abs(_spectral_slope(synthesize_noise("pink", n, rng)) + 1) < 0.15
    assert abs(_spectral_slope(synthesize_noise("brown", n, rng)) + 2) < 0.2
    hum = synthesize_noise("hum", n, rng)
    freqs, psd = welch(hum, fs=sr, nperseg=16000)
    peaks = freqs[np.argsort(psd)[-3:]]
    fundamental = 50.0 if np.any(np.abs(peaks - 50) < 2) else 60.0
    assert np.all(np.abs(peaks / fundamental - np.round(peaks / fundamental)) < 0.05)
    clatter = synthesize_noise("clatter", n, rng)
    kurtosis = np.mean(clatter**4) / np.mean(clatter**2) ** 2
    assert kurtosis > 10  # impulsive (Gaussian noise: 3)
    traffic = synthesize_noise("traffic", n, rng)
    freqs, psd = welch(traffic, fs=sr, nperseg=4096)
    assert psd[freqs < 1000].sum() > 0.9 * psd.sum()  # mostly low-frequency rumble
    envelope = np.sqrt(np.mean(traffic[: n // 16000 * 16000].reshape(-1, 16000) ** 2, axis=1))
    assert envelope.max() / envelope.min() > 1.3  # slowly modulated, not stationary
    with pytest.raises(ValueError, match="unknown noise kind"):
        synthesize_noise("rain", n, rng)


def test_babble_sums_talkers_to_the_requested_length():
    rng = np.random.default_rng(0)
    talkers = [[rng.standard_normal(3000)] for _ in range(4)]
    babble = mix_babble(talkers, 16000, rng)
    assert babble.shape == (16000,)
    assert np.all(np.isfinite(babble)) and np.std(babble) > 0


def test_sentences_are_varied_and_transcripts_librispeech_style():
    rng = np.random.default_rng(0)
    sentences = [make_sentence(rng) for _ in range(300)]
    assert len(set(sentences)) > 280
    lengths = [len(s.split()) for s in sentences]
    assert 5 <= min(lengths) and max(lengths) <= 20
    words = {w for s in sentences for w in make_transcript(s).split()}
    assert len(words) > 250
    assert make_transcript("Please open the door, and count it!") == (
        "PLEASE OPEN THE DOOR AND COUNT IT"
    )
    again = [make_sentence(np.random.default_rng(0)) for _ in range(2)]
    assert again[0] == again[1] == sentences[0]


def test_voice_profiles_are_distinct_and_seeded():
    voices = draw_voice_profiles(np.random.default_rng(0), 40)
    assert len({(v.base, v.variant) for v in voices}) == 40
    assert len({v.variant for v in voices}) == 40  # timbres do not repeat while they last
    assert voices == draw_voice_profiles(np.random.default_rng(0), 40)
    assert voices != draw_voice_profiles(np.random.default_rng(1), 40)
