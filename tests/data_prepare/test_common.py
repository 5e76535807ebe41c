"""Manifest preparation: shared machinery, DNS layouts, plain folders, skip-if-done.

Every corpus tree is generated here at test time (tiny files, 0.2-0.6 s):
a 48 kHz file, a stereo file, a corrupt header, empty files, a NaN file, a
silent file, and exponentially decaying noise RIRs with a known RT60.
"""

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from custom_modules.audio.files import load_manifest, read_json
from data_prepare import common
from data_prepare.common import make_id, speaker_from_name, split_by_group, unique_ids
from data_prepare.dns import prepare_dns
from data_prepare.folder import prepare_folder

SPLITS = ("train", "valid", "test")


class Tree:
    """Writes small audio files under ``root`` (deterministic content)."""

    def __init__(self, root: Path, seed: int = 0):
        self.root = Path(root)
        self.rng = np.random.default_rng(seed)

    def path(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def noise(self, rel, sr=16000, seconds=0.3, channels=1, subtype="PCM_16"):
        data = 0.1 * self.rng.standard_normal((int(sr * seconds), channels))
        sf.write(self.path(rel), data, sr, subtype=subtype)
        return data

    def rir(self, rel, rt60, sr=16000, channels=1):
        """Exponentially decaying noise: energy falls 60 dB in ``rt60`` seconds."""
        t = np.arange(int(sr * 1.2 * rt60)) / sr
        tail = self.rng.standard_normal((len(t), channels)) * 10 ** (-3 * t / rt60)[:, None]
        data = np.concatenate([np.zeros((int(0.002 * sr), channels)), tail])
        sf.write(self.path(rel), 0.5 * data / np.abs(data).max(), sr, subtype="FLOAT")

    def bad_files(self, folder: str) -> dict:
        """One file of each bad kind in ``folder``; returns rel path -> reason keyword."""
        good = self.path(f"{folder}/tmp_good.wav")
        sf.write(good, np.full(800, 0.1), 16000)
        header = good.read_bytes()
        good.unlink()
        self.path(f"{folder}/corrupt_header.wav").write_bytes(b"RIFX" + header[4:40] + b"\x00" * 8)
        self.path(f"{folder}/empty_bytes.wav").write_bytes(b"")
        sf.write(self.path(f"{folder}/zero_frames.wav"), np.zeros(0), 16000)
        nan = np.full(800, 0.1)
        nan[400] = np.nan
        sf.write(self.path(f"{folder}/has_nan.wav"), nan, 16000, subtype="FLOAT")
        sf.write(self.path(f"{folder}/all_silent.wav"), np.zeros(800), 16000)
        return {
            f"{folder}/corrupt_header.wav": "unreadable header",
            f"{folder}/empty_bytes.wav": "unreadable header",
            f"{folder}/zero_frames.wav": "zero length",
            f"{folder}/has_nan.wav": "non-finite",
            f"{folder}/all_silent.wav": "silent",
        }


def all_entries(manifests: dict, kind: str) -> dict:
    entries = {}
    for split in SPLITS:
        manifest = read_json(manifests[kind, split])
        assert not set(manifest) & set(entries), "an id is in two splits"
        entries.update(manifest)
    return entries


def read_report(path: Path) -> dict:
    lines = path.read_text().splitlines()
    assert lines[0] == "path\treason"
    return dict(line.split("\t") for line in lines[1:])


READERS = ("01326", "00002", "00003", "00004", "00005", "00006", "00007", "00008")
RIR_RT60 = {"smallroom": 0.25, "mediumroom": 0.5}


def build_dns_style(root: Path) -> dict:
    """DNS-style root; returns what the tests check against."""
    tree = Tree(root)
    speech = []
    for reader in READERS:
        for seg in range(3):
            rel = f"clean_train/read_speech/book_00007_chp_0008_reader_{reader}_64_seg_{seg}.wav"
            # One 48 kHz original per reader, as in the DNS 48 kHz release.
            tree.noise(rel, sr=48000 if seg == 0 else 16000, seconds=0.3 if seg else 0.5)
            speech.append(rel)
    tree.noise("clean_train/emotional_speech/angry_0001.wav")
    speech.append("clean_train/emotional_speech/angry_0001.wav")
    noise = []
    for source in ("free-sound", "sound-bible", "other-source"):
        for k in range(3):
            rel = f"musan/noise/{source}/noise-{source}-{k:04d}.wav"
            tree.noise(rel, channels=2 if (source, k) == ("free-sound", 0) else 1)
            noise.append(rel)
    rirs = {}
    for size, rt60 in RIR_RT60.items():
        for room in range(3):
            for k in range(2):
                rel = (
                    f"impulse_responses_all/SLR26/simulated_rirs_48k/{size}/"
                    f"Room{room:03d}/Room{room:03d}-{k:05d}.wav"
                )
                tree.rir(rel, rt60, sr=48000)
                rirs[rel] = rt60
    real = "impulse_responses_all/SLR28/RIRS_NOISES/real_rirs_isotropic_noises"
    tree.rir(f"{real}/RVB2014_type1_rir_largeroom1_near_angla.wav", 0.7, channels=4)
    rirs[f"{real}/RVB2014_type1_rir_largeroom1_near_angla.wav"] = 0.7
    tree.noise(f"{real}/RVB2014_type1_noise_largeroom1_1.wav", channels=4)
    bad = tree.bad_files("clean_train/read_speech")
    bad.update(tree.bad_files("musan/noise/sound-bible"))
    return {"speech": speech, "noise": noise, "rir": rirs, "bad": bad}


@pytest.fixture(scope="module")
def dns_style(tmp_path_factory):
    root = tmp_path_factory.mktemp("dns_style")
    expected = build_dns_style(root / "data")
    save = root / "save"
    manifests = prepare_dns(root / "data", save, num_workers=2)
    return {"data": root / "data", "save": save, "manifests": manifests, **expected}


# ---------------------------------------------------------------- small units


def test_ids_follow_relative_path_and_stay_unique():
    assert make_id("a/b/c.flac") == "a_b_c"
    ids = unique_ids(["a/b_c.wav", "a_b/c.wav", "a/b_c.flac", "x/y.wav"])
    assert len(set(ids.values())) == 4
    assert ids["x/y.wav"] == "x_y"
    assert {ids["a/b_c.flac"], ids["a/b_c.wav"], ids["a_b/c.wav"]} == {
        "a_b_c",
        "a_b_c__2",
        "a_b_c__3",
    }


def test_speaker_from_dns_and_librispeech_names():
    assert speaker_from_name("book_00007_chp_0008_reader_01326_64_seg_2.wav") == "01326"
    assert speaker_from_name("1089-134686-0000.flac") == "1089"
    assert speaker_from_name("noise-free-sound-0001.wav") is None


def test_split_is_deterministic_group_disjoint_and_order_free():
    rng = np.random.default_rng(5)
    groups = {f"utt{i:03d}": f"spk{rng.integers(20)}" for i in range(200)}
    splits = split_by_group(groups, 0.1, 0.2, seed=3)
    shuffled = dict(sorted(groups.items(), key=lambda item: rng.random()))
    assert split_by_group(shuffled, 0.1, 0.2, seed=3) == splits
    assert split_by_group(groups, 0.1, 0.2, seed=4) != splits
    split_of_group = {}
    for key, split in splits.items():
        assert split_of_group.setdefault(groups[key], split) == split
    n_groups = len(set(groups.values()))
    counts = {s: sum(v == s for v in split_of_group.values()) for s in SPLITS}
    assert counts["valid"] == round(0.1 * n_groups) and counts["test"] == round(0.2 * n_groups)


def test_split_keeps_train_non_empty_and_rejects_bad_ratios():
    assert set(split_by_group({"a": "a", "b": "b"}, 0.1, 0.1, seed=0).values()) == {
        "train",
        "test",
    }
    assert split_by_group({"a": "a"}, 0.5, 0.3, seed=0) == {"a": "train"}
    with pytest.raises(ValueError, match="sum below 1"):
        split_by_group({"a": "a"}, 0.6, 0.5, seed=0)


# ------------------------------------------------------------ DNS-style root


def test_dns_style_manifests_hold_exactly_the_good_files(dns_style):
    manifests = dns_style["manifests"]
    assert set(manifests) == {(k, s) for k in ("speech", "noise", "rir") for s in SPLITS}
    for kind in ("speech", "noise", "rir"):
        entries = all_entries(manifests, kind)
        expected_ids = {make_id(rel) for rel in dns_style[kind]}
        assert set(entries) == expected_ids, kind
        for entry in entries.values():
            assert entry["sr"] == 16000 and entry["channels"] == 1 and entry["duration"] > 0
    report = read_report(dns_style["save"] / "bad_files_dns.tsv")
    expected = {str(dns_style["data"] / rel): why for rel, why in dns_style["bad"].items()}
    assert set(report) == set(expected)
    for path, reason in report.items():
        assert reason.startswith(expected[path]), (path, reason)


def test_dns_style_48k_speech_is_resampled_once_into_save_folder(dns_style):
    entries = all_entries(dns_style["manifests"], "speech")
    rel = "clean_train/read_speech/book_00007_chp_0008_reader_01326_64_seg_0.wav"
    entry = entries[make_id(rel)]
    assert entry["path"] == "{save_root}/resampled/" + rel
    assert (entry["orig_sr"], entry["orig_channels"]) == (48000, 1)
    info = sf.info(dns_style["save"] / "resampled" / rel)
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)
    assert entry["duration"] == pytest.approx(0.5)
    untouched = entries[make_id(rel.replace("seg_0", "seg_1"))]
    assert untouched["path"] == "{data_root}/" + rel.replace("seg_0", "seg_1")
    assert "orig_sr" not in untouched


