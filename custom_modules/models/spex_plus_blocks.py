"""Building blocks of SpEx+ (see :mod:`custom_modules.models.spex_plus`).

Layout ``(batch, channels, frames)`` throughout. Normalisations use torch's
built-ins: gLN is ``GroupNorm(1, C)`` (statistics over channels and frames per
utterance, per-channel gain and bias), cLN is ``LayerNorm`` over channels at
every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at every frame (cLN) of a ``(batch, channels, frames)`` tensor.

    Example
    -------
    >>> norm = ChannelLayerNorm(8)
    >>> y = norm(torch.randn(2, 8, 5) * 3 + 1)
    >>> y.shape, bool(y.mean(dim=1).abs().max() < 1e-5)
    (torch.Size([2, 8, 5]), True)
    """

    def __init__(self, num_channels, eps=1e-8):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x):
        """Normalise ``x`` (batch, channels, frames)."""
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def global_layer_norm(num_channels, eps=1e-8):
    """gLN: statistics over channels and frames of each utterance, per-channel gain/bias.

    Example
    -------
    >>> y = global_layer_norm(4)(torch.randn(3, 4, 10) + 5)
    >>> bool(y.mean(dim=(1, 2)).abs().max() < 1e-5)
    True
    """
    return nn.GroupNorm(1, num_channels, eps=eps)


