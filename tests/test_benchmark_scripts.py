"""The streaming benchmark scripts run from their README commands and measure what they claim.

Short runs (no timing is asserted: tests check correctness, not speed).
"""

import json
import math

import pytest

from benchmarks import data_prepare, mixing, streaming, streaming_equivalence


def test_streaming_benchmark_times_every_backend_and_the_offline_model(capsys):
    results = streaming.main(["--seconds", "1.5", "--configs", "unet_cpu.yaml"])
    rows = results["unet_cpu.yaml"]
    assert set(rows) == {"eager", "onnx", "native", "offline"}
    for name, row in rows.items():
        assert math.isfinite(row["rtf"]) and row["rtf"] > 0, name
    for backend in ("eager", "onnx", "native"):
        assert 0 < rows[backend]["median_ms"] <= rows[backend]["p99_ms"]
    printed = capsys.readouterr().out
    assert "unet_cpu.yaml  native" in printed and "load average after" in printed


@pytest.mark.real_audio
def test_streaming_equivalence_script_reports_every_backend_within_tolerance(
    real_audio_dir, monkeypatch, capsys
):
    monkeypatch.setenv("REAL_AUDIO_DIR", str(real_audio_dir))
    results = streaming_equivalence.main(["--seconds", "2"])
    assert set(results) == {"unet.yaml, random", "unet_cpu.yaml, random"}
    for diffs in results.values():
        assert set(diffs) == {"eager", "onnx", "native"}
        assert all(0 <= diff <= 1e-4 for diff in diffs.values())
    assert "| unet.yaml, random |" in capsys.readouterr().out


def test_mixing_benchmark_runs_both_paths_and_reports_the_ratio(capsys):
    # Real files when found (REAL_AUDIO_DIR, ../shared/audio), else synthetic ones; tiny budget.
    assert mixing.main(["--seconds", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "sb-enhance RandomMixtureSampler" in printed
    assert "speechbrain AddReverb+AddNoise" in printed
    assert "ratio sb-enhance / speechbrain:" in printed


def test_data_prepare_benchmark_times_both_preparations(capsys, tmp_path):
    out = tmp_path / "figures.json"
    data_prepare.main(
        ["--num_files", "40", "--seconds", "0.1", "--workers", "1", "--repeats", "1",
         "--output_json", str(out)]
    )  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert {row["function"] for row in rows} == {"prepare_folder(speech)", "prepare_dns"}
    assert all(row["files"] > 0 and row["files_per_second"] > 0 for row in rows)
    assert "prepare_dns" in capsys.readouterr().out