def test_dns_style_stereo_noise_keeps_channel_0(dns_style):
    rel = "musan/noise/free-sound/noise-free-sound-0000.wav"
    entry = all_entries(dns_style["manifests"], "noise")[make_id(rel)]
    assert entry["path"] == "{save_root}/resampled/" + rel and entry["orig_channels"] == 2
    original, _ = sf.read(dns_style["data"] / rel, dtype="int16")
    copy, sr = sf.read(dns_style["save"] / "resampled" / rel, dtype="int16")
    assert sr == 16000 and copy.ndim == 1
    np.testing.assert_array_equal(copy, original[:, 0])
    assert not np.array_equal(copy, original[:, 1])


def test_dns_style_speakers_sources_and_speaker_disjoint_splits(dns_style):
    speakers = {}
    for split in SPLITS:
        for entry in read_json(dns_style["manifests"]["speech", split]).values():
            if "speaker" in entry:
                speakers.setdefault(entry["speaker"], set()).add(split)
    assert set(speakers) == set(READERS)
    assert all(len(splits) == 1 for splits in speakers.values())
    assert {s for found in speakers.values() for s in found} == set(SPLITS)
    noise = all_entries(dns_style["manifests"], "noise")
    assert {e["source"] for e in noise.values()} == {
        "musan/noise/free-sound",
        "musan/noise/sound-bible",
        "musan/noise/other-source",
    }
    speech = all_entries(dns_style["manifests"], "speech")
    emotional = speech[make_id("clean_train/emotional_speech/angry_0001.wav")]
    assert emotional["source"] == "clean_train/emotional_speech" and "speaker" not in emotional


