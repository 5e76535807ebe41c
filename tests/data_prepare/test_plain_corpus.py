"""The plain corpus layout (data_prepare.plain): splits, extra folders, generated material."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from custom_modules.audio.files import load_manifest
from data_prepare.plain import is_plain_root, prepare_plain

SR = 16000


def _write(path, seconds, rng, sr=SR, channels=1, kind="speech"):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sr)
    if kind == "rir":
        signal = rng.normal(size=n) * np.exp(-np.arange(n) / (0.05 * sr))
        signal[0] = 1.0
        signal *= 0.5
    else:
        signal = 0.1 * rng.normal(size=n)
    if channels > 1:
        signal = np.stack([signal] * channels, axis=1)
    sf.write(str(path), signal, sr)


@pytest.fixture
def plain_root(tmp_path):
    """10 speakers x 3 utterances, 6 noises (one 44.1 kHz stereo), 4 RIRs, an extra noise folder."""
    rng = np.random.default_rng(0)
    root = tmp_path / "corpus"
    for s in range(10):
        for u in range(3):
            _write(root / "speech" / f"spk{s:02d}" / "session" / f"u{u}.wav", 1.0, rng)
    for n in range(5):
        _write(root / "noise" / f"noise{n}.wav", 2.0, rng, kind="noise")
    _write(root / "noise" / "stereo_44k.flac", 2.0, rng, sr=44100, channels=2, kind="noise")
    for r in range(4):
        _write(root / "rir" / f"room{r}.wav", 0.3, rng, kind="rir")
    extra = tmp_path / "extra_noise"
    for n in range(3):
        _write(extra / "sub" / f"extra{n}.wav", 2.0, rng, kind="noise")
    return root, extra


def _manifests(save):
    return {
        (kind, split): load_manifest(save / f"{kind}_{split}.json")
        for kind in ("speech", "noise", "rir")
        for split in ("train", "valid", "test")
    }


def test_speaker_and_noise_disjoint_splits(plain_root, tmp_path):
    root, extra = plain_root
    save = tmp_path / "prep"
    prepare_plain(
        root, save, valid_ratio=0.2, test_ratio=0.2, extra_noise_folders=[extra],
        noise_valid_ratio=0.2, noise_test_ratio=0.3, num_workers=1,
    )  # fmt: skip
    manifests = _manifests(save)
    speakers = {
        split: {e["speaker"] for e in manifests["speech", split].values()}
        for split in ("train", "valid", "test")
    }
    assert speakers["train"] and speakers["valid"] and speakers["test"]
    assert not (speakers["train"] & speakers["valid"]) and not (
        speakers["train"] & speakers["test"]
    )
    assert not (speakers["valid"] & speakers["test"])
    noise_paths = {
        split: {e["path"] for e in manifests["noise", split].values()}
        for split in ("train", "valid", "test")
    }
    assert noise_paths["test"] and noise_paths["valid"]
    assert not (noise_paths["train"] & noise_paths["test"])
    # 9 noise files in all: the extra folder's are listed with absolute paths.
    assert sum(len(p) for p in noise_paths.values()) == 9
    extra_entries = [p for p in set().union(*noise_paths.values()) if p.startswith(str(extra))]
    assert len(extra_entries) == 3
    # The 44.1 kHz stereo noise was converted once into the save folder.
    converted = [
        e for m in (manifests["noise", s] for s in ("train", "valid", "test")) for e in m.values()
        if e.get("orig_sr") == 44100
    ]  # fmt: skip
    assert len(converted) == 1 and converted[0]["path"].startswith(str(save))
    assert sf.info(converted[0]["path"]).samplerate == SR


def test_patterns_hold_out_files_and_ratios_split_the_rest(plain_root, tmp_path):
    root, extra = plain_root
    save = tmp_path / "prep"
    prepare_plain(
        root, save, extra_noise_folders=[extra], test_patterns=["noise/noise0.wav", "rir/room*"],
        valid_patterns=["*/extra1.wav"], noise_valid_ratio=0.0, noise_test_ratio=0.0,
        rir_valid_ratio=0.0, rir_test_ratio=0.0, num_simulated_rirs=2, num_workers=1,
    )  # fmt: skip
    manifests = _manifests(save)
    assert [e["path"].split("/")[-1] for e in manifests["noise", "test"].values()] == ["noise0.wav"]
    assert [e["path"].split("/")[-1] for e in manifests["noise", "valid"].values()] == [
        "extra1.wav"
    ]
    assert len(manifests["rir", "test"]) == 4
    # Every real RIR is held out: training uses the simulated rooms only.
    assert all("simulated_rirs" in e["path"] for e in manifests["rir", "train"].values())
    assert len(manifests["rir", "train"]) == 2


def test_babble_speakers_are_never_targets(plain_root, tmp_path):
    root, _ = plain_root
    save = tmp_path / "prep"
    prepare_plain(
        root, save, babble_speaker_ratio=0.2, num_babble_files=3, babble_sec=2.0,
        babble_talkers=(2, 3), num_synthetic_noise_files=2, synthetic_noise_sec=1.0,
        num_workers=1,
    )  # fmt: skip
    manifests = _manifests(save)
    listed = {
        e["speaker"]
        for split in ("train", "valid", "test")
        for e in manifests["speech", split].values()
    }
    assert len(listed) == 8  # two of the ten speakers only make babble
    babble = [e for e in manifests["noise", "train"].values() if e["source"] == "generated/babble"]
    synthetic = [
        e
        for e in manifests["noise", "train"].values()
        if e["source"] == "generated/synthetic_noise"
    ]
    assert len(babble) == 3 and len(synthetic) == 2
    for entry in babble:
        samples, sr = sf.read(entry["path"])
        assert sr == SR and samples.size == 2 * SR
        assert 20 * np.log10(np.sqrt(np.mean(samples**2))) == pytest.approx(-25.0, abs=0.5)
    # Generated files never reach validation or test.
    for split in ("valid", "test"):
        assert all("generated" not in e["path"] for e in manifests["noise", split].values())


def test_second_call_is_skipped_and_generation_reused(plain_root, tmp_path, caplog):
    root, _ = plain_root
    save = tmp_path / "prep"
    options = dict(num_synthetic_noise_files=2, synthetic_noise_sec=1.0, num_workers=1)
    prepare_plain(root, save, **options)
    generated = save / "generated" / "synthetic_noise" / "synthetic_noise_0000.wav"
    mtime = generated.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        prepare_plain(root, save, **options)
    assert "skipping, already prepared" in caplog.text
    # Changing a split ratio redoes the manifests but keeps the generated files.
    prepare_plain(root, save, **options, noise_test_ratio=0.5)
    assert generated.stat().st_mtime_ns == mtime
    record = json.loads((save / "prep_options_plain.json").read_text())
    assert record["options"]["noise_test_ratio"] == 0.5


def test_manifest_tsv_overrides_the_speaker(plain_root, tmp_path):
    root, _ = plain_root
    lines = ["file\tspeaker"] + [
        f"speech/spk{s:02d}/session/u{u}.wav\t{'child' if s < 5 else 'adult'}"
        for s in range(10)
        for u in range(3)
    ]
    (root / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    save = tmp_path / "prep"
    prepare_plain(root, save, valid_ratio=0.0, test_ratio=0.5, num_workers=1)
    manifests = _manifests(save)
    assert {e["speaker"] for e in manifests["speech", "test"].values()} in ({"child"}, {"adult"})


def test_clear_errors(plain_root, tmp_path):
    root, _ = plain_root
    assert is_plain_root(root) and not is_plain_root(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a plain corpus root"):
        prepare_plain(tmp_path, tmp_path / "prep")
    (root / "speech" / "loose.wav").write_bytes((root / "noise" / "noise1.wav").read_bytes())
    with pytest.raises(ValueError, match="speaker folder"):
        prepare_plain(root, tmp_path / "prep", num_workers=1)
    (root / "speech" / "loose.wav").unlink()
    for path in (root / "noise").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="no training noise files"):
        prepare_plain(root, tmp_path / "prep", num_workers=1)
    with pytest.raises(ValueError, match="babble_speaker_ratio"):
        prepare_plain(
            root, tmp_path / "prep", num_babble_files=1, num_synthetic_noise_files=1, num_workers=1
        )
