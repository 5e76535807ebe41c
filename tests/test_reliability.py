"""Reliability: atomic checkpoints, self-healing data, one writer per run, no silent garbage.

Unit-size tests (seconds each) of docs/reliability.md; the kill -9 fault
injection and the recipe-level runs are in tests/test_reliability_faults.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from custom_modules.audio.files import AudioFileError, UnsafeIdError, check_safe_id, read_audio_info
from custom_modules.data.mixing import RandomMixtureSampler, write_fixed_set
from custom_modules.data.sampling import RirSampler, SignalSampler
from custom_modules.inference.run_loading import RunFolderError, load_run
from custom_modules.training.brain import RunningMeans
from custom_modules.training.checkpoints import (
    RECORD_FILE,
    AtomicCheckpointer,
    CheckpointError,
    checkpoint_problem,
)
from custom_modules.training.experiment import (
    ExperimentError,
    RunLockedError,
    acquire_run_lock,
    check_overrides,
)
from data_prepare.folder import main as folder_main
from data_prepare.folder import prepare_folder
from data_prepare.inspection import FileTask, inspect_file

REPO = Path(__file__).resolve().parents[1]
SR = 16000


# ---- atomic checkpoints ------------------------------------------------------------------------


def make_checkpointer(folder, **extra):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    recoverables = {"model": model, "optimizer": optimizer, **extra}
    return AtomicCheckpointer(folder, recoverables), model


def legacy_save(folder: Path, name: str, model, meta: dict, unixtime: float, files=("model",)):
    """A checkpoint as SpeechBrain 1.1.2 writes it (CKPT.yaml first, then the files)."""
    ckpt = folder / f"CKPT+{name}"
    ckpt.mkdir(parents=True)
    meta = {"unixtime": unixtime, "end-of-epoch": True, **meta}
    (ckpt / "CKPT.yaml").write_text("# yamllint disable\n" + yaml.dump(meta))
    if "model" in files:
        torch.save(model.state_dict(), ckpt / "model.ckpt")
    if "optimizer" in files:
        torch.save(torch.optim.Adam(model.parameters()).state_dict(), ckpt / "optimizer.ckpt")
    return ckpt


def test_save_is_complete_and_leaves_no_temporary(tmp_path):
    checkpointer, model = make_checkpointer(tmp_path)
    saved = checkpointer.save_checkpoint(meta={"stoi": 0.7})
    assert saved.path.name.startswith("CKPT+")
    assert sorted(p.name for p in tmp_path.iterdir()) == [saved.path.name]  # nothing hidden left
    record = json.loads((saved.path / RECORD_FILE).read_text())["files"]
    assert set(record) == {"model.ckpt", "optimizer.ckpt", "CKPT.yaml"}
    assert all(record[name] == (saved.path / name).stat().st_size for name in record)
    assert checkpoint_problem(saved.path, deep=True) is None
    with torch.no_grad():
        model.weight.zero_()
    assert checkpointer.recover_if_possible() == saved
    assert model.weight.abs().sum() > 0


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("only_meta", "no model.ckpt"),  # killed right after CKPT.yaml (SpeechBrain's order)
        ("empty_model", "model.ckpt is empty"),  # EOFError in torch.load
        ("cut_optimizer", "optimizer.ckpt: not a complete torch file"),  # zip archive cut
    ],
)
def test_interrupted_legacy_checkpoint_is_skipped_for_the_newest_complete(
    tmp_path, caplog, damage, reason
):
    checkpointer, model = make_checkpointer(tmp_path)
    with torch.no_grad():
        model.weight.fill_(1.0)
    good = legacy_save(tmp_path, "good", model, {}, 1.0, files=("model", "optimizer"))
    broken = legacy_save(tmp_path, "broken", model, {}, 2.0, files=("model", "optimizer"))
    if damage == "only_meta":
        (broken / "model.ckpt").unlink()
        (broken / "optimizer.ckpt").unlink()
    elif damage == "empty_model":
        (broken / "model.ckpt").write_bytes(b"")
    else:
        data = (broken / "optimizer.ckpt").read_bytes()
        (broken / "optimizer.ckpt").write_bytes(data[: len(data) // 2])
    with torch.no_grad():
        model.weight.zero_()
    with caplog.at_level(logging.WARNING, logger="custom_modules.training.checkpoints"):
        loaded = checkpointer.recover_if_possible()
    assert loaded.path == good
    assert float(model.weight.detach().mean()) == 1.0
    warnings = [r.getMessage() for r in caplog.records if "Skipping checkpoint" in r.getMessage()]
    assert len(warnings) == 1 and str(broken) in warnings[0] and reason in warnings[0]
    # Once per process: listing again does not repeat it.
    caplog.clear()
    checkpointer.list_checkpoints()
    assert not [r for r in caplog.records if "Skipping checkpoint" in r.getMessage()]


def test_a_damaged_file_of_a_complete_checkpoint_is_caught_before_loading(tmp_path, caplog):
    checkpointer, model = make_checkpointer(tmp_path)
    with torch.no_grad():
        model.weight.fill_(2.0)
    older = checkpointer.save_checkpoint(meta={"stoi": 0.5})
    newer = checkpointer.save_checkpoint(meta={"stoi": 0.9})
    # Same size, one byte flipped inside the weights: only the CRC check sees it.
    data = bytearray((newer.path / "model.ckpt").read_bytes())
    with zip_member_offset(newer.path / "model.ckpt") as offset:
        data[offset] ^= 0xFF
    (newer.path / "model.ckpt").write_bytes(bytes(data))
    assert checkpoint_problem(newer.path) is None  # sizes and zip directory intact
    assert "CRC" in checkpoint_problem(newer.path, deep=True)
    with torch.no_grad():
        model.weight.zero_()
    with caplog.at_level(logging.WARNING, logger="custom_modules.training.checkpoints"):
        assert checkpointer.recover_if_possible(max_key="stoi").path == older.path
    assert float(model.weight.detach().mean()) == 2.0
    assert any(str(newer.path) in r.getMessage() for r in caplog.records)
    # From then on it is left out of the listings (and of best-by-key choices).
    assert checkpointer.find_checkpoint(max_key="stoi").path == older.path


class zip_member_offset:
    """Offset of the first data byte of the weights member of a torch zip file."""

    def __init__(self, path):
        import zipfile

        with zipfile.ZipFile(path) as archive:
            info = next(i for i in archive.infolist() if "/data/" in i.filename)
        with open(path, "rb") as handle:
            handle.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(handle.read(4), dtype="<u2")
        self.offset = info.header_offset + 30 + int(name_len) + int(extra_len) + 1

    def __enter__(self):
        return self.offset

    def __exit__(self, *exc):
        return False


def test_size_record_catches_a_truncated_file_and_best_complete_is_used(tmp_path):
    checkpointer, _ = make_checkpointer(tmp_path)
    best = checkpointer.save_checkpoint(meta={"stoi": 0.9})
    second = checkpointer.save_checkpoint(meta={"stoi": 0.8})
    os.truncate(best.path / "optimizer.ckpt", 10)
    assert "optimizer.ckpt has 10 bytes" in checkpoint_problem(best.path)
    assert checkpointer.find_checkpoint(max_key="stoi").path == second.path


def test_stale_temporaries_are_removed_and_an_interrupted_replacement_restored(tmp_path):
    checkpointer, _ = make_checkpointer(tmp_path)
    kept = checkpointer.save_checkpoint(name="kept")
    (tmp_path / ".CKPT+killed.tmp").mkdir()
    (tmp_path / ".CKPT+killed.tmp" / "model.ckpt").write_bytes(b"PK\x03\x04half")
    (tmp_path / ".CKPT+gone.deleting").mkdir()
    os.rename(kept.path, tmp_path / ".CKPT+kept.old")  # killed between the two renames
    assert checkpointer.list_checkpoints() == []  # hidden folders are never checkpoints
    checkpointer.remove_stale_temporaries()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CKPT+kept"]
    # Saving a custom name again replaces the checkpoint atomically.
    again = checkpointer.save_checkpoint(name="kept", meta={"stoi": 1.0})
    assert again.path == kept.path and sorted(p.name for p in tmp_path.iterdir()) == ["CKPT+kept"]
    assert checkpointer.find_checkpoint(max_key="stoi").meta["stoi"] == 1.0


def test_first_save_of_a_process_removes_stale_temporaries(tmp_path):
    (tmp_path / ".CKPT+2026-01-01+00-00-00+00.tmp").mkdir(parents=True)
    checkpointer, _ = make_checkpointer(tmp_path)
    assert (tmp_path / ".CKPT+2026-01-01+00-00-00+00.tmp").is_dir()  # constructing writes nothing
    checkpointer.save_checkpoint()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_save_and_keep_only_and_intra_epoch_checkpoints_keep_working(tmp_path):
    checkpointer, _ = make_checkpointer(tmp_path)
    for step in range(3):  # as Brain._save_intra_epoch_ckpt
        checkpointer.save_and_keep_only(
            end_of_epoch=False,
            num_to_keep=1,
            ckpt_predicate=lambda c: "INTRA_EPOCH_CKPT_FLAG" in c.meta,
            meta={"INTRA_EPOCH_CKPT_FLAG": True, "step": step},
        )
    found = checkpointer.list_checkpoints()
    assert len(found) == 1 and found[0].meta["step"] == 2
    for stoi in (0.5, 0.9, 0.7):  # as EnhancementBrain.on_stage_end: recent + best kept
        checkpointer.save_and_keep_only(meta={"stoi": stoi}, max_keys=["stoi"])
    assert sorted(c.meta.get("stoi") for c in checkpointer.list_checkpoints()) == [0.7, 0.9]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_checkpoint_that_does_not_fit_the_model_is_an_error_naming_it(tmp_path):
    checkpointer, _ = make_checkpointer(tmp_path)
    saved = checkpointer.save_checkpoint()
    other = AtomicCheckpointer(tmp_path, {"model": torch.nn.Linear(5, 3)})
    with pytest.raises(CheckpointError, match=re.escape(f"{saved.path}: cannot load")):
        other.recover_if_possible()


def test_nothing_usable_starts_from_scratch_with_a_warning(tmp_path, caplog):
    checkpointer, model = make_checkpointer(tmp_path)
    legacy_save(tmp_path, "only_meta", model, {}, 1.0, files=())
    with caplog.at_level(logging.INFO, logger="custom_modules.training.checkpoints"):
        assert checkpointer.recover_if_possible() is None
    assert "no model.ckpt" in caplog.text


def write_run_folder(run: Path, checkpointer_class: str) -> Path:
    """A minimal run folder (hyperparams.yaml + save/) loadable by run_loading."""
    (run / "save").mkdir(parents=True)
    (run / "hyperparams.yaml").write_text(
        f"output_folder: {run}\n"
        "checkpoint_key: stoi\n"
        "model: !new:torch.nn.Linear\n    in_features: 4\n    out_features: 4\n"
        "modules:\n    model: !ref <model>\n"
        f"checkpointer: !new:{checkpointer_class}\n"
        f"    checkpoints_dir: {run}/save\n"
        "    recoverables:\n        model: !ref <model>\n"
    )
    return run / "save"


def test_load_run_uses_the_best_complete_checkpoint_of_an_old_run_folder(tmp_path, capsys):
    save = write_run_folder(tmp_path / "run", "speechbrain.utils.checkpoints.Checkpointer")
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.fill_(0.5)
    legacy_save(save, "complete", model, {"stoi": 0.6}, 1.0)
    broken = legacy_save(save, "best_but_cut", model, {"stoi": 0.9}, 2.0)
    (broken / "model.ckpt").write_bytes(b"")  # SpeechBrain killed while saving it
    loaded = load_run(tmp_path / "run")
    assert loaded.checkpoint.path.name == "CKPT+complete"
    assert float(loaded.model.weight.mean()) == 0.5
    # Only broken checkpoints: one clear error, not a traceback.
    (save / "CKPT+complete" / "model.ckpt").unlink()
    with pytest.raises(RunFolderError, match=r"no checkpoint .* skipped 2 incomplete: CKPT\+best"):
        load_run(tmp_path / "run")


def test_load_run_reports_a_broken_hyperparams_yaml(tmp_path):
    write_run_folder(tmp_path / "run", "custom_modules.training.checkpoints.AtomicCheckpointer")
    (tmp_path / "run" / "hyperparams.yaml").write_text("model: [unclosed\n")
    with pytest.raises(RunFolderError, match=r"hyperparams\.yaml: not valid YAML"):
        load_run(tmp_path / "run")


def test_running_means_resume_mid_epoch_but_not_after_an_epoch(tmp_path):
    means = RunningMeans()
    for value in (1.0, 2.0, 6.0):
        means.add("loss", value)
    path = tmp_path / "means.ckpt"
    means._save(path)
    resumed = RunningMeans()
    resumed._recover(path, end_of_epoch=False)
    resumed.add("loss", 3.0)
    assert resumed.means() == {"loss": 3.0}  # (1 + 2 + 6 + 3) / 4: the whole epoch
    fresh = RunningMeans()
    fresh.add("loss", 9.0)
    fresh._recover(path, end_of_epoch=True)
    assert fresh.means() == {}


# ---- overrides and the one-writer lock -----------------------------------------------------------


def test_override_types_are_checked_against_the_yaml(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text(
        "lr: 0.001\nbatch_size: 8\nuse_tb: True\nname: x\nmetrics: [a]\nout: !ref results/<name>\n"
    )
    assert check_overrides(path, "lr: 1e-4\nbatch_size: 2\nuse_tb: False\nmetrics: [a, b]") == {
        "lr": 1e-4,
        "batch_size": 2,
        "use_tb": False,
        "metrics": ["a", "b"],
    }
    cases = {
        "lr: abc": "override --lr abc: expected a number like the YAML's 0.001",
        "batch_size: two": "override --batch_size two: expected a number like the YAML's 8",
        "use_tb: yes please": "override --use_tb yes please: expected True or False",
        "lr: true": "override --lr True: expected a number",
        "nosuchkey: 1": "override --nosuchkey: no such key in",
    }
    for overrides, message in cases.items():
        with pytest.raises(ExperimentError, match=message):
            check_overrides(path, overrides)


LOCK_HOLDER = """
import sys, time
from custom_modules.training.experiment import acquire_run_lock
acquire_run_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_run_lock_one_writer_stale_pid_taken_over(tmp_path):
    folder = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunLockedError) as err:
            acquire_run_lock(folder)
        assert f"PID {holder.pid}" in str(err.value) and str(folder) in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # Killed: the kernel released its lock; the .lock file (dead PID) is taken over.
    assert (folder / ".lock").read_text().strip() == str(holder.pid)
    assert acquire_run_lock(folder) == folder / ".lock"
    assert (folder / ".lock").read_text().strip() == str(os.getpid())
    assert acquire_run_lock(folder) == folder / ".lock"  # idempotent in one process


