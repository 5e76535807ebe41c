"""Tests of the streaming UNet-TCM (custom_modules.streaming): framing, fused step, equivalence.

The central claim: the concatenated 160-sample output chunks equal the
offline ``ComplexSpectralMapping`` output delayed by ``latency_samples``
(159), within 1e-4, on real speech plus real noise (``REAL_AUDIO_DIR``), for
the full-size model with random weights, for a checkpoint trained by the
recipe (``unet_tcm_cpu_demo_run``, tests/conftest.py), and over 10 minutes.
"""

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from custom_modules.inference.run_loading import load_run
from custom_modules.models.unet_tcm import ComplexSpectralMapping, UNetEngine
from custom_modules.streaming import (
    FusedUNetStep,
    StreamingEnhancer,
    StreamingISTFT,
    StreamingSTFT,
    TcmHistory,
    stream_delay_samples,
)
from custom_modules.streaming.__main__ import main as stream_main
from custom_modules.streaming.equivalence import noisy_speech, offline, recipe_model, stream_chunks
from custom_modules.streaming.onnx_step import export_step

REPO = Path(__file__).resolve().parents[2]
FULL_YAML = REPO / "recipes" / "unet_tcm" / "hparams" / "unet.yaml"
CPU_YAML = REPO / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"
SR = 16000
TOLERANCE = 1e-4  # max |streamed - offline| required by the issue


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Streaming runs one frame at a time: one thread (as the CLI and benchmark set)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FrameGain(nn.Module):
    """A per-frame, non-linear stand-in engine: every frame scaled by a function of its energy."""

    def forward(self, spec):
        return spec * torch.tanh(spec.abs().mean(dim=(1, 3), keepdim=True))


def frame_gain(frame: np.ndarray) -> np.ndarray:
    """``FrameGain`` on one streamed frame (freqs, 2)."""
    spec = torch.from_numpy(frame).t()[None, :, None, :]  # (1, 2, 1, freqs)
    return FrameGain()(spec)[0, :, 0].t().contiguous().numpy()


def random_engine(config: dict, seed: int) -> UNetEngine:
    """A seeded engine with non-trivial PReLU slopes (some > 1 or < 0), norm affines, BN stats."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        engine = UNetEngine(**config)
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in engine.modules():
            if isinstance(module, nn.PReLU):
                module.weight.copy_(uniform(module.weight.shape, -0.5, 1.5))
            elif (
                hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 1
            ):
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.5))  # norm gains
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(
                    torch.randn(module.running_mean.shape, generator=generator)
                )
                module.running_var.copy_(uniform(module.running_var.shape, 0.5, 2.0))
    return engine.eval()


def rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# ---- framing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_fft", "win_length", "hop_length"),
    [(320, 320, 160), (320, 200, 100), (512, 400, 128), (160, 160, 80), (320, 300, 120)],
)
def test_streaming_framing_equals_offline_framing(n_fft, win_length, hop_length):
    model = ComplexSpectralMapping(FrameGain(), n_fft, win_length, hop_length)
    rng = np.random.default_rng(n_fft + hop_length)
    signal = rng.standard_normal(hop_length * 40 + 37).astype(np.float32)
    expected = offline(model, signal)

    stft = StreamingSTFT(n_fft, win_length, hop_length)
    istft = StreamingISTFT(n_fft, win_length, hop_length)
    delay = stream_delay_samples(n_fft, win_length, hop_length)
    assert istft.delay == delay
    num_chunks = math.ceil((signal.size + delay) / hop_length)
    padded = np.zeros(num_chunks * hop_length, dtype=np.float32)
    padded[: signal.size] = signal
    pieces = []
    for chunk in padded.reshape(-1, hop_length):
        frame = stft.push(chunk)
        if frame is None:
            pieces.append(np.zeros(hop_length, dtype=np.float32))
            continue
        pieces.append(istft.push(frame_gain(frame)))
    streamed = np.concatenate(pieces)
    np.testing.assert_allclose(streamed[delay : delay + signal.size], expected, atol=1e-5)
    assert not streamed[:delay].any()  # nothing before the signal start


def test_latency_is_159_samples_and_cannot_be_smaller():
    """Chunk c returns offline samples [160c - 159, 160c]; the first needs chunk c's last sample."""
    model = ComplexSpectralMapping(FrameGain(), n_fft=320)
    assert stream_delay_samples(320, 320, 160) == 159 and model.lookahead == 318
    rng = np.random.default_rng(1)
    signal = 1e-3 * rng.standard_normal(160 * 12).astype(np.float32)
    enhancer = StreamingEnhancer(
        runner=lambda spec, past: (frame_gain(spec), np.zeros((4, 1), dtype=np.float32)),
        history=TcmHistory([1], kernel_size=2, hidden=1),
    )
    base = stream_chunks(enhancer, signal)
    chunk = 6
    changed = signal.copy()
    changed[160 * chunk + 159] += 1000.0  # last sample of chunk 6 (the window is ~1e-4 there)
    moved = stream_chunks(enhancer, changed)
    differs = np.flatnonzero(moved != base)
    assert differs[0] == 160 * chunk  # the very first output sample of chunk 6 changes
    assert enhancer.latency_samples == 159 and enhancer.algorithmic_latency_samples == 319


