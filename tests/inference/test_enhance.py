"""Tests of the inference CLI: custom_modules.inference.enhance, .chunked_audio and .run_loading.

A run folder is built at test time the way ``recipes/unet_tcm/train.py``
leaves it: ``hyperparams.yaml`` resolved from the recipe's ``unet_cpu.yaml``
(with a tiny engine, and the relative ``output_folder`` recorded by training)
and SpeechBrain checkpoints with different metrics and weights.
"""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from scipy.signal import resample_poly

from custom_modules.audio.files import AudioFileError
from custom_modules.inference.chunked_audio import ResampledReader, enhance_in_chunks
from custom_modules.inference.enhance import (
    PEAK_LIMIT,
    RECEPTIVE_MARGIN_SEC,
    check_waveform_model,
    enhance_file,
    list_jobs,
    main,
    model_memory_seconds,
    model_processor,
)
from custom_modules.inference.run_loading import RunFolderError, load_run

REPO = Path(__file__).resolve().parents[2]
RECIPE_YAML = REPO / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"
# Tiny engine (temporal receptive field 6 frames = 60 ms): fast enough for a 10-minute file.
TINY_ENGINE = {
    "num_layers": 1,
    "channels": 2,
    "bottleneck_dim": 4,
    "tcm_hidden": 2,
    "tcm_kernel": 3,
    "tcm_dilations": [1, 2],
}
SR = 16000