def test_run_lock_reports_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExperimentError, match="not writable"):
        acquire_run_lock(blocker / "run")


# ---- self-healing data ---------------------------------------------------------------------------


def write_noise(path: Path, seconds=0.5, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds)), SR)
    return path


def test_signal_sampler_skips_a_vanished_file_logs_it_once_and_stays_deterministic(
    tmp_path, caplog
):
    paths = [str(write_noise(tmp_path / f"f{i}.wav", seed=i)) for i in range(10)]
    healthy = SignalSampler(paths, crop_size_sec=0.2, rng=3)
    expected = [healthy.sampler() for _ in range(30)]
    first = SignalSampler(paths, crop_size_sec=0.2, rng=3)
    second = SignalSampler(paths, crop_size_sec=0.2, rng=3)
    used = {s["path"] for _ in range(30) for s in first.sampler(return_info=True)[1]["segments"]}
    assert paths[4] in used
    os.remove(paths[4])
    first.reseed(3)
    with caplog.at_level(logging.WARNING, logger="custom_modules.data.sampling"):
        crops = [first.sampler() for _ in range(30)]
    assert all(c.shape == (int(0.2 * SR),) for c in crops)
    assert list(first.bad_files) == [paths[4]] and first.bad.draws >= 1
    skips = [r.getMessage() for r in caplog.records if "skipping bad file" in r.getMessage()]
    assert len(skips) == 1 and paths[4] in skips[0]
    # Deterministic with the bad file: a second sampler draws the same crops.
    for crop, again in zip(crops, (second.sampler() for _ in range(30)), strict=True):
        np.testing.assert_array_equal(crop, again)
    # Crops that did not touch the bad file are those of the healthy corpus.
    assert sum(np.array_equal(a, b) for a, b in zip(crops, expected, strict=True)) > 0


