"""The benchmark scripts run from their README commands and measure what they claim.

Short runs on tiny inputs (no timing is asserted: tests check correctness, not
speed): each script prints the machine before and after and writes a JSON
report (``--output_json``) with the machine and finite, positive figures.
"""

import json
import math

import pytest

from benchmarks import _peers, data_prepare, mixing, readme_rows, streaming, streaming_equivalence


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def read_report(path, name: str, printed: str) -> dict:
    """The JSON of a benchmark run, checked for the machine fields every benchmark writes."""
    report = json.loads(path.read_text())
    assert report["benchmark"] == name
    for when in ("machine_before", "machine_after"):
        machine = report[when]
        assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
        assert len(machine["load_average"]) == 3
        assert all(math.isfinite(v) and v >= 0 for v in machine["load_average"])
    assert f"{name}: before: CPU: " in printed and f"{name}: after: CPU: " in printed
    return report


def test_streaming_benchmark_times_every_backend_the_offline_model_and_peers(capsys, tmp_path):
    out = tmp_path / "streaming.json"
    results = streaming.main(
        ["--seconds", "1.5", "--configs", "unet_cpu.yaml", "--output_json", str(out)]
    )
    printed = capsys.readouterr().out
    report = read_report(out, "streaming", printed)
    assert report["results"] == json.loads(json.dumps(results))
    assert report["threads"] == 1
    rows = report["results"]["configs"]["unet_cpu.yaml"]
    assert set(rows) == {"eager", "onnx", "native", "offline", "step"}
    for name in ("eager", "onnx", "native", "offline"):
        assert positive(rows[name]["rtf"]) and positive(rows[name]["rtf_cpu"]), name
    for backend in ("eager", "onnx", "native"):
        assert 0 < rows[backend]["median_ms"] <= rows[backend]["p99_ms"]
    assert "unet_cpu.yaml  native" in printed
    ratios = report["results"]["ratios"]
    assert positive(ratios["unet_cpu.yaml onnx/native"]["cpu"])
    # Each peer is timed (its package installed) or skipped with how to install it.
    peers, skipped = report["results"]["peers"], report["results"]["skipped_peers"]
    assert set(peers) | set(skipped) == {"rnnoise", "deepfilternet3"}
    for row in peers.values():
        assert all(positive(row[k]) for k in ("rtf", "rtf_cpu", "resample_rtf", "median_ms")), row
        assert row["rate"] == 48000 and row["frame_samples"] == 480
    if "rnnoise" in peers:
        assert positive(
            ratios[
                "rnnoise/unet_cpu.yaml "
                + min(("eager", "onnx", "native"), key=lambda b: rows[b]["rtf_cpu"])
            ]["cpu"]
        )
    step = rows["step"]  # where the time goes: the steps alone and the host side
    assert step["onnx_nodes"] > 0 and all(
        positive(step[k]) for k in ("onnx_step_us", "native_step_us", "host_us")
    )
    assert step["onnx_budget_us"] == pytest.approx(
        1.5 * (step["host_us"] + step["native_step_us"]) - step["host_us"]
    )
    table = "\n".join(readme_rows.main([str(out)]))
    assert f"native {rows['native']['rtf_cpu']:.4f}" in table
    assert f"{step['onnx_nodes']} nodes" in table
    assert report["machine_before"]["cpu_model"] in table
    for name, message in skipped.items():
        assert _peers.PEERS[name][0] in message and "venv.sh --bench" in message
        assert f"skipped: {message}" in printed