def tone_and_noise(num_samples, sr, seed, amplitude=0.3):
    """Deterministic test signal: a 220 Hz harmonic tone plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sr
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in (1, 2, 3))
    signal = 0.5 * tone / 1.83 + 0.2 * rng.standard_normal(num_samples)
    return (amplitude * signal).astype(np.float32)


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def make_run_folder(run: Path, metas, recipe_yaml=RECIPE_YAML, overrides=None) -> list:
    """Write hyperparams.yaml + one checkpoint per meta (weights perturbed each time).

    ``recipe_yaml`` and ``overrides`` default to ``unet_cpu.yaml`` with the tiny engine.
    Returns the model state dict saved with each checkpoint.
    """
    overrides = {"data_folder": "/nonexistent/demo", **(overrides or {"engine": TINY_ENGINE})}
    with open(recipe_yaml, encoding="utf-8") as handle:
        text = resolve_references(handle, overrides).getvalue()
    assert "output_folder: results/" in text  # relative path, as recorded by training
    run.mkdir(parents=True)
    (run / "hyperparams.yaml").write_text(text, encoding="utf-8")
    with torch.random.fork_rng(devices=[]), open(recipe_yaml, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, {**overrides, "output_folder": str(run)})
    generator = torch.Generator().manual_seed(0)
    states = []
    for meta in metas:
        with torch.no_grad():
            for param in hparams["model"].parameters():
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
        states.append({k: v.clone() for k, v in hparams["model"].state_dict().items()})
        hparams["checkpointer"].save_checkpoint(meta=meta, end_of_epoch=bool(meta))
    return states


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """Run with checkpoints: best stoi first, best si_snr second, intra-epoch (no metric) last."""
    run = tmp_path_factory.mktemp("runs") / "unet_tiny"
    metas = [{"stoi": 0.91, "si_snr": 4.0}, {"stoi": 0.62, "si_snr": 7.5}, {}]
    states = make_run_folder(run, metas)
    return run, states


@pytest.fixture(scope="module")
def loaded(run_folder):
    return load_run(run_folder[0])


def cli(run, source, output, *options):
    """Run the command line in-process; returns its exit status."""
    return main(["--run", str(run), "--input", str(source), "--output", str(output), *options])


def write(path, samples, sr, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr, subtype=subtype)
    return path


# ---- run loading ---------------------------------------------------------------


def test_load_run_picks_best_checkpoint_and_writes_nothing(run_folder, tmp_path, monkeypatch):
    run, states = run_folder
    before = snapshot(run)
    rng_before = torch.random.get_rng_state()
    monkeypatch.chdir(tmp_path)  # the recorded output_folder is relative to the training cwd

    best_stoi = load_run(run)
    assert best_stoi.checkpoint.meta["stoi"] == pytest.approx(0.91)
    assert best_stoi.sample_rate == SR and not best_stoi.model.training
    for key, value in best_stoi.model.state_dict().items():
        assert torch.equal(value, states[0][key]), key
    assert "stoi=0.91" in best_stoi.describe()

    best_snr = load_run(run, checkpoint_key="si_snr")
    assert best_snr.checkpoint.meta["si_snr"] == pytest.approx(7.5)
    weight = next(iter(states[1]))
    assert torch.equal(best_snr.model.state_dict()[weight], states[1][weight])
    assert not torch.equal(states[0][weight], states[1][weight])

    assert snapshot(run) == before
    assert list(tmp_path.iterdir()) == []
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_load_run_errors_name_what_was_found(run_folder, tmp_path):
    with pytest.raises(RunFolderError, match="run folder not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty_run" / "save").mkdir(parents=True)
    with pytest.raises(RunFolderError, match=r"no hyperparams.yaml .*\['save'\]"):
        load_run(tmp_path / "empty_run")

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    text = (run_folder[0] / "hyperparams.yaml").read_text(encoding="utf-8")
    (no_ckpt / "hyperparams.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(RunFolderError, match="checkpoint folder .*save not found"):
        load_run(no_ckpt)
    assert not (no_ckpt / "save").exists()  # loading did not create it
    (no_ckpt / "save").mkdir()
    with pytest.raises(RunFolderError, match=r"no checkpoint \(CKPT"):
        load_run(no_ckpt)

    with pytest.raises(RunFolderError, match=r"no checkpoint recorded 'pesq'; found 3: CKPT\+"):
        load_run(run_folder[0], checkpoint_key="pesq")


def test_a_run_of_the_older_module_layout_says_so(run_folder, tmp_path):
    old = tmp_path / "old_layout"
    shutil.copytree(run_folder[0], old)
    path = old / "hyperparams.yaml"
    text = path.read_text(encoding="utf-8")
    assert "custom_modules.training." in text
    # The flat layout of before: custom_modules.<module>.<Class>.
    path.write_text(text.replace("custom_modules.training.", "custom_modules."))
    with pytest.raises(
        RunFolderError, match=r"older layout of custom_modules.*custom_modules\.\w+\."
    ):
        load_run(old)


# ---- streaming pieces ----------------------------------------------------------


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampled_blocks_equal_whole_file_resampling(tmp_path, sr):
    rng = np.random.default_rng(sr)
    stereo = rng.uniform(-0.5, 0.5, size=(int(1.37 * sr), 2)).astype(np.float32)
    path = write(tmp_path / "x.wav", stereo, sr, subtype="FLOAT")
    ratio = math.gcd(SR, sr)
    whole = resample_poly(stereo[:, 0], SR // ratio, sr // ratio)
    with ResampledReader(path, SR) as reader:
        assert reader.num_samples == len(whole) == math.ceil(len(stereo) * SR / sr)
        assert reader.num_channels == 2 and reader.source_sr == sr
        bounds = np.unique(np.r_[0, rng.integers(1, len(whole), size=12), len(whole)])
        blocks = [reader.read(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert all(block.dtype == np.float32 for block in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=2e-6)


@pytest.mark.parametrize(
    ("num_samples", "chunk", "overlap", "lookahead"),
    [
        (10_000, 1000, 250, None),
        (10_000, 1000, 0, None),
        (9_500, 1000, 500, None),
        (1000, 1000, 100, None),
        (37, 1000, 100, None),
        (10_000, 1000, 250, 60),  # late 20-sample ramp
        (10_000, 1000, 50, 60),  # overlap <= lookahead: full-length fade
    ],
)
def test_chunking_is_exact_for_a_memoryless_model(num_samples, chunk, overlap, lookahead):
    signal = tone_and_noise(num_samples, SR, seed=1)
    blocks = []
    peak = enhance_in_chunks(
        lambda x: np.tanh(3 * x),
        lambda a, b: signal[a:b],
        num_samples,
        blocks.append,
        chunk,
        overlap,
        lookahead=lookahead,
        ramp=20,
    )
    output = np.concatenate(blocks)
    np.testing.assert_allclose(output, np.tanh(3 * signal), atol=1e-6)
    assert peak == pytest.approx(np.abs(np.tanh(3 * signal)).max(), rel=1e-6)


def test_chunking_of_the_causal_model_matches_whole_file_processing(loaded, monkeypatch):
    # The recipe's running level (1 s time constant) needs 21.5 s of overlap; a
    # 25 ms time constant keeps this test short: 8 s in 4 s chunks overlapping by
    # model_memory_seconds (hop a multiple of the STFT hop), i.e. 3 chunks.
    monkeypatch.setattr(loaded.model, "norm_decay", math.exp(-1.0 / 2.5))
    memory = model_memory_seconds(loaded.model, SR)
    assert memory == pytest.approx(20 * 2.5 * 160 / SR + RECEPTIVE_MARGIN_SEC)
    process = model_processor(loaded.model)
    signal = tone_and_noise(8 * SR, SR, seed=2)
    whole = process(signal)
    scale = np.abs(whole).max()
    chunk, overlap = 4 * SR, round(memory * SR / 160) * 160

    def chunked(lookahead):
        blocks = []
        enhance_in_chunks(
            process,
            lambda a, b: signal[a:b],
            len(signal),
            blocks.append,
            chunk,
            overlap,
            lookahead=lookahead,
            ramp=320,
        )
        return np.concatenate(blocks)

    # Late ramp: the later chunk has the whole memory of the model as past.
    late = chunked(loaded.model.lookahead)
    assert late.shape == whole.shape
    np.testing.assert_allclose(late, whole, atol=1e-5 * scale)

    # Generic crossfade over the whole overlap: exact outside the overlaps, close inside.
    generic = chunked(None)
    hop = chunk - overlap
    in_overlap = np.zeros(len(signal), dtype=bool)
    for start in range(hop, len(signal), hop):
        in_overlap[start : start + overlap] = True
    assert np.abs(generic - whole)[~in_overlap].max() < 1e-5 * scale
    assert np.abs(generic - whole)[in_overlap].max() > 1e-6 * scale  # starts without past
    snr_db = 10 * np.log10(np.sum(whole**2) / np.sum((generic - whole) ** 2))
    assert snr_db > 40, snr_db


# ---- files and CLI ----------------------------------------------------------------


def test_gain_is_reduced_instead_of_clipping(tmp_path):
    signal = tone_and_noise(3 * SR, SR, seed=3, amplitude=1.0)
    signal *= 0.9 / np.abs(signal).max()
    source = write(tmp_path / "loud.wav", signal, SR, subtype="FLOAT")

    report = enhance_file(
        lambda x: 4 * x, source, tmp_path / "out" / "loud.wav", chunk_sec=1.0, overlap_sec=0.25
    )
    assert report.peak == pytest.approx(3.6, rel=1e-5)
    assert report.gain_db == pytest.approx(20 * np.log10(PEAK_LIMIT / 3.6), abs=1e-4)
    output, sr = sf.read(str(report.output), dtype="float32")
    assert sr == SR and sf.info(str(report.output)).subtype == "PCM_16"
    assert np.abs(output).max() == pytest.approx(PEAK_LIMIT, abs=1 / 32768)
    # One gain for the whole file: the waveform is scaled, not clipped.
    np.testing.assert_allclose(output, signal * 4 * PEAK_LIMIT / 3.6, atol=1 / 32768)

    quiet = enhance_file(lambda x: 0.5 * x, source, tmp_path / "out" / "quiet.wav")
    assert quiet.gain_db == 0.0
    np.testing.assert_allclose(sf.read(str(quiet.output))[0], 0.5 * signal, atol=1 / 32768)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["loud.wav", "quiet.wav"]


def test_cli_resamples_keeps_channel_0_and_mirrors_the_folder(run_folder, loaded, tmp_path, capsys):
    inputs = tmp_path / "in"
    write(inputs / "a_8k.wav", tone_and_noise(12_000, 8000, seed=4), 8000)
    stereo = np.stack(
        [
            tone_and_noise(97_020, 44100, seed=5),
            tone_and_noise(97_020, 44100, seed=6, amplitude=0.01),
        ],
        axis=1,
    )
    write(inputs / "sub" / "b_44k.flac", stereo, 44100)
    write(inputs / "c_16k.wav", tone_and_noise(3 * SR, SR, seed=7), SR)
    (inputs / "notes.txt").write_text("not audio")

    options = ["--num_threads", "1", "--chunk_sec", "1", "--overlap_sec", "0.4"]
    status = cli(run_folder[0], inputs, tmp_path / "out", *options)
    printed = capsys.readouterr().out
    assert status == 0, printed
    expected_frames = {"a_8k.wav": 24_000, "sub/b_44k.wav": 35_200, "c_16k.wav": 3 * SR}
    for name, frames in expected_frames.items():
        info = sf.info(str(tmp_path / "out" / name))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            SR,
            1,
            frames,
            "PCM_16",
        )
    assert sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.wav")
    ) == sorted(expected_frames)

    # Stereo input: the model sees channel 0 resampled to 16 kHz; 3 chunks that, for this
    # causal model, give the whole-file output.
    channel0 = sf.read(str(inputs / "sub" / "b_44k.flac"), dtype="float32")[0][:, 0]
    expected = model_processor(loaded.model)(resample_poly(channel0, 160, 441).astype(np.float32))
    expected *= min(1.0, PEAK_LIMIT / np.abs(expected).max())
    output = sf.read(str(tmp_path / "out" / "sub" / "b_44k.wav"), dtype="float32")[0]
    np.testing.assert_allclose(output, expected, atol=2 / 32768)

    assert "44100 Hz -> 16000 Hz, channel 0 of 2" in printed
    assert "8000 Hz -> 16000 Hz" in printed and "RTF" in printed and "gain" in printed
    assert "Total: 3 file(s) enhanced, 6.70 s of audio" in printed

    # Again with --skip_existing: nothing is redone.
    assert cli(run_folder[0], inputs, tmp_path / "out", "--skip_existing") == 0
    assert "Total: 0 file(s) enhanced" in capsys.readouterr().out


def test_cli_reports_bad_files_and_processes_the_others(run_folder, tmp_path, capsys):
    inputs = tmp_path / "in"
    write(inputs / "good.wav", tone_and_noise(SR, SR, seed=8), SR)
    (inputs / "broken.wav").write_bytes(b"RIFF not really a wav file")
    bad = tone_and_noise(SR, SR, seed=9)
    bad[100] = np.nan
    write(inputs / "nan.wav", bad, SR, subtype="FLOAT")

    status = cli(run_folder[0], inputs, tmp_path / "out")
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.wav: unreadable audio header" in captured.err
    assert "nan.wav: contains NaN or Inf samples" in captured.err
    assert "Total: 1 file(s) enhanced" in captured.out and "2 failed" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav"]  # no temp left


def test_cli_argument_and_path_errors(run_folder, tmp_path, capsys):
    source = write(tmp_path / "x.wav", tone_and_noise(SR, SR, seed=10), SR)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--chunk_sec" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli("r", "i", "o", "--chunk_sec", "2", "--overlap_sec", "1.5")
    assert exit_info.value.code == 2 and "overlap_sec" in capsys.readouterr().err

    run = str(run_folder[0])
    assert cli(tmp_path / "nope", source, tmp_path / "o") == 1
    assert "run folder not found" in capsys.readouterr().err
    assert cli(run, tmp_path / "none.wav", tmp_path / "o") == 1
    assert "none.wav: no such file or folder" in capsys.readouterr().err
    assert cli(run, source, tmp_path) == 1
    assert "would overwrite the input" in capsys.readouterr().err


def test_one_input_file_and_a_wav_output_write_that_file(run_folder, tmp_path, capsys):
    source = write(tmp_path / "in" / "noisy.wav", tone_and_noise(SR, SR, seed=8), SR)
    target = tmp_path / "new_folder" / "Clean.WAV"
    assert list_jobs(source, target) == [(source, target)]
    existing = tmp_path / "looks_like.wav"
    existing.mkdir()  # an existing folder stays a folder, whatever its name
    assert list_jobs(source, existing) == [(source, existing / "noisy.wav")]
    with pytest.raises(ValueError, match="would overwrite the input"):
        list_jobs(source, source)
    assert cli(run_folder[0], source, target) == 0, capsys.readouterr().err
    assert target.is_file() and sf.info(str(target)).frames == SR
    assert sorted(p.name for p in target.parent.iterdir()) == ["Clean.WAV"]  # no temporary left


def test_list_jobs_skips_hidden_and_output_files_and_refuses_collisions(tmp_path):
    folder = tmp_path / "data"
    write(folder / "a.wav", np.zeros(10), SR)
    write(folder / ".a.tmp123.wav", np.zeros(10), SR)  # leftover of an interrupted write
    write(folder / "enhanced" / "a.wav", np.zeros(10), SR)  # earlier outputs inside the input
    jobs = list_jobs(folder, folder / "enhanced")
    assert jobs == [(folder / "a.wav", folder / "enhanced" / "a.wav")]
    write(folder / "a.flac", np.zeros(10), SR)
    with pytest.raises(ValueError, match="would both be written to"):
        list_jobs(folder, tmp_path / "out")
    (tmp_path / "no_audio").mkdir()
    with pytest.raises(FileNotFoundError, match="no_audio: no .wav/.flac file found"):
        list_jobs(tmp_path / "no_audio", tmp_path / "out")
    with pytest.raises(AudioFileError, match="zero-length"):
        ResampledReader(write(tmp_path / "empty.wav", np.zeros(0), SR))


def status_kb(field):
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``); skips the test without it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    pytest.skip(f"/proc/self/status has no {field}")


def peak_rss_reset():
    """``/proc/self/clear_refs``, writable to reset the peak RSS; skips the test without it."""
    clear_refs = Path("/proc/self/clear_refs")
    if not os.access(clear_refs, os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    return clear_refs


def write_ten_minutes(path, seed):
    """10 minutes of 16-kHz noise written in 10-s blocks (never the whole file in memory)."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as handle:
        for _ in range(60):
            handle.write((0.1 * rng.standard_normal(10 * SR)).astype(np.float32))
    return path


