"""Real-time (chunk-by-chunk) UNet-TCM: streaming STFT, fused one-frame step, ONNX export.

See ``engine.py`` for the latency figures and ``README.md`` for commands and
measured speed. Main entry point: ``StreamingEnhancer``.
"""

from custom_modules.streaming.engine import StreamingEnhancer
from custom_modules.streaming.fused import FusedUNetStep
from custom_modules.streaming.history import TcmHistory
from custom_modules.streaming.stft import StreamingISTFT, StreamingSTFT, stream_delay_samples

__all__ = [
    "FusedUNetStep",
    "StreamingEnhancer",
    "StreamingISTFT",
    "StreamingSTFT",
    "TcmHistory",
    "stream_delay_samples",
]