class MultiScaleEncoder(nn.Module):
    """Three 1-D convolutional encoders (short, middle, long windows) with a common stride.

    Arguments
    ---------
    num_filters : int
        Filters per scale (``N``).
    kernel_sizes : tuple of int
        Window lengths in samples, shortest first (paper at 16 kHz: 40, 160, 320).
    stride : int, optional
        Frame shift (default: half the shortest window).

    Example
    -------
    >>> encoder = MultiScaleEncoder(num_filters=16, kernel_sizes=(8, 16, 32))
    >>> [tuple(w.shape) for w in encoder(torch.randn(2, 101))]
    [(2, 16, 25), (2, 16, 25), (2, 16, 25)]
    >>> encoder.num_frames(101)
    25
    """

    def __init__(self, num_filters=256, kernel_sizes=(40, 160, 320), stride=None):
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if len(kernel_sizes) != 3 or list(kernel_sizes) != sorted(kernel_sizes):
            raise ValueError(f"kernel_sizes must be 3 increasing lengths, got {kernel_sizes}")
        self.kernel_sizes = kernel_sizes
        self.stride = int(stride) if stride is not None else kernel_sizes[0] // 2
        if not 0 < self.stride <= kernel_sizes[0]:
            raise ValueError(f"stride {self.stride} must be in [1, {kernel_sizes[0]}]")
        self.convs = nn.ModuleList(
            nn.Conv1d(1, num_filters, k, stride=self.stride) for k in kernel_sizes
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples (at least one)."""
        short = self.kernel_sizes[0]
        return max(0, -(-(num_samples - short) // self.stride)) + 1

    def forward(self, waveform):
        """(batch, samples) -> list of three (batch, N, frames) ReLU encodings."""
        frames = self.num_frames(waveform.shape[-1])
        covered = (frames - 1) * self.stride + self.kernel_sizes[0]
        encoded = []
        for conv, kernel in zip(self.convs, self.kernel_sizes, strict=True):
            # Longer windows see (kernel - short) more zeros at the end, so that
            # frame k of every scale starts at sample k * stride.
            pad = covered - waveform.shape[-1] + kernel - self.kernel_sizes[0]
            encoded.append(F.relu(conv(F.pad(waveform, (0, pad)).unsqueeze(1))))
        return encoded


class ResBlock(nn.Module):
    """Speaker-encoder ResNet block: (1x1 conv, BN, PReLU, 1x1 conv, BN) + skip, PReLU, max-pool.

    Example
    -------
    >>> ResBlock(8, 16)(torch.randn(2, 8, 30)).shape
    torch.Size([2, 16, 10])
    """

    def __init__(self, in_channels, out_channels, pool_size=3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.PReLU(),
            nn.Conv1d(out_channels, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.skip = (
            nn.Conv1d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.activation = nn.PReLU()
        self.pool = nn.MaxPool1d(pool_size)
        self.pool_size = pool_size

    def forward(self, x):
        """(batch, in_channels, frames) -> (batch, out_channels, frames // pool_size)."""
        return self.pool(self.activation(self.body(x) + self.skip(x)))


class SpeakerEncoder(nn.Module):
    """Reference encodings (3N channels) -> speaker embedding (D), averaged over valid frames.

    Arguments
    ---------
    in_channels : int
        ``3 * N``.
    hidden_channels : int
        Output of the first 1x1 conv (paper: 256).
    block_channels : tuple of int
        Output channels of the ResNet blocks (paper: 256, 512, 512).
    embedding_dim : int
        ``D`` (paper: 256).

    Example
    -------
    >>> enc = SpeakerEncoder(24, hidden_channels=8, block_channels=(8, 16), embedding_dim=6)
    >>> enc(torch.randn(2, 24, 40), torch.tensor([40, 20])).shape
    torch.Size([2, 6])
    """

    def __init__(self, in_channels, hidden_channels=256, block_channels=(256, 512, 512),
                 embedding_dim=256, pool_size=3):  # fmt: skip
        super().__init__()
        self.input = nn.Sequential(
            ChannelLayerNorm(in_channels), nn.Conv1d(in_channels, hidden_channels, 1)
        )
        widths = [hidden_channels, *block_channels]
        self.blocks = nn.ModuleList(
            ResBlock(a, b, pool_size) for a, b in zip(widths[:-1], widths[1:], strict=False)
        )
        self.output = nn.Conv1d(widths[-1], embedding_dim, 1)
        self.pool_size = pool_size

    @property
    def min_frames(self) -> int:
        """Fewest input frames that leave one frame after the max-pools."""
        return self.pool_size ** len(self.blocks)

    def forward(self, encoded, num_frames):
        """Embedding of ``encoded`` (batch, 3N, frames) with ``num_frames`` (batch,) valid frames."""
        x = self.input(encoded)
        valid = num_frames.to(encoded.device).long()
        for block in self.blocks:
            x = block(x)
            valid = torch.div(valid, block.pool_size, rounding_mode="floor")
        x = self.output(x)
        # Mean over the frames computed from real samples only (padding excluded).
        valid = valid.clamp(1, x.shape[-1])
        mask = (torch.arange(x.shape[-1], device=x.device) < valid.unsqueeze(1)).to(x.dtype)
        return (x * mask.unsqueeze(1)).sum(dim=-1) / valid.unsqueeze(1).to(x.dtype)


class TCNBlock(nn.Module):
    """Dilated depthwise-separable TCN block with a residual; optionally takes an embedding.

    ``y = x + conv_out(gLN(PReLU(dconv(gLN(PReLU(conv_in([x; v])))))))`` where
    ``v`` (when ``embedding_dim > 0``) is repeated over frames.

    Example
    -------
    >>> block = TCNBlock(8, 16, dilation=4, embedding_dim=5)
    >>> block(torch.randn(2, 8, 30), torch.randn(2, 5)).shape
    torch.Size([2, 8, 30])
    """

    def __init__(self, channels, hidden_channels, kernel_size=3, dilation=1, embedding_dim=0):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-length output), got {kernel_size}")
        self.embedding_dim = embedding_dim
        self.net = nn.Sequential(
            nn.Conv1d(channels + embedding_dim, hidden_channels, 1),
            nn.PReLU(),
            global_layer_norm(hidden_channels),
            nn.Conv1d(
                hidden_channels,
                hidden_channels,
                kernel_size,
                dilation=dilation,
                padding=dilation * (kernel_size - 1) // 2,
                groups=hidden_channels,
            ),
            nn.PReLU(),
            global_layer_norm(hidden_channels),
            nn.Conv1d(hidden_channels, channels, 1),
        )

    def forward(self, x, embedding=None):
        """(batch, channels, frames) [+ (batch, embedding_dim)] -> (batch, channels, frames)."""
        if self.embedding_dim:
            if embedding is None:
                raise ValueError("this TCN block needs the speaker embedding")
            repeated = embedding.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            return x + self.net(torch.cat([x, repeated], dim=1))
        return x + self.net(x)


class SpeakerExtractor(nn.Module):
    """Mixture encodings + speaker embedding -> three ReLU masks.

    Example
    -------
    >>> ext = SpeakerExtractor(4, bottleneck_channels=8, hidden_channels=16,
    ...                        embedding_dim=6, num_stacks=2, blocks_per_stack=3)
    >>> masks = ext([torch.randn(2, 4, 30)] * 3, torch.randn(2, 6))
    >>> [tuple(m.shape) for m in masks]
    [(2, 4, 30), (2, 4, 30), (2, 4, 30)]
    """

    def __init__(self, num_filters, bottleneck_channels=256, hidden_channels=512,
                 embedding_dim=256, num_stacks=4, blocks_per_stack=8, kernel_size=3):  # fmt: skip
        super().__init__()
        self.input = nn.Sequential(
            ChannelLayerNorm(3 * num_filters), nn.Conv1d(3 * num_filters, bottleneck_channels, 1)
        )
        self.stacks = nn.ModuleList(
            nn.ModuleList(
                TCNBlock(
                    bottleneck_channels,
                    hidden_channels,
                    kernel_size,
                    dilation=2**b,
                    embedding_dim=embedding_dim if b == 0 else 0,
                )
                for b in range(blocks_per_stack)
            )
            for _ in range(num_stacks)
        )
        self.mask_heads = nn.ModuleList(
            nn.Conv1d(bottleneck_channels, num_filters, 1) for _ in range(3)
        )

    def forward(self, encoded, embedding):
        """List of three (batch, N, frames) encodings + (batch, D) -> list of three masks."""
        x = self.input(torch.cat(encoded, dim=1))
        for stack in self.stacks:
            x = stack[0](x, embedding)
            for block in stack[1:]:
                x = block(x)
        return [F.relu(head(x)) for head in self.mask_heads]