def test_too_many_bad_files_is_a_clear_error(tmp_path):
    paths = [str(write_noise(tmp_path / f"f{i}.wav", seed=i)) for i in range(10)]
    sampler = SignalSampler(paths, crop_size_sec=0.2, rng=0, max_bad_fraction=0.1)
    for path in paths[:3]:
        os.remove(path)
    with pytest.raises(AudioFileError, match=r"2 of 10 file\(s\) unusable.*max_bad_fraction"):
        for _ in range(500):
            sampler.sampler()


def test_rir_sampler_and_mixer_skip_a_vanished_rir(tmp_path, caplog):
    rirs = []
    for i in range(4):
        rir = np.exp(-np.arange(1600) / 200.0) * np.random.default_rng(i).standard_normal(1600)
        path = tmp_path / f"rir{i}.wav"
        sf.write(path, rir, SR, subtype="FLOAT")
        rirs.append(str(path))
    speech = [str(write_noise(tmp_path / f"s{i}.wav", seconds=1.0, seed=10 + i)) for i in range(3)]
    os.remove(rirs[1])
    sampler = RirSampler(rirs, rng=0, read_headers=False)
    with caplog.at_level(logging.WARNING, logger="custom_modules.data.sampling"):
        seen = {sampler.sampler(return_info=True)[1]["index"] for _ in range(40)}
    assert seen == {0, 2, 3} and list(sampler.bad_files) == [rirs[1]]
    mixer = RandomMixtureSampler(
        SignalSampler(speech, crop_size_sec=0.5),
        SignalSampler(speech, crop_size_sec=0.5),
        RirSampler(rirs, read_headers=False),
        prob_rir_sig=1.0,
        prob_rir_noise=1.0,
    )
    for index in range(20):
        mixer.reseed(index)
        mixture, target = mixer.sampler()
        assert np.all(np.isfinite(mixture)) and np.all(np.isfinite(target))
    assert list(mixer.rir_sampler.bad_files) == [rirs[1]]


