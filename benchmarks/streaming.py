"""Real-time streaming speed of the UNet-TCM: per-chunk latency and real-time factor, one thread.

Usage::

    python -m benchmarks.streaming [--seconds 10] [--configs unet.yaml unet_cpu.yaml] [--profile] \\
        [--peers rnnoise deepfilternet3] [--output_json results/bench/streaming.json]

    # with the peers (benchmark-only packages of requirements-bench.txt):
    OMP_NUM_THREADS=1 "$(scripts/venv.sh --bench)/bin/python" -m benchmarks.streaming

For each recipe configuration (``recipes/unet_tcm/hparams/*.yaml``, random
weights: the speed does not depend on them) the same ``--seconds`` of audio
are streamed one 10 ms chunk (160 samples) at a time through
``StreamingEnhancer`` with

* ``eager``: the fused one-frame step (``FusedUNetStep``) in eager PyTorch;
* ``onnx``: the same step exported to ONNX (explicit state inputs/outputs)
  under onnxruntime;
* ``native``: the same step as C compiled for this CPU
  (``custom_modules/streaming/native.py``);

and the offline model is run on the whole signal at once (batch of 1) for
comparison. Everything runs with one thread (``torch.set_num_threads(1)``,
onnxruntime ``intra_op_num_threads=1``).

Printed per configuration and path: median and 99th-percentile processing
time per chunk (wall clock, everything included: STFT, level, step, history,
overlap-add), the real-time factor (total processing time / audio duration)
by wall clock and by CPU time of this thread (the fairer figure on a shared
machine), and the load average before and after; then where a chunk's CPU
time goes (``step_breakdown``): the ONNX and native steps alone (the ONNX
graph's node count, onnxruntime's cost of one run of a one-node graph and
of each further node beside them), the host side (everything but the step), and the ONNX step
time that 1.5x of native would allow. ``--profile`` adds the eager PyTorch
ops and the onnxruntime node types that take the time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from benchmarks import _peers
from benchmarks.machine import BenchmarkRun, add_output_json
from custom_modules.evaluation.complexity import load_recipe_model, macs_per_second
from custom_modules.streaming import StreamingEnhancer
from custom_modules.streaming.engine import BACKENDS
from custom_modules.streaming.onnx_step import export_model

REPO_ROOT = Path(__file__).resolve().parents[1]

SR = 16000
HPARAMS = REPO_ROOT / "recipes" / "unet_tcm" / "hparams"
WARMUP_CHUNKS = 100
PEER_NAMES = ("rnnoise", "deepfilternet3")
# (configuration, peer, how many times faster the configuration must be)
PEER_GOALS = (("unet.yaml", "deepfilternet3", 2.0), ("unet_cpu.yaml", "rnnoise", 4.0))
ONNX_WITHIN = 1.5


def chunk_figures(times: np.ndarray, cpu: float, seconds: float) -> dict:
    """Median and p99 ms per chunk, RTF by wall clock and by CPU time, of ``seconds`` of audio."""
    return {
        "median_ms": 1e3 * float(np.median(times)),
        "p99_ms": 1e3 * float(np.percentile(times, 99)),
        "rtf": float(times.sum()) / seconds,
        "rtf_cpu": cpu / seconds,
    }


def time_streaming(enhancer: StreamingEnhancer, signal: np.ndarray) -> dict:
    """Stream ``signal`` chunk by chunk; per-chunk wall times and total CPU time."""
    hop = enhancer.chunk_size
    chunks = signal[: signal.size // hop * hop].reshape(-1, hop)
    enhancer.reset()
    for chunk in chunks[:WARMUP_CHUNKS]:
        enhancer.process_chunk(chunk)
    enhancer.reset()
    times = np.empty(len(chunks))
    cpu_start = time.thread_time()
    for index, chunk in enumerate(chunks):
        start = time.perf_counter()
        enhancer.process_chunk(chunk)
        times[index] = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    seconds = chunks.size / SR
    return chunk_figures(times, cpu, seconds)


def time_offline(model, signal: np.ndarray, repeats: int = 3) -> dict:
    """Whole-signal offline inference (best of ``repeats``)."""
    waveform = torch.from_numpy(signal)[None]
    walls, cpus = [], []
    with torch.inference_mode():
        model(waveform[:, :SR])  # warm-up
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.thread_time()
            model(waveform)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.thread_time() - cpu)
    seconds = signal.size / SR
    return {"rtf": min(walls) / seconds, "rtf_cpu": min(cpus) / seconds}


def time_peer(peer, signal: np.ndarray) -> dict:
    """Stream ``signal`` (16 kHz) through a 48 kHz peer one frame at a time; resampling apart.

    The per-frame times and the RTF cover the adapter's call (its C frame
    function and the copies around it); the 16 -> 48 -> 16 kHz resampling is
    timed on its own (``resample_rtf``); creating the peer's state is not timed.
    """
    rate, frame = peer.native_rate, peer.frame_size
    start, cpu_start = time.perf_counter(), time.thread_time()
    upsampled = _peers.resample(signal, SR, rate)
    resample_wall, resample_cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    frames = upsampled[: upsampled.size // frame * frame].reshape(-1, frame)
    peer.start()
    for chunk in frames[:WARMUP_CHUNKS]:
        peer.process(chunk)
    peer.start()
    outputs, times = [], np.empty(len(frames))
    cpu_start = time.thread_time()
    for index, chunk in enumerate(frames):
        start = time.perf_counter()
        outputs.append(peer.process(chunk))
        times[index] = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    start, cpu_start = time.perf_counter(), time.thread_time()
    _peers.resample(np.concatenate(outputs), rate, SR)
    resample_wall += time.perf_counter() - start
    resample_cpu += time.thread_time() - cpu_start
    if hasattr(peer, "close"):
        peer.close()
    seconds = frames.size / rate
    return {
        **chunk_figures(times, cpu, seconds),
        "resample_rtf": resample_wall / seconds,
        "resample_rtf_cpu": resample_cpu / seconds,
        "frame_samples": frame,
        "rate": rate,
    }


def _cpu_per_call(function, calls: int) -> float:
    """Median CPU microseconds per call of ``function()`` over 5 rounds (after a warm-up)."""
    for _ in range(calls // 10 + 1):
        function()
    rounds = []
    for _ in range(5):
        start = time.thread_time()
        for _ in range(calls):
            function()
        rounds.append((time.thread_time() - start) / calls * 1e6)
    return float(np.median(rounds))


def onnxruntime_dispatch(calls: int = 1000) -> tuple:
    """onnxruntime's fixed costs, CPU microseconds: one run of a one-node graph, one more node.

    Graphs of 1 and 101 chained ``Relu`` nodes on a (1, 64) tensor, bound
    input and output buffers, no graph optimisation: the run of the first,
    and the difference per node.
    """
    import onnxruntime as ort
    from onnx import helper

    shape = [1, 64]
    source, target = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    costs = []
    for length in (1, 101):
        names = ["x", *(f"t{i}" for i in range(length - 1)), "y"]
        graph = helper.make_graph(
            [
                helper.make_node("Relu", [a], [b])
                for a, b in zip(names[:-1], names[1:], strict=True)
            ],
            "chain",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
        session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
        binding = session.io_binding()
        binding.bind_input("x", "cpu", 0, np.float32, shape, source.ctypes.data)
        binding.bind_output("y", "cpu", 0, np.float32, shape, target.ctypes.data)
        run = session.run_with_iobinding
        costs.append(_cpu_per_call(lambda run=run, binding=binding: run(binding), calls))
    return costs[0], (costs[1] - costs[0]) / 100


def step_breakdown(enhancers: dict, num_nodes: int, signal: np.ndarray, calls: int = 300) -> dict:
    """Where a chunk's CPU time goes: the step of each backend alone, and the host side.

    The steps run on a random frame and state; the host side (STFT, level,
    history, overlap-add, checks) is the chunk loop with a step that returns
    fixed arrays. ``onnx_budget_us`` is the ONNX step time that would put the
    ONNX chunk at 1.5x the native chunk.
    """
    rng = np.random.default_rng(1)
    onnx_runner, native_runner = enhancers["onnx"].runner, enhancers["native"].runner
    past = rng.standard_normal(enhancers["native"].history.past_shape).astype(np.float32)
    spec = rng.standard_normal((enhancers["native"].stft.n_fft // 2 + 1, 2)).astype(np.float32)
    onnx_us = _cpu_per_call(lambda: onnx_runner(spec, past), calls)
    native_us = _cpu_per_call(lambda: native_runner(spec, past), calls)
    enhancer = enhancers["native"]
    fixed = tuple(a.copy() for a in native_runner(spec, past))
    enhancer.runner = lambda spec, past: fixed
    hop = enhancer.chunk_size
    chunks = signal[: signal.size // hop * hop].reshape(-1, hop)
    position = iter(range(10**12))
    host_us = _cpu_per_call(
        lambda: enhancer.process_chunk(chunks[next(position) % len(chunks)]), calls
    )
    enhancer.runner = native_runner
    run_us, node_us = onnxruntime_dispatch()
    return {
        "onnx_nodes": num_nodes,
        "onnxruntime_run_floor_us": run_us,
        "onnxruntime_node_us": node_us,
        "onnx_step_us": onnx_us,
        "native_step_us": native_us,
        "host_us": host_us,
        "onnx_budget_us": ONNX_WITHIN * (host_us + native_us) - host_us,
    }


def compare(results: dict, peers: dict) -> dict:
    """The goal ratios that the measured rows allow (by CPU-time and wall RTF)."""
    ratios = {}
    for config, rows in results.items():
        if "onnx" in rows and "native" in rows:
            ratio = rows["onnx"]["rtf_cpu"] / rows["native"]["rtf_cpu"]
            ratios[f"{config} onnx/native"] = {
                "cpu": ratio,
                "wall": rows["onnx"]["rtf"] / rows["native"]["rtf"],
                "goal": f"<= {ONNX_WITHIN}",
                "met": ratio <= ONNX_WITHIN,
            }
    for config, peer, goal in PEER_GOALS:
        if config not in results or peer not in peers:
            continue
        streamed = {k: v for k, v in results[config].items() if k in BACKENDS}
        best = min(streamed, key=lambda k: streamed[k]["rtf_cpu"])
        ratio = peers[peer]["rtf_cpu"] / streamed[best]["rtf_cpu"]
        ratios[f"{peer}/{config} {best}"] = {
            "cpu": ratio,
            "wall": peers[peer]["rtf"] / streamed[best]["rtf"],
            "goal": f">= {goal}",
            "met": ratio >= goal,
        }
    return ratios


def profile_eager(enhancer: StreamingEnhancer, signal: np.ndarray, chunks: int = 300) -> None:
    """Top eager PyTorch ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    hop = enhancer.chunk_size
    enhancer.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for chunk in signal[: chunks * hop].reshape(-1, hop):
                enhancer.process_chunk(chunk)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def profile_onnx(model, signal: np.ndarray, chunks: int = 300) -> None:
    """Time per onnxruntime node type, per chunk (from onnxruntime's profiler)."""
    import onnxruntime as ort

    from custom_modules.streaming.onnx_step import INPUT_NAMES, OUTPUT_NAMES

    proto = export_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
        enhancer = StreamingEnhancer.from_onnx(proto)

        def runner(spec, past):
            return session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: spec, INPUT_NAMES[1]: past})

        enhancer.runner = runner
        hop = enhancer.chunk_size
        for chunk in signal[: chunks * hop].reshape(-1, hop):
            enhancer.process_chunk(chunk)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals, counts = Counter(), Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
            counts[event["args"]["op_name"]] += 1
    print(
        f"  onnxruntime kernel time per chunk by node type "
        f"({sum(counts.values()) / chunks:.0f} nodes):"
    )
    for name, total in totals.most_common(10):
        print(f"    {name:22s} {total / chunks:7.1f} us  ({counts[name] / chunks:.0f} nodes)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio streamed per path")
    parser.add_argument("--configs", nargs="+", default=["unet.yaml", "unet_cpu.yaml"])
    parser.add_argument("--peers", nargs="*", default=list(PEER_NAMES), choices=PEER_NAMES)
    parser.add_argument("--profile", action="store_true", help="show where the time goes")
    add_output_json(parser)
    args = parser.parse_args(argv)
    run = BenchmarkRun("streaming", args, threads=1)
    rng = np.random.default_rng(0)
    # Speed does not depend on the content; a speech-like level keeps it realistic.
    signal = (0.05 * rng.standard_normal(round(args.seconds * SR))).astype(np.float32)

    print(f"{args.seconds:g} s of audio, chunks of 160 samples (10 ms), 1 thread\n")
    header = (
        f"{'config':14s} {'path':14s} {'median ms':>10s} {'p99 ms':>8s} {'RTF':>7s} "
        f"{'RTF(cpu)':>9s}"
    )
    results = {}
    for config in args.configs:
        with torch.random.fork_rng(devices=[]):
            model = load_recipe_model(HPARAMS / config).eval()
        gmacs = macs_per_second(model) / 1e9
        print(f"{config}: {gmacs:.2f} GMAC per second of audio")
        print(header)
        rows, enhancers = {}, {}
        proto = export_model(model)
        for backend in BACKENDS:
            if backend == "onnx":  # what from_model(backend="onnx") does, keeping the graph
                enhancer = StreamingEnhancer.from_onnx(proto)
            else:
                enhancer = StreamingEnhancer.from_model(model, backend=backend)
            enhancers[backend] = enhancer
            rows[backend] = time_streaming(enhancer, signal)
            row = rows[backend]
            print(
                f"{config:14s} {backend:14s} {row['median_ms']:10.3f} {row['p99_ms']:8.3f} "
                f"{row['rtf']:7.4f} {row['rtf_cpu']:9.4f}"
            )
            if args.profile and backend == "eager":
                profile_eager(enhancer, signal)
            if args.profile and backend == "onnx":
                profile_onnx(model, signal)
        rows["offline"] = time_offline(model, signal)
        row = rows["offline"]
        print(
            f"{config:14s} {'offline':14s} {'':>10s} {'':>8s} "
            f"{row['rtf']:7.4f} {row['rtf_cpu']:9.4f}"
        )
        nodes = len(onnx.load_from_string(proto).graph.node)
        rows["step"] = step = step_breakdown(enhancers, nodes, signal)
        print(
            f"  CPU per call: onnx step {step['onnx_step_us']:.1f} us ({nodes} onnxruntime nodes; "
            f"one-node run {step['onnxruntime_run_floor_us']:.1f} us, each further node "
            f">= {step['onnxruntime_node_us']:.2f} us), native step "
            f"{step['native_step_us']:.1f} us, host side {step['host_us']:.1f} us per chunk; "
            f"onnx/native 1.5x needs an onnx step <= {step['onnx_budget_us']:.1f} us\n"
        )
        results[config] = rows

    peers, skipped = {}, {}
    for name in args.peers:
        reason = _peers.peer_import_error(name)
        if reason is not None:
            skipped[name] = _peers.unavailable_message(name, reason)
            print(f"skipped: {skipped[name]}")
            continue
        peer = _peers.build_peer(name)
        peers[name] = {**time_peer(peer, signal), "describe": peer.describe()}
        row = peers[name]
        print(
            f"{'peer':14s} {name:14s} {row['median_ms']:10.3f} {row['p99_ms']:8.3f} "
            f"{row['rtf']:7.4f} {row['rtf_cpu']:9.4f}  (48 kHz, {row['frame_samples']}-sample "
            f"frames; 16<->48 kHz resampling apart: RTF {row['resample_rtf_cpu']:.4f} cpu)"
        )
    ratios = compare(results, peers)
    if ratios:
        print("\nratios (by CPU-time RTF; > 1 means the first is slower for onnx/native):")
    for name, ratio in ratios.items():
        print(
            f"  {name:34s} {ratio['cpu']:6.2f}x (wall {ratio['wall']:.2f}x)  goal "
            f"{ratio['goal']}: {'met' if ratio['met'] else 'NOT met'}"
        )
    report = {
        "seconds": args.seconds,
        "configs": results,
        "peers": peers,
        "skipped_peers": skipped,
        "ratios": ratios,
    }
    run.finish(report)
    return report


if __name__ == "__main__":
    main()