def test_dns_style_rirs_have_plausible_rt60_and_rooms_stay_in_one_split(dns_style):
    manifests = dns_style["manifests"]
    entries = all_entries(manifests, "rir")
    for rel, rt60 in dns_style["rir"].items():
        entry = entries[make_id(rel)]
        assert entry["rt60"] == pytest.approx(rt60, rel=0.25), rel
    real = entries[make_id(next(r for r in dns_style["rir"] if "SLR28" in r))]
    assert real["source"] == "SLR28/real_rirs" and real["orig_channels"] == 4
    copy, _ = sf.read(dns_style["save"] / real["path"].removeprefix("{save_root}/"))
    assert sf.info(dns_style["save"] / real["path"].removeprefix("{save_root}/")).subtype == "FLOAT"
    assert copy.ndim == 1
    split_of_room = {}
    for split in SPLITS:
        for key, entry in read_json(manifests["rir", split]).items():
            if entry["source"].startswith("SLR26"):
                room = key.rsplit("_", 1)[0]
                assert split_of_room.setdefault(room, split) == split


def test_dns_style_paths_resolve_with_load_manifest(dns_style):
    for (kind, split), path in dns_style["manifests"].items():
        # data_root comes from the recorded options; save_root is the manifest folder.
        for entry in load_manifest(path).values():
            assert "{" not in entry["path"]
            assert Path(entry["path"]).is_file(), (kind, split, entry["path"])
            assert sf.info(entry["path"]).samplerate == 16000


