"""Shared file helpers: atomic writes, manifests, checked audio reading."""

import json
import os
import stat

import numpy as np
import pytest
import soundfile as sf

from custom_modules.audio.files import (
    AudioFileError,
    atomic_write_json,
    load_manifest,
    read_audio,
    write_audio,
)


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {"a": 1})
        write_audio(tmp_path / "a.wav", np.zeros(10), 16000)
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes["m.json"] == modes["a.wav"] == modes["plain.txt"] == 0o644


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"old": True})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})  # not JSON-serialisable
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_load_manifest_resolves_both_roots(tmp_path):
    entry = {"path": "{data_root}/a.wav", "copy": "{save_root}/b.wav", "duration": 1.0}
    atomic_write_json(tmp_path / "speech_train.json", {"a": entry})
    resolved = load_manifest(tmp_path / "speech_train.json", data_root="/corpus")
    assert resolved["a"]["path"] == "/corpus/a.wav"
    assert resolved["a"]["copy"] == f"{tmp_path}/b.wav"
    assert resolved["a"]["duration"] == 1.0


def test_read_audio_errors_name_the_file(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.full((100, 2), 0.25), 8000)
    samples, sr = read_audio(good)
    assert sr == 8000 and samples.shape == (100,) and samples.dtype == np.float32
    with pytest.raises(AudioFileError, match="good.wav: sample rate 8000 Hz, expected 16000"):
        read_audio(good, expected_sr=16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioFileError, match="broken.wav: unreadable audio header"):
        read_audio(broken)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2]), 16000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="nan.wav: contains NaN or Inf"):
        read_audio(nan)
