"""Spectral mask estimator of the spectral-masking enhancement recipe.

The network follows the SpeechBrain enhancement template (a recurrent mask
estimator on log1p magnitudes, "signal approximation": the masked noisy
features are compared with the clean ones), with a small convolutional
front-end over time and frequency before the recurrent layers:

``log1p |STFT|`` (batch, frames, freqs)
-> [optional per-frame layer norm]
-> Conv2d blocks over (frames, freqs), LeakyReLU
-> linear projection of (channels x freqs) to ``projection_size``
-> LSTM layers (bidirectional unless ``causal``)
-> linear to ``num_freqs`` -> mask activation
-> mask (batch, frames, freqs).

The caller multiplies the mask with the *same* log1p features it fed in, as
``speechbrain.inference.enhancement.SpectralMaskEnhancement`` does, so the
recipe and that inference interface compute the same thing.

Causality
---------
With ``causal=True`` the time padding of the convolutions is on the left only
and the LSTMs are unidirectional, so mask frame ``k`` depends only on feature
frames ``<= k`` (tested). The per-frame layer norm is frame-local. The STFT
framing around the network (SpeechBrain's centred STFT) still looks ahead by
half a window; that is a property of the feature extraction, not of this module.

Padding
-------
``lengths`` (relative, SpeechBrain convention) packs the LSTM input, so the
recurrent part (in both directions) never reads padded frames; the mask is
zero on padded frames. The (normalised) features of padded frames are set to
zero before the convolutions, which is what their own padding reads at the end
of an unpadded item: a padded item gets exactly the mask it gets alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

MASK_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


class MaskNet(nn.Module):
    """CNN + LSTM estimator of a spectral mask from log1p magnitudes.

    Arguments
    ---------
    num_freqs : int
        Frequency bins of the features (``n_fft // 2 + 1``).
    conv_channels : sequence of int
        Output channels of each Conv2d block; empty for no front-end.
    kernel_time : int
        Kernel size over frames (odd when not causal, so padding is symmetric).
    kernel_freq : int
        Kernel size over frequency (odd: "same" padding).
    projection_size : int
        Size of the linear projection feeding the LSTM.
    rnn_size : int
        Hidden units per LSTM direction.
    rnn_layers : int
        Stacked LSTM layers.
    dropout : float
        Dropout between LSTM layers (and before the output layer).
    causal : bool
        Left-only time padding and unidirectional LSTMs.
    input_norm : bool
        Normalise each frame over frequency (layer norm with gain and bias)
        before the network. The mask is still applied to the raw features.
    mask_activation : str
        ``"relu"`` (the template: non-negative, unbounded), ``"sigmoid"``
        (mask in (0, 1)) or ``"softplus"``.

    Example
    -------
    >>> net = MaskNet(num_freqs=65, conv_channels=[4], projection_size=16, rnn_size=8)
    >>> feats = torch.rand(2, 30, 65)
    >>> net(feats).shape
    torch.Size([2, 30, 65])
    >>> net(feats, lengths=torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 30, 65])
    """

    def __init__(
        self,
        num_freqs: int,
        conv_channels=(16, 16),
        kernel_time: int = 3,
        kernel_freq: int = 3,
        projection_size: int = 256,
        rnn_size: int = 256,
        rnn_layers: int = 2,
        dropout: float = 0.0,
        causal: bool = False,
        input_norm: bool = True,
        mask_activation: str = "relu",
    ):
        super().__init__()
        if kernel_freq % 2 == 0:
            raise ValueError(f"kernel_freq must be odd ('same' padding), got {kernel_freq}")
        if not causal and kernel_time % 2 == 0:
            raise ValueError(f"kernel_time must be odd when not causal, got {kernel_time}")
        if mask_activation not in MASK_ACTIVATIONS:
            raise ValueError(
                f"unknown mask_activation {mask_activation!r}; "
                f"expected one of {sorted(MASK_ACTIVATIONS)}"
            )
        if rnn_layers < 1:
            raise ValueError(f"rnn_layers must be >= 1, got {rnn_layers}")
        self.num_freqs = num_freqs
        self.causal = causal
        self.kernel_time = kernel_time
        self.input_norm = nn.LayerNorm(num_freqs) if input_norm else None

        blocks = []
        in_channels = 1
        for out_channels in conv_channels:
            blocks.append(nn.Conv2d(in_channels, out_channels, (kernel_time, kernel_freq)))
            blocks.append(nn.LeakyReLU(0.2))
            in_channels = out_channels
        self.conv = nn.ModuleList(blocks)

        self.projection = nn.Linear(in_channels * num_freqs, projection_size)
        self.rnn = nn.LSTM(
            input_size=projection_size,
            hidden_size=rnn_size,
            num_layers=rnn_layers,
            batch_first=True,
            bidirectional=not causal,
            dropout=dropout if rnn_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        rnn_out = rnn_size * (1 if causal else 2)
        self.output = nn.Linear(rnn_out, num_freqs)
        self.activation = MASK_ACTIVATIONS[mask_activation]()

    def _pad_time_freq(self, x):
        """Pad (batch, channels, frames, freqs) for a 'same'-sized (causal) convolution."""
        freq_pad = (self.conv[0].kernel_size[1] - 1) // 2
        total = self.kernel_time - 1
        left = total if self.causal else total // 2
        return nn.functional.pad(x, (freq_pad, freq_pad, left, total - left))

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Estimate the mask.

        Arguments
        ---------
        feats : torch.Tensor
            ``(batch, frames, num_freqs)`` log1p magnitudes.
        lengths : torch.Tensor, optional
            ``(batch,)`` relative lengths in (0, 1]; ``None`` means all full.

        Returns
        -------
        torch.Tensor
            ``(batch, frames, num_freqs)`` mask (zero on padded frames).
        """
        if feats.dim() != 3 or feats.shape[-1] != self.num_freqs:
            raise ValueError(
                f"expected features of shape (batch, frames, {self.num_freqs}), "
                f"got {tuple(feats.shape)}"
            )
        batch, frames, _ = feats.shape
        x = self.input_norm(feats) if self.input_norm is not None else feats
        # Padded frames are zeroed before every convolution, so they read as
        # its own zero padding: a padded item gets the mask it gets alone.
        keep = torch.ones(batch, frames, dtype=torch.bool, device=feats.device)
        if lengths is not None:
            num_frames = frames_from_relative(lengths, frames).to(feats.device)
            keep = torch.arange(frames, device=feats.device)[None, :] < num_frames[:, None]
        keep = keep[:, None, :, None]  # (batch, 1, frames, 1)
        x = x.unsqueeze(1)
        for layer in self.conv:
            if isinstance(layer, nn.Conv2d):
                x = layer(self._pad_time_freq(x * keep))
            else:
                x = layer(x)
        # (batch, channels, frames, freqs) -> (batch, frames, channels * freqs)
        x = x.permute(0, 2, 1, 3).reshape(batch, frames, -1)
        x = self.projection(x)

        if lengths is None or bool((num_frames == frames).all()):
            x, _ = self.rnn(x)  # nothing to pack
        else:
            packed = pack_padded_sequence(
                x, num_frames.cpu(), batch_first=True, enforce_sorted=False
            )
            x, _ = self.rnn(packed)
            x, _ = pad_packed_sequence(x, batch_first=True, total_length=frames)
        mask = self.activation(self.output(self.dropout(x)))
        if lengths is not None:
            mask = mask * keep[:, 0]
        return mask


def frames_from_relative(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Absolute frame counts (at least 1) from SpeechBrain relative lengths.

    Example
    -------
    >>> frames_from_relative(torch.tensor([1.0, 0.5, 0.0]), 10).tolist()
    [10, 5, 1]
    """
    lengths = torch.as_tensor(lengths, dtype=torch.float32).flatten()
    if torch.any(~torch.isfinite(lengths)) or torch.any(lengths < 0) or torch.any(lengths > 1.0001):
        raise ValueError(f"relative lengths must be in [0, 1], got {lengths.tolist()}")
    return torch.clamp(torch.round(lengths * frames).long(), min=1, max=frames)