# ---- fused step and history -----------------------------------------------------------------

ENGINE_CONFIGS = {
    "small": dict(
        num_layers=3, channels=6, bottleneck_dim=12, tcm_hidden=5, tcm_dilations=(1, 2, 4),
    ),
    "batch_norm": dict(
        num_layers=3, channels=6, bottleneck_dim=12, tcm_hidden=5, tcm_dilations=(1, 3),
        norm="batch_norm",
    ),
    "resize_upsampling": dict(
        num_layers=3, channels=6, bottleneck_dim=12, tcm_hidden=5, tcm_dilations=(1, 2),
        decoder_upsampling="resize",
    ),
    "stride3_kernel5": dict(
        num_freqs=129, num_layers=3, channels=6, kernel_freq=5, stride_freq=3,
        bottleneck_dim=12, tcm_hidden=5, tcm_kernel=3, tcm_dilations=(1, 3), tcm_repeats=2,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ENGINE_CONFIGS))
def test_fused_step_computes_the_engine_frame_by_frame(name):
    engine = random_engine(ENGINE_CONFIGS[name], seed=len(name))
    frames = 120  # several times the largest dilation span
    generator = torch.Generator().manual_seed(3)
    spec = 2.0 * torch.randn(1, 2, frames, engine.num_freqs, generator=generator)
    with torch.inference_mode():
        expected = engine(spec)[0]
    step = FusedUNetStep(engine)
    history = TcmHistory(**step.history_config())
    outputs = []
    with torch.inference_mode():
        for t in range(frames):
            out, present = step(spec[0, :, t].t().contiguous(), torch.from_numpy(history.past()))
            assert present.shape == step.present_shape
            history.push(present.numpy())
            outputs.append(out.t())
    got = torch.stack(outputs, dim=1)
    scale = expected.abs().max().item()
    assert scale > 0.1
    assert (got - expected).abs().max().item() <= 1e-5 * scale


