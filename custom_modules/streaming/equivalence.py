"""Streamed vs offline output: the helpers of the equivalence tests and benchmark.

The streaming claim (``custom_modules/streaming/README.md``): the concatenated
output chunks equal the offline ``ComplexSpectralMapping`` output delayed by
``latency_samples``. ``tests/streaming/test_streaming.py`` and
``benchmarks/streaming_equivalence.py`` measure it with these functions on real
speech plus real noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from custom_modules.audio.levels import mix_speech_with_noise
from custom_modules.evaluation.complexity import load_recipe_model
from custom_modules.streaming.engine import StreamingEnhancer

SR = 16000


def noisy_speech(audio_dir: Path, seconds: float, snr_db: float = 5.0, seed: int = 0) -> np.ndarray:
    """Real speech files concatenated (repeated if needed) to ``seconds``, plus real noise."""
    speech_files = sorted((audio_dir / "speech").glob("*.wav"))
    noise_files = sorted((audio_dir / "noise").glob("*.wav"))
    if not (speech_files and noise_files):
        raise FileNotFoundError(f"no speech/noise wavs under {audio_dir}")
    num_samples = round(seconds * SR)
    pieces, total = [], 0
    while total < num_samples:
        for path in speech_files:
            samples, sr = sf.read(path, dtype="float32")
            if sr != SR:
                raise ValueError(f"{path}: {sr} Hz, expected {SR}")
            pieces.append(samples if samples.ndim == 1 else samples[:, 0])
            total += pieces[-1].size
            if total >= num_samples:
                break
    speech = np.concatenate(pieces)[:num_samples]
    rng = np.random.default_rng(seed)
    noise_path = noise_files[rng.integers(len(noise_files))]
    noise, _ = sf.read(noise_path, dtype="float32", always_2d=True)
    noise = np.resize(noise[:, 0], num_samples)  # tiled
    mixture, _, _ = mix_speech_with_noise(speech, noise, rms_signal_db=-25.0, snr_db=snr_db)
    return mixture.astype(np.float32)


def stream_chunks(enhancer: StreamingEnhancer, signal: np.ndarray) -> np.ndarray:
    """Concatenated ``process_chunk`` outputs of ``signal`` plus zero chunks covering the delay."""
    hop = enhancer.chunk_size
    num_chunks = math.ceil((signal.size + enhancer.latency_samples) / hop)
    padded = np.zeros(num_chunks * hop, dtype=np.float32)
    padded[: signal.size] = signal
    enhancer.reset()
    return np.concatenate([enhancer.process_chunk(chunk) for chunk in padded.reshape(-1, hop)])


def offline(model: nn.Module, signal: np.ndarray) -> np.ndarray:
    """The model's whole-signal (offline) output of a 1-D float32 signal."""
    with torch.inference_mode():
        return model(torch.from_numpy(signal)[None])[0].numpy()


def recipe_model(yaml_path: Path) -> nn.Module:
    """The recipe's model with its (seeded) random initialisation; global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        return load_recipe_model(yaml_path).eval()
