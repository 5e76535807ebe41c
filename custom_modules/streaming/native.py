"""The streaming step compiled for this machine: ``native_step.c`` run through ctypes.

``NativeStepRunner(step)`` packs a ``FusedUNetStep``'s folded weights into
one float32 array (and the layer sizes and gather indices into one int32
"plan"), compiles ``native_step.c`` with the system C compiler on first use
and runs one frame per call: the same function as the eager and ONNX
backends, one call instead of 158-276 onnxruntime nodes (see the package
README for the measured speed).

The shared library is cached in ``$SBE_NATIVE_CACHE`` (default
``~/.cache/sb-enhance/native``) under a hash of the source, the compiler's
version, the flags and this CPU's instruction-set flags: ``-march=native``
code is never loaded on a CPU it was not built for. The compiler is ``$CC``
or ``cc``; without one, building the runner raises a ``RuntimeError`` that
says so (the ``onnx`` backend needs none).

Example
-------
>>> from custom_modules.models.unet_tcm import UNetEngine
>>> engine = UNetEngine(num_freqs=161, num_layers=2, channels=4, bottleneck_dim=8,
...                     tcm_hidden=4, tcm_dilations=(1, 2), tcm_repeats=1).eval()
>>> runner = NativeStepRunner(FusedUNetStep(engine))  # compiles on first use (cached)
>>> out, present = runner(np.zeros((161, 2), np.float32), np.zeros((8, 20), np.float32))
>>> out.shape, present.shape
((161, 2), (8, 4))
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from custom_modules.streaming.fused import FusedUNetStep

SOURCE = Path(__file__).with_name("native_step.c")
PLAN_VERSION = 1  # must match PLAN_VERSION in native_step.c
CFLAGS = ("-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared")


def _cpu_flags() -> str:
    """This CPU's model and instruction-set flags (Linux), else the platform's description."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.split(":")[0].strip() in ("flags", "model name")]
    return "\n".join(sorted(set(keep)))


def _compiler() -> str:
    """Full path of ``$CC`` (default ``cc``); a clear error when there is none."""
    compiler = os.environ.get("CC", "cc")
    path = shutil.which(compiler)
    if path is None:
        raise RuntimeError(
            f"the native streaming backend compiles {SOURCE.name} on first use and needs a C "
            f"compiler: {compiler!r} was not found (install gcc or clang, or set CC); "
            "the 'onnx' backend needs none"
        )
    return path


def cache_folder() -> Path:
    """Where compiled steps are kept: ``$SBE_NATIVE_CACHE`` or ``~/.cache/sb-enhance/native``."""
    return Path(os.environ.get("SBE_NATIVE_CACHE", Path.home() / ".cache/sb-enhance/native"))


def build_library() -> Path:
    """Path of the compiled step for this source, compiler and CPU (compiled if not cached)."""
    compiler = _compiler()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [source, version.encode(), " ".join(CFLAGS).encode(), _cpu_flags().encode(),
             platform.machine().encode()]
        )
    ).hexdigest()[:16]  # fmt: skip
    folder = cache_folder()
    library = folder / f"sbe_unet_step-{key}.so"
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / library.name
        result = subprocess.run(
            [compiler, *CFLAGS, str(SOURCE), "-o", str(built), "-lm"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling {SOURCE} with {compiler} failed (exit {result.returncode}):\n"
                f"{result.stderr.strip()}"
            )
        os.replace(built, library)  # atomic: concurrent builders each install a whole file
    return library


def _load(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library))
    lib.sbe_unet_create.restype = ctypes.c_void_p
    lib.sbe_unet_create.argtypes = [
        ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_char_p,
        ctypes.c_int,
    ]  # fmt: skip
    lib.sbe_unet_step.restype = ctypes.c_int
    lib.sbe_unet_step.argtypes = [ctypes.c_void_p] * 5
    lib.sbe_unet_destroy.restype = None
    lib.sbe_unet_destroy.argtypes = [ctypes.c_void_p]
    return lib


