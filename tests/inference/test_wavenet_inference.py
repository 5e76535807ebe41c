"""The Denoising WaveNet through the enhance CLI: files of any length, bounded memory.

A run folder is built from ``recipes/denoising_wavenet/hparams/wavenet_cpu.yaml``
with a tiny network (the layout of the recipe, few channels) the way
``tests/inference/test_enhance.py`` builds UNet-TCM's.
"""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from custom_modules.inference.enhance import enhance_file, main, model_processor
from custom_modules.inference.run_loading import load_run
from tests.inference.test_enhance import (
    make_run_folder,
    peak_rss_reset,
    status_kb,
    tone_and_noise,
    write,
    write_ten_minutes,
)

REPO = Path(__file__).resolve().parents[2]
WAVENET_YAML = REPO / "recipes" / "denoising_wavenet" / "hparams" / "wavenet_cpu.yaml"
TINY_WAVENET = {
    "num_stacks": 2,
    "dilations": [1, 4, 16],
    "residual_channels": 2,
    "skip_channels": 2,
    "output_channels": [4, 2],
    "model": {"target_field": 16000, "max_fragments": 2},
}
SR = 16000


@pytest.fixture(scope="module")
def wavenet_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "wavenet_tiny"
    make_run_folder(run, [{"stoi": 0.8, "si_snr": 3.0}], WAVENET_YAML, TINY_WAVENET)
    return run


def test_cli_output_equals_whole_file_processing(wavenet_run, tmp_path, capsys):
    """Chunks of 10 s overlapping by 1 s, each cut into fragments: same as the whole file."""
    signal = tone_and_noise(25 * SR + 123, SR, seed=21)
    source = write(tmp_path / "in" / "noisy.wav", signal, SR)
    assert (
        main(["--run", str(wavenet_run), "--input", str(source), "--output", str(tmp_path / "out")])
        == 0
    )
    assert "late 20 ms ramp (lookahead)" in capsys.readouterr().out
    enhanced, sr = sf.read(str(tmp_path / "out" / "noisy.wav"), dtype="float32")
    assert sr == SR and len(enhanced) == len(signal)
    model = load_run(wavenet_run).model
    with torch.no_grad():
        whole = model(torch.from_numpy(sf.read(str(source), dtype="float32")[0])[None])[0].numpy()
    assert np.abs(whole).max() < 0.999  # no gain applied: equal up to 16-bit rounding
    assert np.max(np.abs(enhanced - whole)) <= 1.0 / 32768 + 1e-6


def test_ten_minute_file_runs_in_fragments_with_bounded_memory(wavenet_run, tmp_path, monkeypatch):
    """10 minutes at 16 kHz: at most max_fragments fragments per pass, flat peak RSS."""
    clear_refs = peak_rss_reset()
    long_path = write_ten_minutes(tmp_path / "long.wav", seed=22)
    run = load_run(wavenet_run)
    model = run.model
    passes = []
    network = model.target_fields

    def counting(fragments):
        passes.append(tuple(fragments.shape))
        return network(fragments)

    monkeypatch.setattr(model, "target_fields", counting)
    process = model_processor(model)
    settings = dict(chunk_sec=10.0, overlap_sec=1.0, lookahead=model.lookahead)
    short_path = write(tmp_path / "short.wav", tone_and_noise(25 * SR, SR, seed=23), SR)
    enhance_file(process, short_path, tmp_path / "out" / "short.wav", **settings)  # warm-up
    passes.clear()

    rss_before = status_kb("VmRSS")
    clear_refs.write_text("5")  # peak RSS := current RSS
    report = enhance_file(process, long_path, tmp_path / "out" / "long.wav", **settings)
    growth_mb = (status_kb("VmHWM") - rss_before) / 1024
    assert sf.info(str(report.output)).frames == 600 * SR
    assert all(b <= 2 and n == model.fragment_length for b, n in passes), set(passes)
    covered = sum(b for b, _ in passes) * model.target_field
    assert covered >= 600 * SR  # every sample predicted (chunks overlap: a little more)
    whole_file_float32_mb = 600 * SR * 4 / 2**20  # 36.6 MB; the network on it: x channels
    assert growth_mb < 0.5 * whole_file_float32_mb, growth_mb
