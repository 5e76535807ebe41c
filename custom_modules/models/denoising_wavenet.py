"""Denoising WaveNet: a non-causal WaveNet on the raw waveform that predicts target fields.

Rethage, Pons, Serra, "A Wavenet for Speech Denoising", ICASSP 2018 (arXiv 1706.07162).

* Input: one waveform channel, projected to ``residual_channels`` by a
  ``input_kernel_size``-tap convolution.
* ``num_stacks`` stacks of residual layers with the dilations ``dilations``
  (the paper: 3 stacks of 1, 2, ..., 512). Each layer: a non-causal
  ``kernel_size``-tap dilated convolution to ``2 * residual_channels``, the
  gated unit ``tanh(f) * sigmoid(g)``, then a 1x1 convolution to the
  residual path (added to the layer's input) and a 1x1 convolution to
  ``skip_channels`` (the skip connection).
* Output: ReLU of the sum of all skip connections, two undilated
  ``output_kernel_size``-tap convolutions (``output_channels``, the paper's
  2048 and 256) separated by a ReLU, and a 1x1 projection to one channel:
  real-valued samples, no mu-law or softmax.

All convolutions are *valid* (no padding): an input fragment of ``n``
samples yields its ``n - receptive_field + 1`` central samples, the target
field, each computed from exactly ``receptive_field`` input samples centred on
it. Every layer runs only on what the target field needs. The receptive
field counts every convolution:
``1 + (input_kernel_size - 1) + num_stacks * sum(dilations) * (kernel_size - 1)
+ 2 * (output_kernel_size - 1)`` = 6,145 samples in the paper configuration
(the paper's 6,139 counts the dilated stacks only).

Two modes (``forward(x, mode=...)``):

* ``"valid"``: one pass over the given fragments, returning their target
  fields (training on fixed-size fragments);
* ``"same"`` (default): a whole signal of any length, zero-padded by
  ``lookahead = (receptive_field - 1) // 2`` samples on both sides and cut
  into overlapping fragments of ``target_field + receptive_field - 1``
  samples (hop ``target_field``), ``max_fragments`` of them per network pass:
  working memory is bounded by the fragment size, not the signal length.
  The result equals a ``"valid"`` pass over the whole padded signal (the
  convolutions are shift-invariant), to float rounding.

Speaker conditioning of the paper is left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAPER_DILATIONS = tuple(2**i for i in range(10))  # 1, 2, ..., 512


def _check_odd(name: str, value: int) -> int:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd number (symmetric context), got {value}")
    return int(value)


def center_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    """The central ``length`` samples of the last axis (the surplus is even).

    Example
    -------
    >>> center_crop(torch.arange(7.0), 3)
    tensor([2., 3., 4.])
    """
    offset = (x.shape[-1] - length) // 2
    return x[..., offset : offset + length]


class ResidualLayer(nn.Module):
    """One gated, dilated residual layer (valid convolution).

    Arguments
    ---------
    residual_channels, skip_channels : int
        Channels of the residual path and of the skip output.
    kernel_size, dilation : int
        Of the non-causal dilated convolution.
    residual : bool
        False for the last layer, whose residual output nothing reads (no
        parameter without a gradient): ``forward`` then returns ``None`` for it.

    ``forward(x)`` maps ``(batch, residual_channels, n)`` to the residual
    output ``(batch, residual_channels, n - dilation * (kernel_size - 1))``
    and the skip output ``(batch, skip_channels, same length)``.

    Example
    -------
    >>> layer = ResidualLayer(residual_channels=4, skip_channels=6, kernel_size=3, dilation=2)
    >>> residual, skip = layer(torch.zeros(2, 4, 20))
    >>> tuple(residual.shape), tuple(skip.shape)
    ((2, 4, 16), (2, 6, 16))
    """

    def __init__(
        self, residual_channels=128, skip_channels=128, kernel_size=3, dilation=1, residual=True
    ):
        super().__init__()
        self.dilated = nn.Conv1d(
            residual_channels, 2 * residual_channels, kernel_size, dilation=dilation
        )
        self.residual = nn.Conv1d(residual_channels, residual_channels, 1) if residual else None
        self.skip = nn.Conv1d(residual_channels, skip_channels, 1)
        self.context = dilation * (kernel_size - 1)

    def forward(self, x):
        """(residual, skip) outputs, both ``context`` samples shorter than ``x``."""
        filt, gate = self.dilated(x).chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        if self.residual is None:
            return None, self.skip(z)
        return self.residual(z) + center_crop(x, z.shape[-1]), self.skip(z)


class DenoisingWaveNet(nn.Module):
    """Non-causal WaveNet mapping a noisy waveform to the clean one (module docstring).

    Arguments
    ---------
    num_stacks : int
        Repetitions of the dilation pattern (paper: 3).
    dilations : sequence of int
        Dilations of one stack (paper: 1, 2, ..., 512).
    residual_channels, skip_channels : int
        Paper: 128 and 128.
    output_channels : sequence of two ints
        Channels of the two output convolutions (paper: 2048, 256).
    kernel_size, input_kernel_size, output_kernel_size : int
        Odd tap counts of the dilated, input and output convolutions (paper: 3).
    target_field : int
        Samples predicted per fragment in ``"same"`` mode (whole signals).
    max_fragments : int
        Fragments per network pass in ``"same"`` mode (bounds the memory).

    ``forward(x, mode="same")``: ``x`` is ``(batch, samples)``; returns
    ``(batch, samples)``. ``mode="valid"``: ``x`` needs at least
    ``receptive_field`` samples; returns ``(batch, samples - receptive_field + 1)``.

    Example
    -------
    >>> net = DenoisingWaveNet(num_stacks=2, dilations=[1, 2], residual_channels=4,
    ...                        skip_channels=4, output_channels=[8, 4], target_field=50)
    >>> net.receptive_field  # 1 + 2 + 2 * (1 + 2) * 2 + 2 * 2
    19
    >>> tuple(net(torch.randn(3, 120)).shape)
    (3, 120)
    >>> tuple(net(torch.randn(3, 120), mode="valid").shape)
    (3, 102)
    """

    def __init__(
        self,
        num_stacks=3,
        dilations=PAPER_DILATIONS,
        residual_channels=128,
        skip_channels=128,
        output_channels=(2048, 256),
        kernel_size=3,
        input_kernel_size=3,
        output_kernel_size=3,
        target_field=16000,
        max_fragments=4,
    ):
        super().__init__()
        kernel_size = _check_odd("kernel_size", kernel_size)
        input_kernel_size = _check_odd("input_kernel_size", input_kernel_size)
        output_kernel_size = _check_odd("output_kernel_size", output_kernel_size)
        if num_stacks < 1 or not dilations or min(dilations) < 1:
            raise ValueError(
                f"need num_stacks >= 1 and dilations >= 1, got {num_stacks}, {dilations}"
            )
        if len(output_channels) != 2:
            raise ValueError(f"output_channels needs two sizes, got {output_channels}")
        if target_field < 1 or max_fragments < 1:
            raise ValueError(
                f"target_field and max_fragments must be >= 1, got {target_field}, {max_fragments}"
            )
        self.target_field = int(target_field)
        self.max_fragments = int(max_fragments)
        self.input_conv = nn.Conv1d(1, residual_channels, input_kernel_size)
        schedule = [int(d) for _ in range(num_stacks) for d in dilations]
        self.layers = nn.ModuleList(
            ResidualLayer(
                residual_channels, skip_channels, kernel_size, d, residual=i < len(schedule) - 1
            )
            for i, d in enumerate(schedule)
        )
        first, second = output_channels
        self.output = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(skip_channels, first, output_kernel_size),
            nn.ReLU(),
            nn.Conv1d(first, second, output_kernel_size),
            nn.Conv1d(second, 1, 1),
        )
        self.receptive_field = (
            input_kernel_size
            + sum(layer.context for layer in self.layers)
            + 2 * (output_kernel_size - 1)
        )

    @property
    def lookahead(self) -> int:
        """Future (and past) input samples one output sample depends on: ``(rf - 1) // 2``.

        ``custom_modules.inference.enhance`` places its chunk crossfade by it,
        so chunked files equal whole-file processing.
        """
        return (self.receptive_field - 1) // 2

    @property
    def fragment_length(self) -> int:
        """Input samples of one ``"same"``-mode fragment: ``target_field + rf - 1``."""
        return self.target_field + self.receptive_field - 1

    def target_fields(self, fragments: torch.Tensor) -> torch.Tensor:
        """The network: ``(batch, n)`` fragments -> ``(batch, n - rf + 1)`` target fields."""
        if fragments.shape[-1] < self.receptive_field:
            raise ValueError(
                f"fragments of {fragments.shape[-1]} samples are shorter than the "
                f"receptive field ({self.receptive_field})"
            )
        h = self.input_conv(fragments.unsqueeze(1))
        skips = []
        for layer in self.layers:
            h, skip = layer(h)
            skips.append(skip)
        total = sum(center_crop(skip, skips[-1].shape[-1]) for skip in skips)
        return self.output(total).squeeze(1)

    def center(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """Cut ``(batch, n)`` signals to the samples a ``"valid"`` pass predicts.

        Returns ``(x[:, lookahead : n - lookahead], lengths)`` with the
        relative ``lengths`` (SpeechBrain convention) recomputed for the
        cut signals: an output counts while its centre sample is valid.

        Example
        -------
        >>> net = DenoisingWaveNet(num_stacks=1, dilations=[1], residual_channels=2,
        ...                        skip_channels=2, output_channels=[2, 2])
        >>> x, lengths = net.center(torch.ones(2, 20), torch.tensor([1.0, 0.5]))
        >>> tuple(x.shape), lengths.tolist()  # rf 9: 4 samples off each side
        ((2, 12), [1.0, 0.5])
        """
        n = x.shape[-1]
        out = n - self.receptive_field + 1
        cut = center_crop(x, out)
        if lengths is None:
            return cut, None
        valid = (lengths * n).round() - self.lookahead
        return cut, (valid / out).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, mode: str = "same") -> torch.Tensor:
        """Enhance ``(batch, samples)`` waveforms (see the class docstring for the modes)."""
        if x.dim() != 2:
            raise ValueError(f"expected (batch, samples), got shape {tuple(x.shape)}")
        if mode == "valid":
            return self.target_fields(x)
        if mode != "same":
            raise ValueError(f"mode must be 'same' or 'valid', got {mode!r}")
        batch, num_samples = x.shape
        step = self.target_field
        num_fragments = -(-num_samples // step)
        pad_right = num_fragments * step - num_samples + self.lookahead
        padded = F.pad(x, (self.lookahead, pad_right))
        index = [(b, k) for b in range(batch) for k in range(num_fragments)]
        pieces = []
        for start in range(0, len(index), self.max_fragments):
            group = index[start : start + self.max_fragments]
            fragments = torch.stack(
                [padded[b, k * step : k * step + self.fragment_length] for b, k in group]
            )
            pieces.append(self.target_fields(fragments))
        out = torch.cat(pieces).reshape(batch, num_fragments * step)
        return out[:, :num_samples]
