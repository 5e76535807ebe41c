"""Tests of custom_modules.data.datasets: CustomDirDataset and triplet_dataset."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from custom_modules.audio.files import atomic_write_json, load_manifest
from custom_modules.audio.loudness import integrated_loudness
from custom_modules.data.datasets import CustomDirDataset, load_resampled, triplet_dataset
from custom_modules.data.librispeech_mixtures import write_triplets
from custom_modules.data.triplets import TripletMaker

SR = 16000


def tone(seconds, freq=440.0, sr=SR, amplitude=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_custom_dir(folder, ids=("a", "b"), targets=True, ref_sr=SR):
    for sub in ("mix", "refs") + (("targets",) if targets else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(ids):
        sf.write(str(folder / "mix" / f"{key}-mixed.wav"), tone(0.5 + 0.1 * i), SR)
        sf.write(str(folder / "refs" / f"{key}-ref.wav"), tone(0.3, 220, sr=ref_sr), ref_sr)
        if targets:
            sf.write(str(folder / "targets" / f"{key}-target.wav"), tone(0.5 + 0.1 * i, 330), SR)
    return folder


def test_custom_dir_reads_and_resamples(tmp_path):
    folder = make_custom_dir(tmp_path, ids=("utt-1", "utt_2"), ref_sr=8000)
    data = CustomDirDataset(folder)
    items = {item["id"]: item for item in data}
    assert sorted(items) == ["utt-1", "utt_2"]  # IDs may contain hyphens
    item = items["utt_2"]
    assert sorted(item) == ["id", "mix", "ref", "target"]
    assert item["mix"].dtype == torch.float32 and item["mix"].shape == (int(0.6 * SR),)
    np.testing.assert_allclose(item["target"].numpy(), tone(0.6, 330), atol=1e-4)
    # The 8 kHz reference comes out at 16 kHz: twice the samples, same 220 Hz tone.
    ref = item["ref"].numpy()
    assert ref.shape == (int(0.3 * SR),)
    peak_bin = np.argmax(np.abs(np.fft.rfft(ref)))
    assert peak_bin * SR / ref.size == pytest.approx(220, abs=5)
    assert data.data["utt_2"]["duration"] == pytest.approx(0.6)
    at_8k = CustomDirDataset(folder, sr=8000)[0]
    assert at_8k["mix"].shape == (int(0.5 * 8000),)


def test_custom_dir_without_targets_and_renamed_keys(tmp_path):
    folder = make_custom_dir(tmp_path, targets=False)
    (folder / "mix" / "notes.txt").write_text("ignored")
    (folder / "mix" / ".hidden-mixed.wav").write_bytes(b"")
    sf.write(str(folder / "mix" / "c-mixed.flac"), tone(0.2), SR)
    sf.write(str(folder / "refs" / "c-ref.flac"), tone(0.2), SR)
    data = CustomDirDataset(folder, keys={"mix": "mixture", "ref": "reference"})
    assert len(data) == 3
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=PaddedBatch)
    batch = next(iter(loader))
    assert sorted(batch.id) == ["a", "b", "c"]
    assert batch.mixture.data.shape == (3, int(0.6 * SR))
    assert not hasattr(batch, "target")


def test_custom_dir_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CustomDirDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no mixtures found"):
        CustomDirDataset(tmp_path / "empty")
    folder = make_custom_dir(tmp_path / "d", ids=("a", "b", "c"))
    (folder / "refs" / "b-ref.wav").unlink()
    (folder / "targets" / "c-target.wav").unlink()
    (folder / "mix" / "a-mixed.wav").write_bytes(b"not a wav file")
    with pytest.raises(ValueError, match="3 problem") as error:
        CustomDirDataset(folder)
    message = str(error.value)
    assert "refs/b-ref.wav missing" in message
    assert "targets/c-target.wav missing" in message
    assert "a-mixed.wav: unreadable audio header" in message
    # Two files for one ID (wav and flac) is ambiguous.
    other = make_custom_dir(tmp_path / "e", ids=("x",))
    sf.write(str(other / "mix" / "x-mixed.flac"), tone(0.1), SR)
    with pytest.raises(ValueError, match="two files for ID 'x'"):
        CustomDirDataset(other)


def test_custom_dir_warns_about_orphans(tmp_path, caplog):
    folder = make_custom_dir(tmp_path)
    sf.write(str(folder / "refs" / "zz-ref.wav"), tone(0.1), SR)
    data = CustomDirDataset(folder)
    assert len(data) == 2
    assert "without a mixture" in caplog.text and "zz" in caplog.text


def test_load_resampled_keeps_channel_zero(tmp_path):
    stereo = np.stack([tone(0.1, 440), tone(0.1, 880)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo, SR)
    np.testing.assert_allclose(
        load_resampled(tmp_path / "s.wav", SR).numpy(), stereo[:, 0], atol=1e-4
    )


@pytest.fixture
def written_set(tmp_path):
    """A small triplet set written by write_triplets from voiced tones of 3 speakers."""
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(6):
        speaker = "ABC"[i // 2]
        path = tmp_path / "src" / f"{speaker}{i}.wav"
        path.parent.mkdir(exist_ok=True)
        signal = tone(0.8, freq=rng.uniform(100, 300), amplitude=rng.uniform(0.05, 0.3))
        sf.write(str(path), signal * (1 + 0.5 * np.sin(np.arange(signal.size) / 900)), SR)
        entries[f"{speaker}{i}"] = {
            "path": str(path),
            "duration": 0.8,
            "sr": SR,
            "speaker": speaker,
        }
    atomic_write_json(tmp_path / "speech.json", entries)
    maker = TripletMaker.from_manifests(tmp_path / "speech.json")
    return write_triplets(maker, tmp_path / "set", 5, seed=2, progress=False)


def test_triplet_dataset_over_written_set(written_set):
    manifest = load_manifest(written_set)
    data = triplet_dataset(written_set, speakers=["B", "A"])
    assert len(data) == 5
    for item in data:
        entry = manifest[item["id"]]
        assert set(item) == {"id", "mix", "ref", "target", "target_speaker", "speaker_index"}
        np.testing.assert_array_equal(
            item["mix"].numpy(), sf.read(entry["mix"], dtype="float32")[0]
        )
        assert item["target_speaker"] == entry["target_speaker"]
        assert item["speaker_index"] == {"B": 0, "A": 1}.get(entry["target_speaker"], -1)
        # mix - target is the interferer, at -20 LUFS (TIR 0 dB).
        interferer = (item["mix"] - item["target"]).numpy()
        assert integrated_loudness(interferer, SR) == pytest.approx(-20.0, abs=0.01)
    default = triplet_dataset(written_set)
    speakers = sorted({e["target_speaker"] for e in manifest.values()})
    assert [default[i]["speaker_index"] for i in range(5)] == [
        speakers.index(manifest[default[i]["id"]]["target_speaker"]) for i in range(5)
    ]
    renamed = triplet_dataset(written_set, keys={"mix": "mixture", "ref": "reference"})
    batch = PaddedBatch([renamed[0], renamed[1]])
    assert batch.mixture.data.shape[0] == 2 and batch.speaker_index.dtype == torch.int64
    with pytest.raises(ValueError, match="unknown outputs"):
        triplet_dataset(written_set, keys={"mixture": "x"})


def test_written_set_is_a_custom_dir(written_set):
    # The writer's layout is the custom-directory layout: same IDs, same samples.
    custom = CustomDirDataset(written_set.parent)
    written = triplet_dataset(written_set)
    by_id = {item["id"]: item for item in written}
    assert sorted(by_id) == sorted(item["id"] for item in custom)
    for item in custom:
        for key in ("mix", "ref", "target"):
            assert torch.equal(item[key], by_id[item["id"]][key])


def test_triplet_dataset_errors(tmp_path, written_set):
    entries = json.loads(written_set.read_text())
    first = next(iter(entries))
    del entries[first]["ref"]
    atomic_write_json(tmp_path / "set" / "broken.json", entries)
    with pytest.raises(ValueError, match=f"{first}' has no ref"):
        triplet_dataset(tmp_path / "set" / "broken.json")
    atomic_write_json(tmp_path / "set" / "empty.json", {})
    with pytest.raises(ValueError, match="empty triplet manifest"):
        triplet_dataset(tmp_path / "set" / "empty.json")