def pack_step(step: FusedUNetStep):
    """(plan int32, weights float32) of ``step`` in the order ``native_step.c`` reads them."""
    plan = [
        PLAN_VERSION, step.num_freqs, step.in_channels, step.num_layers, step.channels,
        step.proj_in[1].shape[1], step.tcm_hidden, step.num_tcms, int(step.tcm_normalise),
        step.past_shape[1],
    ]  # fmt: skip
    weights = []

    def put(*tensors):
        for tensor in tensors:
            if isinstance(tensor, float):
                tensor = torch.tensor([tensor])
            weights.append(tensor.detach().reshape(-1).to(torch.float32))

    for layer, ((index, weight, bias, affine, slopes), (skip_b, skip_w)) in enumerate(
        zip(step.encoder_layers, step.skip_layers, strict=True)
    ):
        k, n = weight.shape
        layer_taps = k // (step.in_channels if layer == 0 else step.channels)
        rows_out = index.numel() // layer_taps
        plan += [rows_out, layer_taps, k, n, int(affine is not None), *index.tolist()]
        put(weight, bias)
        if affine is not None:
            _, scale, shift, eps = affine
            put(scale, shift, float(eps))
        put(slopes, skip_w, skip_b)
    put(step.proj_in[0], step.proj_in[1], step.tcm_b_past, step.tcm_w_past)
    for in_b, in_w, slopes, eps, w_now, out_slopes, out_eps, out_w in step.tcm_layers:
        put(in_b, in_w, slopes, float(eps), w_now, out_slopes, float(out_eps), out_w)
    put(step.proj_out[0], step.proj_out[1])
    for level, (index, weight, bias, out_size, affine, slopes) in enumerate(step.decoder_layers):
        last = level == step.num_layers - 1
        k, n = weight.shape[1:]
        channels = 1 if slopes is None else slopes.shape[2]
        layer_taps = k // step.channels
        plan += [index.numel() // layer_taps, layer_taps, k, n, out_size, channels]
        plan += [int(affine is not None), int(last), *index.tolist()]
        put(weight.transpose(1, 2) if last else weight, bias)  # last: (2, N, K), few columns
        if affine is not None:
            scale, shift, eps = affine
            put(scale, shift, float(eps))
        if not last:
            put(slopes)
    return np.asarray(plan, dtype=np.int32), torch.cat(weights).numpy().copy()


class NativeStepRunner:
    """Runs a ``FusedUNetStep`` as compiled C (same call as ``TorchStepRunner``).

    One thread; the returned arrays are overwritten by the next call.
    """

    def __init__(self, step: FusedUNetStep):
        self.plan, self.weights = pack_step(step)  # kept alive: the handle points into them
        self._lib = _load(build_library())
        message = ctypes.create_string_buffer(256)
        handle = self._lib.sbe_unet_create(
            self.plan.ctypes.data, self.plan.size, self.weights.ctypes.data, self.weights.size,
            message, len(message),
        )  # fmt: skip
        if not handle:
            raise ValueError(f"native step rejected the packed model: {message.value.decode()}")
        self._handle = ctypes.c_void_p(handle)
        # Freed with the runner (and safely at interpreter exit, unlike __del__).
        weakref.finalize(self, self._lib.sbe_unet_destroy, handle)
        self._spec = np.zeros((step.num_freqs, step.in_channels), dtype=np.float32)
        self._past = np.zeros(step.past_shape, dtype=np.float32)
        self._out = np.zeros((step.num_freqs, 2), dtype=np.float32)
        self._present = np.zeros(step.present_shape, dtype=np.float32)
        pointers = (self._spec, self._past, self._out, self._present)
        self._args = [self._handle] + [ctypes.c_void_p(a.ctypes.data) for a in pointers]
        self._step = self._lib.sbe_unet_step

    def __call__(self, spec: np.ndarray, past: np.ndarray):
        np.copyto(self._spec, spec)
        np.copyto(self._past, past)
        self._step(*self._args)
        return self._out, self._present
