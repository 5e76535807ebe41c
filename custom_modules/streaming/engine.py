"""Real-time UNet-TCM enhancer: one 10 ms chunk (160 samples at 16 kHz) in, one out.

``StreamingEnhancer`` chains the streaming STFT (``stft.py``), the fused
one-frame step with its TCM history (``fused.py``, ``history.py``) and the
overlap-add synthesis. The step runs in eager PyTorch (``backend="eager"``),
as an ONNX graph under onnxruntime (``backend="onnx"``, see ``export.py``)
or as C compiled for this CPU (``backend="native"``, see ``native.py``; the
fastest); all compute the same function.
When the model normalises the level (``ComplexSpectralMapping(...,
level_normalization=True)``, as the recipes do), ``RunningLevel`` keeps the
causal running level (two numbers of state) and scales each frame in and out
around the step, exactly as ``ComplexSpectralMapping.frame_scale``.

Latency (defaults: 320-sample = 20 ms window, 160-sample hop, 16 kHz)
---------------------------------------------------------------------
* The concatenated output chunks equal the offline model's output
  (``ComplexSpectralMapping`` with ``delay_output=False``) delayed by
  ``latency_samples = 159`` samples (9.94 ms): chunk ``c`` (input samples
  ``[160c, 160c + 160)``) returns offline samples ``[160c - 159, 160c]``.
  The offline output at ``t`` needs input up to ``t + 318`` (the model's
  ``lookahead``), which is the newest sample of the chunk for ``t = 160c - 159``.
* ``algorithmic_latency_samples = 319`` (19.94 ms): from an input sample
  entering a real-time loop to the same sample leaving it, when every output
  chunk is played during the hop after its input chunk was captured (chunk
  buffering, 160 samples, plus the 159-sample delay). This is the 20 ms
  window minus the periodic Hann window's zero first sample. Processing time
  comes on top and must stay below the 10 ms hop.

Example
-------
>>> from custom_modules.models.unet_tcm import ComplexSpectralMapping, UNetEngine
>>> engine = UNetEngine(num_layers=2, channels=4, bottleneck_dim=8, tcm_hidden=4,
...                     tcm_dilations=(1, 2), tcm_repeats=1)
>>> enhancer = StreamingEnhancer.from_model(ComplexSpectralMapping(engine).eval())
>>> enhancer.chunk_size, enhancer.latency_samples, enhancer.algorithmic_latency_samples
(160, 159, 319)
>>> enhancer.process_chunk(np.zeros(160, dtype=np.float32)).shape
(160,)
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from custom_modules.models.unet_tcm import COMPRESS_CEILING, COMPRESS_FLOOR, LEVEL_FLOOR
from custom_modules.streaming.fused import FusedUNetStep
from custom_modules.streaming.history import TcmHistory
from custom_modules.streaming.stft import StreamingISTFT, StreamingSTFT

BACKENDS = ("eager", "onnx", "native")


class RunningLevel:
    """Causal frame level of ``ComplexSpectralMapping.frame_scale``, one frame at a time.

    ``average = d * average + (1 - d) * power`` (power: the frame's mean
    squared real/imag value) and ``weight = d * weight + (1 - d)`` (the bias
    correction); the level is ``sqrt(average / weight + floor)``. Float32, as
    the offline recursion.

    Example
    -------
    >>> level = RunningLevel(decay=0.9)
    >>> frame = np.full((161, 2), 2.0, dtype=np.float32)
    >>> round(float(level.update(frame)), 4)  # the first frame is its own average
    2.0
    """

    def __init__(self, decay: float, floor: float = LEVEL_FLOOR):
        self.decay = np.float32(decay)
        self.gain = np.float32(1.0 - decay)
        self.floor = np.float32(floor)
        self.reset()

    def reset(self) -> None:
        self._average = np.float32(0.0)
        self._weight = 0.0  # float64: 1 - decay**frames

    def update(self, frame: np.ndarray) -> np.float32:
        """Level of this frame (after adding it to the running average)."""
        flat = frame.reshape(-1)
        power = np.float32(np.dot(flat, flat) / np.float32(flat.size))  # mean square (fast)
        self._average = np.float32(self.gain * power + self.decay * self._average)
        self._weight = float(self.decay) * self._weight + float(self.gain)
        return np.sqrt(np.float32(self._average / np.float32(self._weight)) + self.floor)


def _compress(spec: np.ndarray, exponent: float) -> np.ndarray:
    """``ComplexSpectralMapping.compress`` of one frame (freqs, 2), float32."""
    if exponent == 1.0:
        return spec
    magnitude = np.sqrt(np.einsum("fc,fc->f", spec, spec) + np.float32(COMPRESS_FLOOR))
    factor = np.power(
        np.minimum(magnitude, np.float32(COMPRESS_CEILING)), np.float32(exponent - 1.0)
    )
    return spec * factor[:, None].astype(np.float32)


class TorchStepRunner:
    """Runs a ``FusedUNetStep`` on numpy arrays (eager PyTorch, inference mode).

    PyTorch's thread count is the caller's choice (``torch.set_num_threads``);
    one thread is fastest for one frame at a time.
    """

    def __init__(self, step: FusedUNetStep):
        self.step = step
        if torch.get_num_threads() > 1:
            warnings.warn(
                f"eager streaming runs one small frame at a time: torch.set_num_threads(1) is "
                f"faster than the current {torch.get_num_threads()} threads",
                stacklevel=3,
            )

    def __call__(self, spec: np.ndarray, past: np.ndarray):
        with torch.inference_mode():
            out, present = self.step(torch.from_numpy(spec), torch.from_numpy(past))
        return out.numpy(), present.numpy()


class StreamingEnhancer:
    """Chunk-by-chunk UNet-TCM enhancement with a fixed latency.

    Build it with ``from_model``, ``from_run``, ``from_pretrained`` or ``from_onnx``; the
    constructor takes the parts.

    Arguments
    ---------
    runner : callable
        ``runner(spec (F, 2) float32, past) -> (enhanced spec (F, 2), present)``
        (see ``FusedUNetStep``); its outputs may be reused buffers, valid until
        the next call.
    history : TcmHistory
        State of the TCM convolutions (its ``past_shape`` matches the runner).
    n_fft, win_length, hop_length : int
        Framing of the offline model.
    sample_rate : int
        Rate of the audio (for the figures in ms; nothing is resampled).
    level : RunningLevel, optional
        Level normalisation of the model (None when it has none).
    compress_exponent : float
        The model's power-law compression around the engine (1.0: none).
    estimate : str
        What the engine outputs: ``"mapping"`` (the spectrum) or ``"mask"``.
    """

    def __init__(
        self,
        runner,
        history: TcmHistory,
        n_fft=320,
        win_length=None,
        hop_length=None,
        sample_rate=16000,
        level=None,
        compress_exponent=1.0,
        estimate="mapping",
    ):
        self.runner = runner
        self.estimate = estimate
        self.history = history
        self.level = level
        self.compress_exponent = float(compress_exponent)
        self.stft = StreamingSTFT(n_fft, win_length, hop_length)
        self.istft = StreamingISTFT(n_fft, win_length, hop_length)
        self.sample_rate = sample_rate
        self._silence = np.zeros(self.chunk_size, dtype=np.float32)

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_model(cls, model, backend: str = "eager", sample_rate: int = 16000):
        """Streaming version of a ``ComplexSpectralMapping`` (UNet-TCM) model.

        The weights are copied (the model is not modified; CPU, float32,
        eval-mode semantics). The output stream relates to the time-aligned
        offline output (``delay_output=False``), whatever the model's setting.
        ``backend="onnx"`` exports the step in memory and runs it under
        onnxruntime with one thread; ``"native"`` runs it as compiled C (one
        thread; compiled on first use, see ``native.py``); ``"eager"`` runs it
        in PyTorch with the caller's thread setting (use
        ``torch.set_num_threads(1)``).
        """
        for name in ("engine", "n_fft", "win_length", "hop_length"):
            if not hasattr(model, name):
                raise TypeError(
                    f"expected a ComplexSpectralMapping (UNet-TCM) model, got "
                    f"{type(model).__name__} without .{name}"
                )
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if backend == "onnx":
            from custom_modules.streaming.onnx_step import export_model

            return cls.from_onnx(export_model(model, sample_rate))
        step = FusedUNetStep(model.engine)
        if backend == "native":
            from custom_modules.streaming.native import NativeStepRunner

            runner = NativeStepRunner(step)
        else:
            runner = TorchStepRunner(step)
        framing = dict(n_fft=model.n_fft, win_length=model.win_length, hop_length=model.hop_length)
        level_decay = model.norm_decay if getattr(model, "level_normalization", False) else None
        return cls(
            runner,
            TcmHistory(**step.history_config()),
            sample_rate=sample_rate,
            level=None if level_decay is None else RunningLevel(level_decay),
            compress_exponent=getattr(model, "compress_exponent", 1.0),
            estimate=getattr(model, "estimate", "mapping"),
            **framing,
        )

    @classmethod
    def from_run(cls, run_folder, backend: str = "eager", checkpoint_key=None):
        """Load the best checkpoint of a training run (``custom_modules.inference.run_loading``)."""
        from custom_modules.inference.run_loading import load_run

        loaded = load_run(run_folder, device="cpu", checkpoint_key=checkpoint_key)
        return cls.from_model(loaded.model, backend=backend, sample_rate=loaded.sample_rate)

    @classmethod
    def from_pretrained(cls, folder, backend: str = "eager"):
        """Load a pretrained folder (``python -m custom_modules.export``) of a UNet-TCM."""
        from custom_modules.inference.pretrained import (
            PretrainedFolderError,
            load_pretrained,
            network_of,
        )

        interface = load_pretrained(folder, device="cpu")
        model = network_of(interface)
        if not hasattr(model, "engine"):
            raise PretrainedFolderError(
                f"{folder}: a {type(model).__name__}, not a streamable UNet-TCM "
                "(ComplexSpectralMapping)"
            )
        return cls.from_model(
            model, backend=backend, sample_rate=int(interface.hparams.sample_rate)
        )

    @classmethod
    def from_onnx(cls, source):
        """Enhancer running an exported step (path or bytes of a ``.onnx`` file) in onnxruntime."""
        from custom_modules.streaming.onnx_step import onnx_runner

        runner, meta = onnx_runner(source)
        return cls(
            runner,
            TcmHistory(**meta["history"]),
            n_fft=meta["n_fft"],
            win_length=meta["win_length"],
            hop_length=meta["hop_length"],
            sample_rate=meta["sample_rate"],
            level=None if meta["level_decay"] is None else RunningLevel(meta["level_decay"]),
            compress_exponent=meta.get("compress_exponent", 1.0),
            estimate=meta.get("estimate", "mapping"),
        )

    # ---- properties -----------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        """Samples per chunk (the STFT hop)."""
        return self.stft.hop_length

    @property
    def latency_samples(self) -> int:
        """Delay of the output stream relative to the offline output (159 by default)."""
        return self.istft.delay

    @property
    def algorithmic_latency_samples(self) -> int:
        """Input-to-playback latency of a real-time loop: ``latency_samples + chunk_size``."""
        return self.latency_samples + self.chunk_size

    # ---- processing -----------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new signal (clears the framing buffers, the TCM history and the level)."""
        self.stft.reset()
        self.istft.reset()
        self.history.reset()
        if self.level is not None:
            self.level.reset()

    def process_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Enhance one chunk of ``chunk_size`` samples; returns ``chunk_size`` samples (float32).

        The output is the offline output delayed by ``latency_samples``.
        """
        chunk = np.asarray(chunk)
        if chunk.shape != (self.chunk_size,):
            raise ValueError(f"expected a chunk of shape ({self.chunk_size},), got {chunk.shape}")
        if not np.isfinite(chunk).all():
            raise ValueError("the chunk contains NaN or Inf samples")
        frame = self.stft.push(chunk)
        if frame is None:  # the first frame is not complete yet (only when n_fft/2 > hop)
            return self._silence.copy()
        # As ComplexSpectralMapping.forward: expand(engine(compress(spec / level))) * level.
        level = None if self.level is None else self.level.update(frame)
        spec = frame if level is None else frame / level
        spec = _compress(spec, self.compress_exponent)
        out, present = self.runner(spec, self.history.past())
        if self.estimate == "mask":  # complex ratio mask times the engine's input
            out = np.stack(
                [
                    out[:, 0] * spec[:, 0] - out[:, 1] * spec[:, 1],
                    out[:, 0] * spec[:, 1] + out[:, 1] * spec[:, 0],
                ],
                axis=1,
            )
        out = _compress(out, 1.0 / self.compress_exponent)
        if level is not None:
            out = out * level
        self.history.push(present)
        return self.istft.push(out)

    def flush(self) -> np.ndarray:
        """The ``latency_samples`` output samples still owed for the input so far; then reset.

        Zeros are pushed to complete the last frames, as the offline model
        zero-pads the end of a signal.
        """
        tail_chunks = math.ceil(self.latency_samples / self.chunk_size)
        tail = [self.process_chunk(self._silence) for _ in range(tail_chunks)]
        self.reset()
        return np.concatenate(tail)[: self.latency_samples] if tail else self._silence[:0].copy()

    def enhance(self, signal: np.ndarray) -> np.ndarray:
        """Stream a whole signal chunk by chunk; return it time-aligned (same length, float32).

        Equals the offline model's output (to float rounding). Resets first and after.
        """
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1 or signal.size == 0:
            raise ValueError(f"expected a non-empty 1-D signal, got shape {signal.shape}")
        self.reset()
        hop = self.chunk_size
        padded = np.zeros(math.ceil(signal.size / hop) * hop, dtype=np.float32)
        padded[: signal.size] = signal
        pieces = [self.process_chunk(chunk) for chunk in padded.reshape(-1, hop)]
        pieces.append(self.flush())
        return np.concatenate(pieces)[self.latency_samples : self.latency_samples + signal.size]