def test_dns_style_skip_if_done_then_redo_on_option_change(dns_style, caplog):
    manifests = dns_style["manifests"]
    stamps = {path: path.stat().st_mtime_ns for path in manifests.values()}
    with caplog.at_level("INFO"):
        again = prepare_dns(dns_style["data"], dns_style["save"], num_workers=2)
    assert again == manifests and "already prepared" in caplog.text
    assert {path: path.stat().st_mtime_ns for path in manifests.values()} == stamps
    # skip_prep: nothing read, nothing written, even for a missing data folder.
    assert prepare_dns("/nonexistent", dns_style["save"], skip_prep=True) == manifests


# ------------------------------------------------------ original DNS layout


def test_original_dns_layout(tmp_path):
    tree = Tree(tmp_path / "DNS")
    for reader in ("00011", "00012", "00013"):
        for k in range(2):
            tree.noise(f"datasets/clean/book_{k}_reader_{reader}_seg_{k}.wav", sr=48000)
    for k in range(4):
        tree.noise(f"datasets/noise/door_{k}.wav", sr=48000)
    tree.rir("datasets/impulse_responses/SLR26/simulated_rirs_48k/largeroom/Room001/a.wav", 0.6)
    tree.rir("datasets/impulse_responses/SLR26/simulated_rirs_48k/largeroom/Room002/b.wav", 0.6)
    manifests = prepare_dns(tmp_path / "DNS", tmp_path / "save", valid_ratio=0, test_ratio=0.3)
    speech = all_entries(manifests, "speech")
    assert len(speech) == 6 and {e["orig_sr"] for e in speech.values()} == {48000}
    assert {e["speaker"] for e in speech.values()} == {"00011", "00012", "00013"}
    assert read_json(manifests["speech", "valid"]) == {}
    assert len({e["speaker"] for e in read_json(manifests["speech", "test"]).values()}) == 1
    noise = all_entries(manifests, "noise")
    assert len(noise) == 4 and {e["source"] for e in noise.values()} == {"datasets/noise"}
    rirs = all_entries(manifests, "rir")
    assert {e["source"] for e in rirs.values()} == {"SLR26/largeroom"}
    assert all(e["rt60"] == pytest.approx(0.6, rel=0.25) for e in rirs.values())
    assert read_report(tmp_path / "save" / "bad_files_dns.tsv") == {}


def test_dns_missing_or_empty_folders_fail_at_once_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="not_there"):
        prepare_dns(tmp_path / "not_there", tmp_path / "save")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"clean_train.*datasets/clean"):
        prepare_dns(tmp_path / "empty", tmp_path / "save")
    tree = Tree(tmp_path / "partial")
    tree.noise("clean_train/read_speech/a_reader_00001.wav")
    with pytest.raises(FileNotFoundError, match=r"musan/noise"):
        prepare_dns(tmp_path / "partial", tmp_path / "save")
    manifests = prepare_dns(tmp_path / "partial", tmp_path / "save", kinds=("speech",))
    assert set(manifests) == {("speech", s) for s in SPLITS}
    (tmp_path / "partial" / "musan" / "noise" / "free-sound").mkdir(parents=True)
    (tmp_path / "partial" / "musan" / "noise" / "ANNOTATIONS").write_text("x")
    with pytest.raises(ValueError, match=r"no audio files .*musan/noise"):
        prepare_dns(tmp_path / "partial", tmp_path / "save", kinds=("speech", "noise"))
    assert not (tmp_path / "save" / "noise_train.json").exists()