@pytest.mark.parametrize("kernel_size", [2, 5])
def test_tcm_history_returns_each_tap_and_zeros_before_the_start(kernel_size):
    dilations, hidden, paths = [1, 3, 7], 2, 4
    history = TcmHistory(dilations, kernel_size=kernel_size, hidden=hidden, paths=paths)
    rows = len(dilations) * paths
    taps = kernel_size - 1
    for t in range(3 * history.length + 5):  # wraps around the ring several times
        past = history.past().reshape(rows, taps, hidden + 1)
        for row in range(rows):
            dilation = dilations[row // paths]
            for k in range(taps):
                frame = t - (taps - k) * dilation
                expected = [frame * 100 + row, frame * 100 + row, 1.0] if frame >= 0 else [0, 0, 0]
                assert past[row, k].tolist() == expected, (t, row, k)
        history.push(np.full((rows, hidden), t * 100, dtype=np.float32) + np.arange(rows)[:, None])
    history.reset()
    assert not history.past().any()


def test_bad_inputs_raise_clear_errors():
    engine = UNetEngine(
        num_layers=2, channels=4, bottleneck_dim=8, tcm_hidden=4, tcm_dilations=(1,)
    )
    enhancer = StreamingEnhancer.from_model(ComplexSpectralMapping(engine).eval())
    with pytest.raises(ValueError, match=r"shape \(160,\)"):
        enhancer.process_chunk(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        enhancer.process_chunk(np.full(160, np.nan, dtype=np.float32))
    with pytest.raises(TypeError, match="ComplexSpectralMapping"):
        StreamingEnhancer.from_model(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown backend"):
        StreamingEnhancer.from_model(ComplexSpectralMapping(engine), backend="tflite")
    with pytest.raises(ValueError, match="non-empty 1-D"):
        enhancer.enhance(np.zeros((2, 160), dtype=np.float32))


def test_enhance_and_flush_return_the_aligned_offline_output():
    engine = random_engine(ENGINE_CONFIGS["small"], seed=5)
    model = ComplexSpectralMapping(engine)
    enhancer = StreamingEnhancer.from_model(model)
    signal = np.random.default_rng(2).standard_normal(3 * SR + 11).astype(np.float32) * 0.1
    expected = offline(model, signal)
    first = enhancer.enhance(signal)
    assert first.shape == signal.shape and first.dtype == np.float32
    np.testing.assert_allclose(first, expected, atol=1e-5)
    np.testing.assert_array_equal(enhancer.enhance(signal), first)  # state reset in between
    # flush() gives exactly the samples still owed, then the next signal starts fresh.
    chunks = signal[: 160 * 50].reshape(50, 160)
    streamed = np.concatenate([enhancer.process_chunk(c) for c in chunks] + [enhancer.flush()])
    assert streamed.size == 160 * 50 + enhancer.latency_samples
    np.testing.assert_allclose(
        streamed[enhancer.latency_samples :], offline(model, chunks.reshape(-1)), atol=1e-5
    )


@pytest.mark.parametrize("backend", ["eager", "onnx", "native"])
@pytest.mark.parametrize(("compress_exponent", "estimate"), [(0.3, "mapping"), (0.5, "mask")])
def test_compressed_level_normalised_model_streams_like_offline(
    backend, compress_exponent, estimate
):
    engine = random_engine(ENGINE_CONFIGS["small"], seed=6)
    model = ComplexSpectralMapping(
        engine, level_normalization=True, compress_exponent=compress_exponent, estimate=estimate
    )
    signal = np.random.default_rng(3).standard_normal(2 * SR + 7).astype(np.float32) * 0.05
    signal[SR // 2 : SR] = 0.0  # digital silence inside the signal: compression stays finite
    expected = offline(model, signal)
    assert np.isfinite(expected).all() and np.sqrt(np.mean(expected**2)) > 1e-4
    enhancer = StreamingEnhancer.from_model(model, backend=backend)
    assert (enhancer.compress_exponent, enhancer.estimate) == (compress_exponent, estimate)
    np.testing.assert_allclose(enhancer.enhance(signal), expected, atol=1e-5)


# ---- equivalence with the offline model on real audio -------------------------------------------


@pytest.mark.real_audio
@pytest.mark.parametrize(
    "backend", ["eager", "native"]
)  # onnx: tests/streaming/test_streaming_export.py
def test_full_size_random_model_streams_like_offline_on_real_speech(backend, real_audio_dir):
    model = recipe_model(FULL_YAML)
    signal = noisy_speech(real_audio_dir, seconds=10.5)
    expected = offline(model, signal)
    enhancer = StreamingEnhancer.from_model(model, backend=backend)
    streamed = stream_chunks(enhancer, signal)
    delay = enhancer.latency_samples
    assert delay == 159
    aligned = streamed[delay : delay + signal.size]
    assert np.sqrt(np.mean(expected**2)) > 1e-3  # a real, non-trivial output
    assert np.abs(aligned - expected).max() <= TOLERANCE
    assert not streamed[:delay].any()


@pytest.mark.slow
@pytest.mark.real_audio
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_trained_demo_checkpoint_streams_like_offline(
    backend, unet_tcm_cpu_demo_run, real_audio_dir
):
    loaded = load_run(unet_tcm_cpu_demo_run)
    signal = noisy_speech(real_audio_dir, seconds=10.5, seed=1)
    expected = offline(loaded.model, signal)
    enhancer = StreamingEnhancer.from_run(unet_tcm_cpu_demo_run, backend=backend)
    streamed = stream_chunks(enhancer, signal)
    aligned = streamed[enhancer.latency_samples : enhancer.latency_samples + signal.size]
    assert np.sqrt(np.mean(expected**2)) > 1e-4
    assert np.abs(aligned - expected).max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.real_audio
@pytest.mark.parametrize("backend", ["onnx", "native"])
def test_ten_minutes_keep_memory_flat_and_do_not_drift(backend, real_audio_dir):
    """10 min through the CPU-size model: RSS flat after the first minute, windows equal offline.

    Offline reference in windows: the model is causal; its engine's temporal
    receptive field is 124 frames (1.24 s for unet_cpu.yaml), and its running
    level (time constant 1 s) forgets the past as exp(-frames / 100). So the
    offline output of a window that starts 20 s (a whole number of hops)
    earlier equals the whole-signal offline output there (to ~exp(-20)).
    """
    model = recipe_model(CPU_YAML)
    minutes = 10
    signal = noisy_speech(real_audio_dir, seconds=60 * minutes, seed=2)
    enhancer = StreamingEnhancer.from_model(model, backend=backend)
    hop, delay = enhancer.chunk_size, enhancer.latency_samples
    num_chunks = signal.size // hop
    streamed = np.full(num_chunks * hop, np.nan, dtype=np.float32)  # written now: resident
    rss = {}
    for index, chunk in enumerate(signal[: num_chunks * hop].reshape(-1, hop)):
        streamed[index * hop : (index + 1) * hop] = enhancer.process_chunk(chunk)
        if index in (60 * SR // hop, num_chunks - 1):
            rss[index] = rss_bytes()
    growth = rss[num_chunks - 1] - rss[60 * SR // hop]
    assert growth < 4 * 2**20, (
        f"RSS grew by {growth / 2**20:.1f} MB from minute 1 to minute {minutes}"
    )

    margin = 20 * SR  # >> receptive field and level time constant; a multiple of the hop
    window, lookahead = 5 * SR, model.lookahead
    last = (min(signal.size - lookahead, streamed.size - delay) - window) // hop * hop
    for start in (0, (signal.size // 2) // hop * hop, last):
        begin = max(0, start - margin)
        # Input up to the window end + lookahead, so the window's outputs are complete.
        reference = offline(model, signal[begin : start + window + lookahead])
        reference = reference[start - begin : start - begin + window]
        got = streamed[start + delay : start + delay + window]
        assert np.abs(got - reference).max() <= TOLERANCE, f"window at {start / SR:.0f} s"


# ---- command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A small exported model (file) and its PyTorch enhancer."""
    engine = random_engine(ENGINE_CONFIGS["small"], seed=9)
    model = ComplexSpectralMapping(engine)
    step = FusedUNetStep(engine)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    path.write_bytes(export_step(step, dict(n_fft=320, win_length=320, hop_length=160)))
    return path, StreamingEnhancer.from_model(model)


def test_cli_wav_to_wav_is_aligned_and_equals_enhance(tiny_onnx, tmp_path, capsys):
    path, reference = tiny_onnx
    rng = np.random.default_rng(4)
    stereo = (0.1 * rng.standard_normal((SR + 123, 2))).astype(np.float32)
    sf.write(tmp_path / "in.wav", stereo, SR, subtype="FLOAT")
    out = tmp_path / "out.wav"
    code = stream_main(
        [
            "--onnx",
            str(path),
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(out),
            "--subtype",
            "FLOAT",
        ]
    )
    assert code == 0, capsys.readouterr().err
    enhanced, sr = sf.read(out, dtype="float32")
    assert sr == SR and enhanced.shape == (SR + 123,)
    np.testing.assert_allclose(enhanced, reference.enhance(stereo[:, 0]), atol=1e-5)
    err = capsys.readouterr().err
    assert "latency 159 samples" in err and "RTF" in err


def test_cli_pcm_stdin_to_stdout_is_the_delayed_stream(tiny_onnx, tmp_path, capsys):
    path, reference = tiny_onnx
    rng = np.random.default_rng(5)
    pcm = np.round(0.1 * rng.standard_normal(160 * 30 + 50) * 32767).astype("<i2")
    stdout = io.BytesIO()
    code = stream_main(
        ["--onnx", str(path), "--input", "-", "--output", "-"],
        stdin=io.BytesIO(pcm.tobytes()),
        stdout=stdout,
    )
    assert code == 0, capsys.readouterr().err
    out = np.frombuffer(stdout.getvalue(), dtype="<i2")
    delay = reference.latency_samples
    assert out.size == pcm.size + delay
    expected = np.clip(reference.enhance(pcm.astype(np.float32) / 32768), -1.0, 32767 / 32768)
    assert np.abs(out[:delay]).max() == 0
    assert np.abs(out[delay:] / 32768 - expected).max() <= 1.5 / 32768  # 16-bit rounding


def test_cli_reports_bad_input(tiny_onnx, tmp_path, capsys):
    path, _ = tiny_onnx
    sf.write(tmp_path / "8k.wav", np.zeros(800, dtype=np.float32), 8000)
    assert (
        stream_main(
            [
                "--onnx",
                str(path),
                "--input",
                str(tmp_path / "8k.wav"),
                "--output",
                str(tmp_path / "o.wav"),
            ]
        )
        == 1
    )
    assert "8000 Hz" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()
    assert (
        stream_main(
            [
                "--onnx",
                str(path),
                "--input",
                str(tmp_path / "missing.wav"),
                "--output",
                str(tmp_path / "o.wav"),
            ]
        )
        == 1
    )
    assert "not found" in capsys.readouterr().err


def test_a_double_precision_model_is_streamed_in_float32():
    engine = random_engine(ENGINE_CONFIGS["small"], seed=6)
    model = ComplexSpectralMapping(engine, level_normalization=True).double()
    enhancer = StreamingEnhancer.from_model(model)
    signal = np.random.default_rng(7).standard_normal(SR).astype(np.float32) * 0.1
    with torch.inference_mode():
        expected = model(torch.from_numpy(signal).double()[None])[0].numpy()
    got = enhancer.enhance(signal)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert next(model.parameters()).dtype == torch.float64  # the model itself is untouched


def test_cli_runs_as_a_module_on_a_pipe(tiny_onnx):
    """``python -m custom_modules.streaming`` with raw PCM through a real pipe."""
    path, reference = tiny_onnx
    pcm = np.round(0.05 * np.random.default_rng(8).standard_normal(160 * 20) * 32767).astype("<i2")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "custom_modules.streaming", "--onnx", str(path),
         "--input", "-", "--output", "-"],
        input=pcm.tobytes(), capture_output=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    out = np.frombuffer(proc.stdout, dtype="<i2")
    expected = np.clip(reference.enhance(pcm.astype(np.float32) / 32768), -1.0, 32767 / 32768)
    assert out.size == pcm.size + reference.latency_samples
    assert np.abs(out[reference.latency_samples :] / 32768 - expected).max() <= 1.5 / 32768
    assert b"RTF" in proc.stderr
