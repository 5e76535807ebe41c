"""Past inputs of the TCMs' dilated causal convolutions, kept in one ring buffer.

A TCM convolution with kernel ``K`` and dilation ``d`` reads, at frame ``t``,
its inputs at frames ``t - (K-1)d, ..., t - d, t``. ``TcmHistory`` stores the
last ``(K-1) * max(d)`` inputs of every layer and path in one preallocated
array (numpy, no per-frame allocation) and hands them to the step function as
one ``past`` array; the step returns this frame's inputs (``present``), which
``push`` stores. Frames before the signal start read as zeros, as the
offline ``CausalConv1d`` pads.

Each stored row ends with a validity column set to 1 when the row is written:
the ring starts at 0, so a tap before the signal start reads all zeros, and
the step multiplies that column by the bias a real (valid) tap brings (the
shift of the path's normalisation, folded into the convolution; see
``fused.py``).

Keeping the ring on the host side (rather than as a state tensor passed
through the step) means the step only moves the few taps it reads: an ONNX
graph returning an updated ring would copy all of it every frame.

Example
-------
>>> history = TcmHistory(dilations=[1, 2], kernel_size=3, hidden=4, paths=4)
>>> history.past().shape  # (layers * paths, taps * (hidden + 1))
(8, 10)
>>> history.push(np.full((8, 4), 2.0, dtype=np.float32))
>>> history.past()[0].tolist()  # oldest tap (2 frames back) first, then 1 frame back
[0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 1.0]
"""

from __future__ import annotations

import numpy as np


class TcmHistory:
    """Ring buffer of the TCM convolution inputs of every layer and path.

    Arguments
    ---------
    dilations : sequence of int
        Dilation of each TCM layer, in order.
    kernel_size : int
        Kernel of the dilated convolutions (``>= 2``).
    hidden : int
        Channels of one path.
    paths : int
        Convolutions per layer (4 in the dual-branch gated TCM).
    """

    def __init__(self, dilations, kernel_size: int, hidden: int, paths: int = 4):
        dilations = [int(d) for d in dilations]
        if not dilations or min(dilations) < 1 or kernel_size < 2:
            raise ValueError(
                f"need dilations >= 1 and kernel_size >= 2, got {dilations}, {kernel_size}"
            )
        self.dilations, self.kernel_size = dilations, kernel_size
        self.hidden, self.paths = hidden, paths
        taps = kernel_size - 1
        self.length = taps * max(dilations)  # frames kept per layer and path
        rows = len(dilations) * paths
        width = hidden + 1  # + validity column
        # One block of rows per frame slot, so that a frame is written with one slice.
        self._ring = np.zeros((self.length, rows, width), dtype=np.float32)
        frames_back = np.array(
            [[(taps - k) * d for k in range(taps)] for d in dilations for _ in range(paths)]
        )  # (rows, taps), oldest tap first
        # Rows of the flattened ring to read at frame t depend on t mod length only.
        slots = (np.arange(self.length)[:, None, None] - frames_back[None]) % self.length
        self._read_rows = (slots * rows + np.arange(rows)[None, :, None]).reshape(self.length, -1)
        self._past = np.zeros((rows, taps * width), dtype=np.float32)
        self.reset()

    @property
    def past_shape(self) -> tuple:
        return self._past.shape

    def reset(self) -> None:
        """Zero the history (start of a new signal)."""
        self._ring[:] = 0.0
        self._frame = 0

    def past(self) -> np.ndarray:
        """Inputs at the earlier taps of this frame, (rows, taps * (hidden + 1)), oldest first.

        The returned array is reused: it is overwritten by the next call.
        """
        rows = self._read_rows[self._frame % self.length]
        ring = self._ring.reshape(-1, self.hidden + 1)
        np.take(ring, rows, axis=0, out=self._past.reshape(-1, self.hidden + 1))
        return self._past

    def push(self, present: np.ndarray) -> None:
        """Store the current frame's inputs (rows, hidden) and advance one frame."""
        slot = self._ring[self._frame % self.length]
        slot[:, : self.hidden] = present
        slot[:, self.hidden] = 1.0
        self._frame += 1