# ------------------------------------------------------------- plain folder


def test_folder_of_rirs_and_skip_redo_cycle(tmp_path):
    tree = Tree(tmp_path / "my_rirs")
    for k, rt60 in enumerate((0.2, 0.35, 0.5, 0.8)):
        tree.rir(f"room{k}/rir.wav", rt60, sr=48000 if k == 3 else 16000)
    anechoic = np.zeros(4000)
    anechoic[40] = 0.8
    sf.write(tree.path("anechoic/delta.wav"), anechoic, 16000, subtype="FLOAT")
    bad = tree.bad_files("broken")
    save = tmp_path / "my_rirs" / "prep"  # inside the data folder: must not be scanned
    prepare = functools.partial(
        prepare_folder, tmp_path / "my_rirs", save, kind="rir", valid_ratio=0.25, test_ratio=0.25
    )
    manifests = prepare(num_workers=1)
    entries = all_entries(manifests, "rir")
    assert set(entries) == {f"room{k}_rir" for k in range(4)} | {"anechoic_delta"}
    # Readable but without a measurable decay: kept, RT60 unknown and why.
    assert entries["anechoic_delta"]["rt60"] is None
    assert "decay" in entries["anechoic_delta"]["rt60_error"]
    for k, rt60 in enumerate((0.2, 0.35, 0.5, 0.8)):
        assert entries[f"room{k}_rir"]["rt60"] == pytest.approx(rt60, rel=0.25)
        assert entries[f"room{k}_rir"]["source"] == f"my_rirs/room{k}"
    assert [len(read_json(manifests["rir", s])) for s in SPLITS] == [3, 1, 1]
    assert set(read_report(save / "bad_files_folder_rir.tsv")) == {
        str(tmp_path / "my_rirs" / rel) for rel in bad
    }
    copy = save / "resampled" / "room3" / "rir.wav"
    assert sf.info(copy).subtype == "FLOAT"
    copy_stamp = copy.stat().st_mtime_ns

    stamps = {p: p.stat().st_mtime_ns for p in manifests.values()}
    prepare(num_workers=1)
    assert {p: p.stat().st_mtime_ns for p in manifests.values()} == stamps
    # Another seed: redone (new options recorded), without the save folder's
    # copies, and the still-valid resampled copy is reused, not rewritten.
    redo = prepare(seed=7, num_workers=1)
    assert read_json(save / "prep_options_folder_rir.json")["options"]["seed"] == 7
    assert set(all_entries(redo, "rir")) == set(entries)
    assert copy.stat().st_mtime_ns == copy_stamp
    # A manifest changed by someone else (e.g. another corpus into the same folder): redone.
    redo["rir", "train"].write_text("{}\n")
    prepare(seed=7, num_workers=1)
    assert len(read_json(redo["rir", "train"])) == 3
    # Another target rate: the copy is redone at that rate.
    at_8k = all_entries(prepare(seed=7, sample_rate=8000, num_workers=1), "rir")
    assert sf.info(copy).samplerate == 8000 and at_8k["room3_rir"]["sr"] == 8000
    assert at_8k["room3_rir"]["rt60"] == pytest.approx(0.8, rel=0.25)


