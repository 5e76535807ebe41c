"""Manifest preparation of MUSAN, LibriSpeech and SLR26/SLR28 RIR trees, and the CLIs.

Trees are generated at test time with tiny files.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from custom_modules.audio.files import load_manifest, read_json
from data_prepare.folder import prepare_folder
from data_prepare.librispeech import prepare_librispeech
from data_prepare.musan import prepare_musan
from data_prepare.rirs import prepare_rirs

SPLITS = ("train", "valid", "test")
REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data, sr=16000, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)


def noise(rng, seconds=0.2, sr=16000, channels=1):
    return 0.1 * rng.standard_normal((int(seconds * sr), channels))


def decaying_rir(rng, rt60, sr=16000, channels=1):
    t = np.arange(int(1.2 * rt60 * sr)) / sr
    return 0.5 * rng.standard_normal((len(t), channels)) * 10 ** (-3 * t / rt60)[:, None]


def entries_by_split(manifests, kind):
    return {split: read_json(manifests[kind, split]) for split in SPLITS}


# --------------------------------------------------------------------- MUSAN


@pytest.fixture
def musan_tree(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "corpora" / "musan"
    for category, sources in {
        "noise": ("free-sound", "sound-bible"),
        "music": ("fma",),
        "speech": ("librivox",),
    }.items():
        for source in sources:
            for k in range(4):
                write(root / category / source / f"{category}-{source}-{k:04d}.wav", noise(rng))
            (root / category / source / "ANNOTATIONS").write_text("id\tlabel\n")
            (root / category / source / "LICENSE").write_text("CC\n")
    write(root / "noise" / "free-sound" / "noise-free-sound-0099.wav", np.zeros(1600))
    return tmp_path / "corpora"


def test_musan_noise_only_by_default_with_sources_and_bad_file(musan_tree, tmp_path):
    manifests = prepare_musan(musan_tree, tmp_path / "save", num_workers=2)
    assert set(manifests) == {("noise", s) for s in SPLITS}
    entries = {
        k: v for split in entries_by_split(manifests, "noise").values() for k, v in split.items()
    }
    assert len(entries) == 8
    assert {e["source"] for e in entries.values()} == {
        "musan/noise/free-sound",
        "musan/noise/sound-bible",
    }
    assert all(e["path"].startswith("{data_root}/musan/noise/") for e in entries.values())
    report = (tmp_path / "save" / "bad_files_musan.tsv").read_text().splitlines()
    assert len(report) == 2 and report[1].endswith(
        "noise-free-sound-0099.wav\tsilent (all samples of channel 0 are zero)"
    )


def test_musan_all_categories_from_the_musan_folder_itself(musan_tree, tmp_path):
    manifests = prepare_musan(
        musan_tree / "musan",
        tmp_path / "save",
        categories=("speech", "music", "noise"),
        num_workers=1,
    )
    entries = {
        k: v for split in entries_by_split(manifests, "noise").values() for k, v in split.items()
    }
    assert len(entries) == 16
    assert {e["source"] for e in entries.values()} >= {"musan/music/fma", "musan/speech/librivox"}
    assert "music_fma_music-fma-0000" in entries  # ids relative to the given folder
    with pytest.raises(ValueError, match="categories"):
        prepare_musan(musan_tree, tmp_path / "save", categories=("babble",))
    with pytest.raises(FileNotFoundError, match=r"no MUSAN corpus in .*save"):
        prepare_musan(tmp_path / "save", tmp_path / "save2")


# ---------------------------------------------------------------- LibriSpeech


def build_librispeech(root: Path, layout: dict, rng) -> dict:
    """``layout``: split -> speakers; 2 chapters x 2 utterances each. Returns id -> words."""
    words = {}
    for split, speakers in layout.items():
        for speaker in speakers:
            for chapter in (100 + speaker, 200 + speaker):
                folder = root / "LibriSpeech" / split / str(speaker) / str(chapter)
                lines = []
                for utt in range(2):
                    utt_id = f"{speaker}-{chapter}-{utt:04d}"
                    write(
                        folder / f"{utt_id}.flac", noise(rng, seconds=0.25)[:, 0], subtype="PCM_16"
                    )
                    lines.append(f"{utt_id} HELLO WORLD {utt_id}")
                    words[f"LibriSpeech_{split}_{speaker}_{chapter}_{utt_id}"] = lines[-1].split(
                        " ", 1
                    )[1]
                (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return words


def speakers_per_split(manifests):
    return {
        split: {e["speaker"] for e in entries.values()}
        for split, entries in entries_by_split(manifests, "speech").items()
    }


def test_librispeech_official_splits_map_and_stay_speaker_disjoint(tmp_path):
    layout = {"train-clean-100": (19, 26, 27), "dev-clean": (84, 174), "test-clean": (61,)}
    words = build_librispeech(tmp_path / "data", layout, np.random.default_rng(2))
    manifests = prepare_librispeech(tmp_path / "data", tmp_path / "save", num_workers=2)
    speakers = speakers_per_split(manifests)
    assert speakers == {"train": {"19", "26", "27"}, "valid": {"84", "174"}, "test": {"61"}}
    entries = {
        k: v for split in entries_by_split(manifests, "speech").values() for k, v in split.items()
    }
    assert set(entries) == set(words)
    for key, entry in entries.items():
        assert entry["words"] == words[key]
        assert entry["chapter"] in (
            str(100 + int(entry["speaker"])),
            str(200 + int(entry["speaker"])),
        )
        assert entry["path"].endswith(".flac") and entry["path"].startswith(
            "{data_root}/LibriSpeech/"
        )
    resolved = load_manifest(manifests["speech", "test"])
    assert all(Path(e["path"]).is_file() for e in resolved.values())


def test_librispeech_train_only_is_split_by_speaker(tmp_path):
    speakers = tuple(range(1, 21))
    build_librispeech(tmp_path / "data", {"train-clean-100": speakers}, np.random.default_rng(3))
    manifests = prepare_librispeech(
        tmp_path / "data" / "LibriSpeech",
        tmp_path / "save",
        splits=("train-clean-100",),
        valid_ratio=0.1,
        test_ratio=0.2,
        num_workers=1,
    )
    found = speakers_per_split(manifests)
    assert [len(found[s]) for s in SPLITS] == [14, 2, 4]
    assert not (
        found["train"] & found["valid"]
        or found["train"] & found["test"]
        or found["valid"] & found["test"]
    )
    assert set().union(*found.values()) == {str(s) for s in speakers}


def test_librispeech_shared_speaker_or_missing_split_fails_clearly(tmp_path):
    rng = np.random.default_rng(4)
    build_librispeech(tmp_path / "data", {"train-clean-100": (7, 8), "dev-clean": (8,)}, rng)
    with pytest.raises(ValueError, match=r"share speakers \['8'\]"):
        prepare_librispeech(
            tmp_path / "data", tmp_path / "save", splits=("train-clean-100", "dev-clean")
        )
    with pytest.raises(FileNotFoundError, match="test-clean"):
        prepare_librispeech(tmp_path / "data", tmp_path / "save")
    with pytest.raises(ValueError, match="train-"):
        prepare_librispeech(tmp_path / "data", tmp_path / "save", splits=("dev-clean",))


# ---------------------------------------------------------------------- RIRs


def test_rirs_from_a_rirs_noises_folder(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "RIRS_NOISES"
    for room in range(4):
        write(
            root / "simulated_rirs" / "smallroom" / f"Room{room:03d}" / "Room-00001.wav",
            decaying_rir(rng, 0.3)[:, 0],
            subtype="FLOAT",
        )
    real = root / "real_rirs_isotropic_noises"
    write(
        real / "air_type1_air_binaural_stairway_1_1_90.wav",
        decaying_rir(rng, 0.6, channels=2),
        subtype="FLOAT",
    )
    write(real / "RVB2014_type1_noise_largeroom1_1.wav", noise(rng, channels=2))
    write(root / "pointsource_noises" / "noise-free-sound-0001.wav", noise(rng))
    manifests = prepare_rirs(root, tmp_path / "save", num_workers=2)
    splits = entries_by_split(manifests, "rir")
    entries = {k: v for split in splits.values() for k, v in split.items()}
    assert set(entries) == {
        f"simulated_rirs_smallroom_Room{r:03d}_Room-00001" for r in range(4)
    } | {"real_rirs_isotropic_noises_air_type1_air_binaural_stairway_1_1_90"}
    for key, entry in entries.items():
        expected = 0.6 if key.startswith("real") else 0.3
        assert entry["rt60"] == pytest.approx(expected, rel=0.25), key
    assert {e["source"] for e in entries.values()} == {"SLR28/smallroom", "SLR28/real_rirs"}
    assert all(len(s) >= 1 for s in splits.values())


def test_rirs_missing_layout_lists_what_was_looked_for(tmp_path):
    write(tmp_path / "data" / "some.wav", noise(np.random.default_rng(6)))
    with pytest.raises(
        FileNotFoundError, match=r"impulse_responses_all.*datasets/impulse_responses"
    ):
        prepare_rirs(tmp_path / "data", tmp_path / "save")


# ----------------------------------------------------------------------- CLIs


@pytest.mark.parametrize("module", ["dns", "musan", "rirs", "librispeech", "folder"])
def test_cli_help(module):
    result = subprocess.run(
        [sys.executable, "-m", f"data_prepare.{module}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--data_folder" in result.stdout and "--save_folder" in result.stdout


def test_cli_run_writes_manifests(musan_tree, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prepare.musan",
            "--data_folder",
            str(musan_tree),
            "--save_folder",
            str(tmp_path / "cli"),
            "--categories",
            "noise",
            "music",
            "--valid_ratio",
            "0.2",
            "--num_workers",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "12 files ok, 1 skipped" in result.stderr
    entries = {}
    for split in SPLITS:
        entries.update(read_json(tmp_path / "cli" / f"noise_{split}.json"))
        assert f"noise\t{split}\t{tmp_path / 'cli' / f'noise_{split}.json'}" in result.stdout
    assert len(entries) == 12
    options = read_json(tmp_path / "cli" / "prep_options_musan.json")["options"]
    assert options["valid_ratio"] == 0.2 and options["categories"] == ["noise", "music"]


# ---------------------------------------------------------------- real audio


@pytest.mark.real_audio
def test_real_recordings_pass_the_checks_with_their_durations(real_audio_dir, tmp_path):
    expected = {}
    for line in (real_audio_dir / "MANIFEST.tsv").read_text().splitlines()[1:]:
        fields = line.split("\t")
        expected[fields[0]] = float(fields[4])
    for kind in ("speech", "noise", "rir"):
        manifests = prepare_folder(real_audio_dir / kind, tmp_path / "save", kind=kind)
        entries = {}
        for split in SPLITS:
            entries.update(load_manifest(manifests[kind, split]))
        names = {f"{kind}/{Path(e['path']).name}": e for e in entries.values()}
        assert set(names) == {name for name in expected if name.startswith(f"{kind}/")}
        for name, entry in names.items():
            assert entry["duration"] == pytest.approx(expected[name], abs=1e-3), name
            assert Path(entry["path"]).parent == (real_audio_dir / kind).resolve()  # untouched
    # The loop ended on the RIRs: every one has an RT60 estimate or a reason why not.
    assert all(e["rt60"] is not None or e["rt60_error"] for e in entries.values())
    measured = [e["rt60"] for e in entries.values() if e["rt60"] is not None]
    assert len(measured) >= 3 and all(0.03 < rt60 < 2.0 for rt60 in measured)
