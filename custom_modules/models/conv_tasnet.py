"""Conv-TasNet (Luo & Mesgarani, IEEE/ACM TASLP 2019) assembled from SpeechBrain's blocks.

The learned encoder and decoder are ``speechbrain.lobes.models.dual_path``'s
``Encoder`` (1-D convolution, ``N`` filters of ``L`` samples, stride
``L // 2``, ReLU) and ``Decoder`` (transposed convolution); the separator is
``speechbrain.lobes.models.conv_tasnet.MaskNet`` (bottleneck ``B``, ``R``
repeats of ``X`` dilated depthwise-separable blocks with ``H`` channels and
kernel ``P``). What this module adds is the bookkeeping around them:

* any input length: the mixture is zero-padded at the end to a whole number
  of encoder frames and the estimates are cut back, so the output always has
  exactly the input's length (SpeechBrain's own recipe pads the *output*
  with zeros instead, which silences the last samples);
* the causal switch: ``causal=True`` gives causal dilated convolutions and,
  unless said otherwise, SpeechBrain's channel-wise layer norm "cLN" (it
  normalises each frame on its own; the paper's cLN is the *cumulative*
  layer norm, which SpeechBrain does not provide). Global layer norm (gLN)
  looks at the whole utterance, so it is refused with ``causal=True``.
  (SpeechBrain's causal depthwise convolution with dilation ``d`` sees frames
  ``t - P*d ... t - d``, not ``t`` itself; the residual path carries frame ``t``.)

Differences from the paper that come with SpeechBrain's ``MaskNet`` (as in
SpeechBrain's WSJ0-2mix recipe): blocks have a residual path only (no
separate skip-connection path), and masks are ReLU or softmax (the paper
uses a sigmoid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.conv_tasnet import MaskNet
from speechbrain.lobes.models.dual_path import Decoder, Encoder

NORM_TYPES = ("gLN", "cLN", "BN")


class ConvTasNet(torch.nn.Module):
    """Waveform-in, waveforms-out Conv-TasNet: ``(batch, samples)`` -> ``(batch, samples, C)``.

    Arguments
    ---------
    N : int
        Encoder filters (basis signals).
    L : int
        Filter length in samples (the stride is ``L // 2``; ``L >= 2``).
    B : int
        Bottleneck channels of the separator.
    H : int
        Channels of the convolutional blocks.
    P : int
        Kernel size of the convolutional blocks.
    X : int
        Blocks per repeat (dilations 1, 2, ..., 2**(X-1)).
    R : int
        Repeats.
    num_sources : int
        Sources to separate (``C``).
    causal : bool
        Causal convolutions (online separation with ``L`` samples of latency).
    norm_type : str, optional
        "gLN", "cLN" or "BN"; default: "cLN" when ``causal`` else "gLN".
    mask_nonlinear : str
        "relu" or "softmax" (over the sources).

    Example
    -------
    >>> model = ConvTasNet(N=16, L=8, B=8, H=16, P=3, X=2, R=1, num_sources=2)
    >>> model(torch.randn(3, 1001)).shape
    torch.Size([3, 1001, 2])
    """

    def __init__(
        self,
        N=512,
        L=16,
        B=128,
        H=512,
        P=3,
        X=8,
        R=3,
        num_sources=2,
        causal=False,
        norm_type=None,
        mask_nonlinear="relu",
    ):
        super().__init__()
        if norm_type is None:
            norm_type = "cLN" if causal else "gLN"
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if causal and norm_type == "gLN":
            raise ValueError(
                "causal=True with norm_type='gLN': global layer norm uses the whole "
                "utterance, so the model would not be causal; use norm_type='cLN'"
            )
        if int(L) < 2:
            raise ValueError(f"L (filter length) must be >= 2 samples, got {L}")
        if int(num_sources) < 1:
            raise ValueError(f"num_sources must be >= 1, got {num_sources}")
        if mask_nonlinear not in ("relu", "softmax"):
            raise ValueError(f"mask_nonlinear must be 'relu' or 'softmax', got {mask_nonlinear!r}")
        self.kernel_size = int(L)
        self.stride = int(L) // 2
        self.num_sources = int(num_sources)
        self.causal = bool(causal)
        self.norm_type = norm_type
        # SpeechBrain's non-causal blocks pad with reflection, which needs more
        # frames than the widest padding (largest dilation * (P - 1) / 2).
        self.min_frames = 1 if self.causal else 2 ** (int(X) - 1) * (int(P) - 1) // 2 + 1
        self.encoder = Encoder(kernel_size=self.kernel_size, out_channels=N)
        self.mask_net = MaskNet(
            N, B, H, P, X, R, self.num_sources, norm_type, self.causal, mask_nonlinear
        )
        self.decoder = Decoder(
            in_channels=N,
            out_channels=1,
            kernel_size=self.kernel_size,
            stride=self.stride,
            bias=False,  # silence in, silence out (zero padding stays zero)
        )

    def padded_length(self, num_samples: int) -> int:
        """Smallest length >= ``num_samples`` made of whole encoder frames (at least ``min_frames``).

        Example
        -------
        >>> ConvTasNet(N=4, L=16, B=4, H=4, X=1, R=1).padded_length(100)
        104
        """
        excess = max(int(num_samples) - self.kernel_size, 0)
        frames = max(-(-excess // self.stride) + 1, self.min_frames)  # ceil division
        return (frames - 1) * self.stride + self.kernel_size

    def forward(self, mixture):
        """Separate ``mixture`` ``(batch, samples)`` into ``(batch, samples, num_sources)``."""
        if mixture.dim() != 2:
            raise ValueError(f"mixture must be (batch, samples), got shape {tuple(mixture.shape)}")
        batch, num_samples = mixture.shape
        padded = F.pad(mixture, (0, self.padded_length(num_samples) - num_samples))
        features = self.encoder(padded)  # (batch, N, frames)
        masks = self.mask_net(features)  # (sources, batch, N, frames)
        masked = features.unsqueeze(0) * masks
        sources, _, channels, frames = masked.shape
        waveforms = self.decoder(masked.reshape(sources * batch, channels, frames))
        waveforms = waveforms.reshape(sources, batch, -1)[..., :num_samples]
        return waveforms.permute(1, 2, 0)
