"""The streaming UNet-TCM step as an ONNX model: export (PyTorch -> ONNX) and run (onnxruntime).

The one-frame step of ``fused.py`` is exported with PyTorch's dynamo-based
exporter (``torch.onnx.export(..., dynamo=True)``: ``torch.export`` traces the
step, ``onnxscript`` writes opset 18 and optimises the graph), with explicit state:

* inputs ``spec`` (n_fft//2+1, 2) float32: one frame's STFT, real and
  imaginary parts side by side;
  ``past`` (num_tcms * 4, (tcm_kernel-1) * (tcm_hidden+1)): the TCM convolution
  inputs at the earlier taps (``TcmHistory.past()``);
* outputs ``enhanced`` (n_fft//2+1, 2) and ``present`` (num_tcms * 4,
  tcm_hidden), the newest taps (``TcmHistory.push``).

The framing, the history sizes and the level normalisation's decay (the
running level itself is computed on the host, see ``engine.RunningLevel``)
are stored in the model's metadata (``sb_enhance.streaming``, JSON), so
``StreamingEnhancer.from_onnx(path)`` needs nothing else (numpy and
onnxruntime; the STFT and the ring buffer of past taps run in numpy).
The command line that exports a run is :mod:`custom_modules.streaming.export`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from custom_modules.streaming.fused import FusedUNetStep

METADATA_KEY = "sb_enhance.streaming"
FORMAT_VERSION = 1
OPSET = 18  # the lowest opset the dynamo exporter writes natively
INPUT_NAMES = ("spec", "past")
OUTPUT_NAMES = ("enhanced", "present")


def export_step(
    step: FusedUNetStep,
    framing: dict,
    sample_rate: int = 16000,
    level_decay=None,
    compress_exponent=1.0,
    estimate="mapping",
) -> bytes:
    """ONNX bytes of ``step`` with its streaming metadata (see module docstring).

    Arguments
    ---------
    step : FusedUNetStep
    framing : dict
        ``n_fft``, ``win_length``, ``hop_length`` of the offline model.
    sample_rate : int
    level_decay : float, optional
        ``norm_decay`` of a model with ``level_normalization`` (None: none).
    compress_exponent : float
        The model's power-law compression around the step (1.0: none).
    estimate : str
        What the step outputs: ``"mapping"`` (the spectrum) or ``"mask"``.
    """
    spec = torch.zeros(step.num_freqs, step.in_channels)
    past = torch.zeros(step.past_shape)
    with warnings.catch_warnings(), torch.inference_mode(False):
        # torch.export notes about optional torchvision ops and pytree internals: not ours.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            step.eval(),
            (spec, past),
            dynamo=True,  # torch.export + onnxscript (the TorchScript exporter is deprecated)
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            optimize=True,  # constant folding and fusion by onnxscript's optimizer
            verbose=False,
        )
    proto = program.model_proto
    meta = {
        "format_version": FORMAT_VERSION,
        "sample_rate": int(sample_rate),
        **{key: int(framing[key]) for key in ("n_fft", "win_length", "hop_length")},
        "history": step.history_config(),
        "level_decay": None if level_decay is None else float(level_decay),
        "compress_exponent": float(compress_exponent),
        "estimate": estimate,
        "past_shape": list(step.past_shape),
        "present_shape": list(step.present_shape),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.producer_name = "sb-enhance streaming export"
    return proto.SerializeToString()


def export_model(model, sample_rate: int = 16000) -> bytes:
    """ONNX bytes of the streaming step of a ``ComplexSpectralMapping`` (UNet-TCM) model."""
    framing = {key: getattr(model, key) for key in ("n_fft", "win_length", "hop_length")}
    level_decay = model.norm_decay if getattr(model, "level_normalization", False) else None
    return export_step(
        FusedUNetStep(model.engine),
        framing,
        sample_rate,
        level_decay,
        compress_exponent=getattr(model, "compress_exponent", 1.0),
        estimate=getattr(model, "estimate", "mapping"),
    )


def read_metadata(proto_bytes: bytes, name: str = "<bytes>") -> dict:
    """The streaming metadata of an exported model (clear error when absent)."""
    import onnx

    try:
        proto = onnx.load_from_string(proto_bytes)
    except Exception as err:  # onnx raises DecodeError and others
        raise ValueError(f"{name}: not an ONNX model ({err})") from err
    entries = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in entries:
        raise ValueError(
            f"{name}: no {METADATA_KEY!r} metadata "
            "(not exported by custom_modules.streaming.export)"
        )
    meta = json.loads(entries[METADATA_KEY])
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}: unsupported export format {meta.get('format_version')}")
    return meta


class OnnxStepRunner:
    """Runs an exported step in onnxruntime with one thread (same call as ``TorchStepRunner``).

    Inputs and outputs are bound to preallocated arrays (``io_binding``): no
    allocation per call. The returned arrays are overwritten by the next call.
    """

    def __init__(self, proto_bytes: bytes, meta: dict, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            proto_bytes, options, providers=["CPUExecutionProvider"]
        )
        num_freqs = meta["n_fft"] // 2 + 1
        shapes = {
            INPUT_NAMES[0]: (num_freqs, 2),
            INPUT_NAMES[1]: tuple(meta["past_shape"]),
            OUTPUT_NAMES[0]: (num_freqs, 2),
            OUTPUT_NAMES[1]: tuple(meta["present_shape"]),
        }
        self._buffers = {name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()}
        self._binding = self.session.io_binding()
        for name, buffer in self._buffers.items():
            bind = self._binding.bind_input if name in INPUT_NAMES else self._binding.bind_output
            bind(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)

    def __call__(self, spec: np.ndarray, past: np.ndarray):
        np.copyto(self._buffers[INPUT_NAMES[0]], spec)
        np.copyto(self._buffers[INPUT_NAMES[1]], past)
        self.session.run_with_iobinding(self._binding)
        return self._buffers[OUTPUT_NAMES[0]], self._buffers[OUTPUT_NAMES[1]]


def onnx_runner(source, threads: int = 1):
    """(runner, metadata) of an exported model given as a path or as bytes."""
    if isinstance(source, (bytes, bytearray)):
        proto_bytes, name = bytes(source), "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found")
        proto_bytes, name = path.read_bytes(), str(path)
    meta = read_metadata(proto_bytes, name)
    return OnnxStepRunner(proto_bytes, meta, threads=threads), meta