def test_prep_redoes_itself_when_an_input_vanished_and_force_redoes(tmp_path, caplog):
    data = tmp_path / "noises"
    for i in range(6):
        write_noise(data / f"n{i}.wav", seed=i)
    save = tmp_path / "prep"

    def entries():
        return {
            key
            for split in ("train", "valid", "test")
            for key in json.loads((save / f"noise_{split}.json").read_text())
        }

    prepare_folder(data, save, kind="noise", num_workers=1)
    assert entries() == {f"n{i}" for i in range(6)}
    stamp = (save / "prep_options_folder_noise.json").stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="data_prepare.common")
    prepare_folder(data, save, kind="noise", num_workers=1)
    assert "skipping, already prepared" in caplog.text
    assert (save / "prep_options_folder_noise.json").stat().st_mtime_ns == stamp
    caplog.clear()
    (data / "n3.wav").unlink()
    prepare_folder(data, save, kind="noise", num_workers=1)
    assert "the input files changed (6 audio files then, 5 now" in caplog.text
    assert entries() == {f"n{i}" for i in range(6)} - {"n3"}
    caplog.clear()
    prepare_folder(data, save, kind="noise", num_workers=1, force=True)
    assert "preparing again (force)" in caplog.text
    # A converted copy in the save folder that vanished is redone too.
    write_noise(data / "n9.wav", seed=9)
    sf.write(data / "at48k.wav", np.full(4800, 0.1), 48000)
    prepare_folder(data, save, kind="noise", num_workers=1)
    (save / "resampled" / "at48k.wav").unlink()
    caplog.clear()
    prepare_folder(data, save, kind="noise", num_workers=1)
    assert "at48k.wav is missing" in caplog.text and (save / "resampled" / "at48k.wav").is_file()