def test_long_file_memory_stays_bounded(loaded, tmp_path):
    """10 minutes at 16 kHz: the peak RSS grows by far less than one whole-file float32 copy."""
    clear_refs = peak_rss_reset()
    long_path = write_ten_minutes(tmp_path / "long.wav", seed=11)
    process = model_processor(loaded.model)
    settings = dict(chunk_sec=10.0, overlap_sec=1.0, hop_multiple=loaded.model.hop_length)
    short_path = write(tmp_path / "short.wav", tone_and_noise(25 * SR, SR, seed=12), SR)
    enhance_file(process, short_path, tmp_path / "out" / "short.wav", **settings)  # warm-up

    rss_before = status_kb("VmRSS")
    clear_refs.write_text("5")  # peak RSS := current RSS
    report = enhance_file(process, long_path, tmp_path / "out" / "long.wav", **settings)
    growth_mb = (status_kb("VmHWM") - rss_before) / 1024
    assert sf.info(str(report.output)).frames == 600 * SR
    whole_file_float32_mb = 600 * SR * 4 / 2**20  # 36.6 MB
    assert growth_mb < 0.5 * whole_file_float32_mb, growth_mb


def test_cli_subprocess_on_real_speech(run_folder, real_audio_dir, tmp_path):
    source = sorted((real_audio_dir / "speech").glob("*.wav"))[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "custom_modules.inference.enhance",
            "--run",
            str(run_folder[0]),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out"),
            "--num_threads",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = tmp_path / "out" / f"{source.stem}.wav"
    assert sf.info(str(output)).frames == sf.info(str(source)).frames
    enhanced = sf.read(str(output))[0]
    assert np.all(np.isfinite(enhanced)) and np.abs(enhanced).max() > 0
    assert "RTF" in result.stdout and "Total: 1 file(s) enhanced" in result.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]  # nothing else written in the cwd


def test_feature_models_are_refused_with_a_clear_error():
    class MaskOnFeatures(torch.nn.Module):  # like MaskNet: (batch, frames, freqs) in
        def forward(self, feats):
            batch, frames, freqs = feats.shape
            return torch.sigmoid(feats)

    with pytest.raises(ValueError, match="not waveform-in/waveform-out: 1600 samples raised"):
        check_waveform_model(model_processor(MaskOnFeatures()), SR)
    check_waveform_model(model_processor(torch.nn.Identity()), SR)