@pytest.mark.real_audio
def test_streaming_equivalence_script_reports_every_backend_within_tolerance(
    real_audio_dir, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REAL_AUDIO_DIR", str(real_audio_dir))
    out = tmp_path / "equivalence.json"
    results = streaming_equivalence.main(["--seconds", "2", "--output_json", str(out)])
    printed = capsys.readouterr().out
    assert read_report(out, "streaming_equivalence", printed)["results"] == results
    assert set(results) == {"unet.yaml, random", "unet_cpu.yaml, random"}
    for diffs in results.values():
        assert set(diffs) == {"eager", "onnx", "native"}
        assert all(0 <= diff <= 1e-4 for diff in diffs.values())
    assert "| unet.yaml, random |" in printed


@pytest.mark.parametrize("real", [True, False], ids=["real_or_synthetic", "synthetic"])
def test_mixing_benchmark_runs_every_path_and_reports_both_ratios(
    capsys, tmp_path, monkeypatch, real
):
    # Real files when found (REAL_AUDIO_DIR, ../shared/audio), else synthetic ones; tiny budget.
    if not real:
        monkeypatch.setattr(mixing, "find_audio_dir", lambda requested: None)
    out = tmp_path / "mixing.json"
    mixing.main(["--seconds", "0.3", "--rounds", "1", "--crop_sec", "1", "--output_json", str(out)])
    printed = capsys.readouterr().out
    report = read_report(out, "mixing", printed)
    results = report["results"]
    assert set(results["paths"]) == {
        "sb-enhance full", "sb-enhance like-for-like", "speechbrain AddReverb+AddNoise"
    }  # fmt: skip
    for name, row in results["paths"].items():
        assert row["mixtures"] >= 1, name
        assert all(positive(row[k]) for k in ("wall_s", "cpu_s", "per_s_wall", "per_s_cpu"))
    for mode, goal in (("like_for_like", 1.5), ("full", 1.0)):
        ratio = results["ratios"][mode]
        assert positive(ratio["cpu"]) and positive(ratio["wall"]) and ratio["goal"] == goal
        assert ratio["met"] == (ratio["cpu"] >= goal)
    assert 0.0 <= results["clipped_fraction"] <= 1.0
    shares = results["rescaled_fraction_by_upper_gain_db"]
    assert list(shares) == ["5", "0", "-5", "-10"]
    assert all(0.0 <= share <= 1.0 for share in shares.values())
    assert list(shares.values()) == sorted(shares.values(), reverse=True)  # lower bound, fewer
    assert results["mixer_full"]["reverb_target"] == "decay"
    assert "ratio sb-enhance like-for-like / speechbrain:" in printed
    assert "ratio sb-enhance full / speechbrain:" in printed
    # The README row is made from this JSON: it names the CPU and carries both ratios.
    (row,) = readme_rows.main([str(out)])
    assert report["machine_before"]["cpu_model"] in row
    for mode in ("like_for_like", "full"):
        assert f"**{results['ratios'][mode]['cpu']:.2f}x**" in row
    if not real:
        assert "synthetic" in results["audio"]


def test_data_prepare_benchmark_times_both_preparations(capsys, tmp_path):
    out = tmp_path / "figures.json"
    data_prepare.main(
        ["--num_files", "40", "--seconds", "0.1", "--workers", "1", "--repeats", "1",
         "--output_json", str(out)]
    )  # fmt: skip
    rows = read_report(out, "data_prepare", capsys.readouterr().out)["results"]
    assert {row["function"] for row in rows} == {"prepare_folder(speech)", "prepare_dns"}
    assert all(row["files"] > 0 and positive(row["files_per_second"]) for row in rows)


@pytest.mark.slow
def test_training_step_benchmark_times_each_part_on_the_demo_corpus(demo_corpus, tmp_path, capsys):
    from benchmarks import training_step
    from tests.recipes.test_recipes import ROOT, cpu_size_overrides

    out = tmp_path / "step.json"
    hparams = ROOT / "recipes" / "unet_tcm" / "hparams" / "unet_cpu.yaml"
    overrides = cpu_size_overrides(hparams)
    training_step.main(
        [str(hparams),
         "--data_folder", str(demo_corpus), "--output_folder", str(tmp_path / "run"),
         "--steps", "1", "--data_batches", "1", "--valid_utterances", "1", "--threads", "1",
         "--output_json", str(out), *overrides]
    )  # fmt: skip
    report = read_report(out, "training_step", capsys.readouterr().out)
    parts = report["results"]["threads"]["1"]
    assert positive(parts["data_per_batch"])
    assert set(parts["step"]) == {"forward", "loss", "backward", "optimizer"}
    assert all(positive(v) for v in [*parts["step"].values(), *parts["valid"].values()])