def test_prep_cli_force_and_one_line_errors(tmp_path, capsys):
    data = tmp_path / "noises"
    for i in range(3):
        write_noise(data / f"n{i}.wav", seed=i)
    args = ["--data_folder", str(data), "--save_folder", str(tmp_path / "prep"), "--kind", "noise"]
    folder_main([*args, "--num_workers", "1"])
    folder_main([*args, "--num_workers", "1", "--force"])
    with pytest.raises(SystemExit) as exit_info:
        folder_main(["--data_folder", str(tmp_path / "missing"), *args[2:]])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: data folder not found" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        folder_main(["--data_folder", str(tmp_path / "missing"), *args[2:], "--verbose"])
    assert "Traceback" in capsys.readouterr().err


# ---- truncated WAVs -------------------------------------------------------------------------------


def truncated_wav(path: Path) -> Path:
    """3 s in the header, 0.06 s of samples (an interrupted copy)."""
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(3 * SR), SR, subtype="PCM_16")
    os.truncate(path, 44 + 2 * 960)
    return path


def test_truncated_wav_is_reported_by_enhance_and_by_prep(tmp_path):
    path = truncated_wav(tmp_path / "cut.wav")
    assert sf.info(str(path)).frames == 960  # what libsndfile quietly reports
    with pytest.raises(
        AudioFileError, match=r"cut\.wav: truncated: the header says 48000 frames, only 960"
    ):
        read_audio_info(path)
    from custom_modules.inference.enhance import enhance_file

    with pytest.raises(AudioFileError, match="header says 48000 frames, only 960"):
        enhance_file(lambda x: x, path, tmp_path / "out" / "cut.wav")
    assert not (tmp_path / "out" / "cut.wav").exists()
    task = FileTask(path=str(path), rel_path="cut.wav", save_root=str(tmp_path), sample_rate=SR)
    result = inspect_file(task)
    assert result.entry is None
    assert result.reason == "truncated: the header says 48000 frames, only 960 are readable"