def test_pool_and_serial_give_identical_manifests(tmp_path):
    tree = Tree(tmp_path / "voices")
    for spk in range(6):
        for utt in range(3):
            tree.noise(f"{spk}/{spk}-10-{utt:04d}.flac", sr=16000 if utt else 22050, seconds=0.2)
    serial = prepare_folder(tmp_path / "voices", tmp_path / "a", num_workers=1)
    pooled = prepare_folder(tmp_path / "voices", tmp_path / "b", num_workers=2)
    for key in serial:
        assert serial[key].read_text() == pooled[key].read_text()
    entries = all_entries(serial, "speech")
    assert len(entries) == 18 and {e["speaker"] for e in entries.values()} == {
        str(s) for s in range(6)
    }
    resampled = entries["0_0-10-0000"]
    assert (
        resampled["path"] == "{save_root}/resampled/0/0-10-0000.flac"
        and resampled["orig_sr"] == 22050
    )
    assert sf.info(tmp_path / "a" / "resampled" / "0" / "0-10-0000.flac").samplerate == 16000


def test_interrupted_redo_is_not_mistaken_for_done(tmp_path, monkeypatch):
    tree = Tree(tmp_path / "noises")
    for k in range(5):
        tree.noise(f"n{k}.wav")
    save = tmp_path / "save"
    prepare_folder(tmp_path / "noises", save, kind="noise", num_workers=1)
    calls = []

    def interrupted_write(path, obj):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, obj)

    real_write = common.atomic_write_json
    monkeypatch.setattr(common, "atomic_write_json", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(tmp_path / "noises", save, kind="noise", seed=9, num_workers=1)
    monkeypatch.undo()
    assert not (save / "prep_options_folder_noise.json").exists()
    assert not [p for p in os.listdir(save) if p.endswith(".tmp")]
    manifests = prepare_folder(tmp_path / "noises", save, kind="noise", seed=9, num_workers=1)
    record = json.loads((save / "prep_options_folder_noise.json").read_text())
    assert record["options"]["seed"] == 9 and record["summary"] == {"ok": 5, "skipped": 0}
    assert len(all_entries(manifests, "noise")) == 5


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        prepare_folder(tmp_path / "missing_dir", tmp_path / "save")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.txt").write_text("no audio")
    with pytest.raises(ValueError, match="texts"):
        prepare_folder(tmp_path / "texts", tmp_path / "save", kind="noise")
    with pytest.raises(ValueError, match="kind="):
        prepare_folder(tmp_path / "texts", tmp_path / "save", kind="music")


def test_all_bad_files_fail_with_the_report_and_save_folder_must_differ(tmp_path):
    bad = Tree(tmp_path / "broken").bad_files("sub")
    with pytest.raises(ValueError, match=r"no usable noise file .*bad_files_folder_noise\.tsv"):
        prepare_folder(tmp_path / "broken", tmp_path / "save", kind="noise", num_workers=1)
    report = read_report(tmp_path / "save" / "bad_files_folder_noise.tsv")
    assert set(report) == {str(tmp_path / "broken" / rel) for rel in bad}
    assert not (tmp_path / "save" / "noise_train.json").exists()
    with pytest.raises(ValueError, match="must differ"):
        prepare_folder(tmp_path / "broken", tmp_path / "broken", kind="noise")


def test_resampling_keeps_the_band_and_removes_what_would_alias(tmp_path):
    t = np.arange(24000) / 48000
    tones = 0.4 * np.sin(2 * np.pi * 1000 * t) + 0.4 * np.sin(2 * np.pi * 12000 * t)
    sf.write(Path(Tree(tmp_path / "hi").path("tones.wav")), tones, 48000, subtype="PCM_16")
    prepare_folder(tmp_path / "hi", tmp_path / "save", kind="noise", valid_ratio=0, test_ratio=0)
    copy, sr = sf.read(tmp_path / "save" / "resampled" / "tones.wav")
    assert sr == 16000 and len(copy) == 8000
    spectrum = np.abs(np.fft.rfft(copy[2000:6000] * np.hanning(4000))) / (
        np.hanning(4000).sum() / 2
    )
    # 1 kHz kept at 0.4; 12 kHz (above 8 kHz Nyquist) not folded to 4 kHz.
    assert spectrum[250] == pytest.approx(0.4, rel=0.02)
    assert spectrum[1000] < 0.4 * 10 ** (-40 / 20)