# ---- ids that become file names -------------------------------------------------------------------


def test_safe_ids():
    for good in ("ex000001", "a.b", "r0_e1_00000003", "..x"):
        assert check_safe_id(good, "m.json") == good
    for bad in ("", "../x", "a/b", "/abs", "..", ".", "a\\b", "a\x00b"):
        with pytest.raises(UnsafeIdError, match="m.json: id"):
            check_safe_id(bad, "m.json")


def test_fixed_set_cleanup_refuses_an_id_leaving_the_folder(tmp_path):
    speech = [
        str(write_noise(tmp_path / "data" / f"s{i}.wav", seconds=1.0, seed=i)) for i in range(2)
    ]
    mixer = RandomMixtureSampler(
        SignalSampler(speech, crop_size_sec=0.3),
        SignalSampler(speech, crop_size_sec=0.3),
        None,
        prob_rir_sig=0.0,
        prob_rir_noise=0.0,
    )
    out = tmp_path / "run" / "prepared" / "fixed_valid"
    out.mkdir(parents=True)
    victim = tmp_path / "victim.wav"
    victim.write_bytes(b"precious")
    # The stale-file cleanup would delete out/mixture/<id>.wav = tmp_path/victim.wav.
    key = "../../../../victim"
    assert (out / "mixture" / f"{key}.wav").resolve() == victim.resolve()
    (out / "manifest.json").write_text(json.dumps({key: {}}))
    with pytest.raises(UnsafeIdError, match=rf"manifest\.json: id '{key}'"):
        write_fixed_set(mixer, out, num_examples=2, seed=0, progress=False)
    assert victim.read_bytes() == b"precious"


def test_test_report_writer_refuses_an_unsafe_dataset_id(tmp_path):
    from types import SimpleNamespace

    from custom_modules.training.brain import EnhancementBrain
    from custom_modules.training.reporting import ExampleChooser

    brain = EnhancementBrain.__new__(EnhancementBrain)
    brain.hparams = SimpleNamespace(test_report_folder=str(tmp_path / "report"), sample_rate=SR)
    brain.example_chooser = ExampleChooser(num_first=5, num_worst=5)
    signal = np.zeros(SR // 10)
    signals = {"mixture": signal, "target": signal, "estimate": signal}
    with pytest.raises(UnsafeIdError, match=r"test set: id '\.\./\.\./x'"):
        brain.take_examples(["../../x"], [signals])
    assert not (tmp_path / "x").exists()


# ---- finite output ---------------------------------------------------------------------------------


def reset(module):
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


def nan_model():
    from custom_modules.models.unet_tcm import ComplexSpectralMapping, UNetEngine

    torch.manual_seed(0)
    engine = UNetEngine(
        num_freqs=161, num_layers=3, channels=6, bottleneck_dim=12, tcm_hidden=5,
        tcm_dilations=(1, 2),
    )  # fmt: skip
    with torch.no_grad():
        next(engine.parameters()).fill_(float("nan"))  # a diverged checkpoint
    return ComplexSpectralMapping(engine).eval()


@pytest.mark.parametrize("backend", ["eager", "onnx", "native"])
@pytest.mark.parametrize("output", ["wav", "pcm"])
def test_streaming_cli_stops_on_non_finite_output(tmp_path, monkeypatch, capsys, backend, output):
    import custom_modules.streaming.__main__ as cli
    from custom_modules.streaming import StreamingEnhancer

    if backend == "native" and shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler for the native backend")
    enhancer = StreamingEnhancer.from_model(nan_model(), backend=backend)
    monkeypatch.setattr(cli, "build_enhancer", lambda args: enhancer)
    source = tmp_path / "in.wav"
    sf.write(source, 0.1 * np.random.default_rng(1).standard_normal(SR // 2), SR)
    target = tmp_path / "out.wav"
    stdout = io.BytesIO()
    argv = [
        "--run",
        "unused",
        "--input",
        str(source),
        "--output",
        "-" if output == "pcm" else str(target),
    ]
    assert cli.main(argv, stdout=stdout) == 1
    err = capsys.readouterr().err
    assert "error: the model output is not finite (NaN or Inf) in chunk 0" in err
    assert not target.exists() and not list(tmp_path.glob(".out*"))
    assert stdout.getvalue() == b""  # nothing written on stdout either


def test_streaming_cli_onnx_file_of_a_diverged_model_and_huge_input(tmp_path, capsys):
    from custom_modules.streaming.__main__ import main
    from custom_modules.streaming.onnx_step import export_model

    model_path = tmp_path / "nan.onnx"
    model_path.write_bytes(export_model(nan_model()))
    source = tmp_path / "in.wav"
    sf.write(source, np.full(SR // 4, 0.1, dtype=np.float32), SR, subtype="FLOAT")
    target = tmp_path / "out.wav"
    assert main(["--onnx", str(model_path), "--input", str(source), "--output", str(target)]) == 1
    assert "not finite" in capsys.readouterr().err and not target.exists()
    # A healthy model (running level, as the recipe's) fed an input at 1e30 amplitude.
    from custom_modules.models.unet_tcm import ComplexSpectralMapping

    healthy = ComplexSpectralMapping(nan_model().engine.apply(reset), level_normalization=True)
    assert all(bool(torch.isfinite(p).all()) for p in healthy.parameters())
    model_path.write_bytes(export_model(healthy.eval()))
    sf.write(source, np.full(SR // 4, 1e30, dtype=np.float32), SR, subtype="FLOAT")
    with np.errstate(all="ignore"):
        code = main(["--onnx", str(model_path), "--input", str(source), "--output", str(target)])
    assert code == 1 and "not finite" in capsys.readouterr().err and not target.exists()
    # --threads 0 and an unwritable output: errors before any model is loaded.
    with pytest.raises(SystemExit):
        main(
            ["--onnx", "x.onnx", "--input", str(source), "--output", str(target), "--threads", "0"]
        )
    assert "--threads must be at least 1" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    bad_output = str(tmp_path / "file" / "out.wav")
    assert main(["--onnx", "missing.onnx", "--input", str(source), "--output", bad_output]) == 1
    assert "cannot write there" in capsys.readouterr().err


def test_enhance_cli_checks_the_output_folder_before_loading(tmp_path, capsys):
    from custom_modules.inference.enhance import main

    source = write_noise(tmp_path / "in.wav")
    (tmp_path / "file").write_text("")
    code = main(
        [
            "--run",
            str(tmp_path / "no_run"),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "file" / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "output folder not writable" in err and "no_run" not in err
