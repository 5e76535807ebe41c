"""Deep Complex U-Net (DCUNet) for speech enhancement, waveform in, waveform out.

Choi, Kim, Chung, Kim, Ha, Lee, "Phase-aware Speech Enhancement with Deep
Complex U-Net", ICLR 2019.

* The complex STFT of the noisy waveform (Hann window, ``n_fft`` 1024 and hop
  256 at 16 kHz: the paper's 64 ms window and 16 ms hop) is one complex input
  channel of shape (frequency, time).
* Encoder blocks: complex convolution → complex batch norm → complex leaky
  ReLU; decoder blocks: complex transposed convolution → complex batch norm →
  complex leaky ReLU, each followed by a concatenation with the encoder output
  of the same resolution (the skip connection). The last decoder outputs one
  complex channel ``O`` with neither norm nor activation.
* Bounded-tanh complex ratio mask ``M = tanh(|O|) · O / |O|``: the magnitude
  is bounded by 1, the phase is free. ``estimate = iSTFT(M ⊙ X)``, cropped to
  the input length.

Complex layers (Trabelsi et al., "Deep Complex Networks", ICLR 2018):

* ``ComplexConv2d``: ``(W_r + iW_i)(x_r + ix_i) = (W_r x_r - W_i x_i) +
  i(W_r x_i + W_i x_r)``, the two real kernels being the two halves of the
  output channels of one real convolution (two real convolutions in one call);
* ``ComplexBatchNorm2d``: the whitening batch norm of Trabelsi et al. (the
  paper's choice): each channel's (real, imag) pair is centred and whitened
  with the inverse square root of its 2×2 covariance, then scaled by a
  learned symmetric 2×2 matrix and shifted by a learned complex bias.
  ``norm="naive"`` substitutes two independent real ``BatchNorm2d`` (real and
  imaginary parts normalized separately, no decorrelation);
* complex leaky ReLU: leaky ReLU on the real and imaginary parts
  separately (CReLU-style, as the paper).

They work on "stacked" real tensors, real parts then imaginary parts along
the batch axis (``to_stacked`` / ``from_stacked``): one convolution call per
layer, and concatenation and activation need no special case.

Architectures (``DCUNET_ARCHITECTURES``), from the model-architecture table of
the paper's appendix: encoder layers as (complex output channels, kernel
(frequency, time), stride (frequency, time)); the decoder mirrors the encoder
(transposed convolutions with the same kernel and stride, in reverse order),
its last layer giving the one-channel mask. The table's 45/90 channels are
those of the real-valued networks; the complex-valued networks have 45/√2 ≈ 32
and 90/√2 ≈ 64 complex channels (about the same number of real parameters: a
complex weight is two real ones), as in common implementations (e.g.
Asteroid's DCUNet).

=========  ==============================================================
DCUNet-10  (32, 7×5, 2×2) (64, 7×5, 2×2) (64, 5×3, 2×2) (64, 5×3, 2×2)
           (64, 5×3, 2×1)
DCUNet-16  (32, 7×5, 2×2) (32, 7×5, 2×1) (64, 7×5, 2×2) (64, 5×3, 2×1)
           (64, 5×3, 2×2) (64, 5×3, 2×1) (64, 5×3, 2×2) (64, 5×3, 2×1)
=========  ==============================================================

Padding is ``kernel // 2`` (the output of a stride-2 layer has ``ceil(n / 2)``
bins/frames); each transposed convolution is given the size of its skip
connection, so any number of frequency bins and frames works and the output
waveform always has the input's length.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

# Encoder layers: (complex output channels, kernel (F, T), stride (F, T)); read-only.
DCUNET_ARCHITECTURES = MappingProxyType(
    {
        "DCUNet-10": (
            (32, (7, 5), (2, 2)),
            (64, (7, 5), (2, 2)),
            (64, (5, 3), (2, 2)),
            (64, (5, 3), (2, 2)),
            (64, (5, 3), (2, 1)),
        ),
        "DCUNet-16": (
            (32, (7, 5), (2, 2)),
            (32, (7, 5), (2, 1)),
            (64, (7, 5), (2, 2)),
            (64, (5, 3), (2, 1)),
            (64, (5, 3), (2, 2)),
            (64, (5, 3), (2, 1)),
            (64, (5, 3), (2, 2)),
            (64, (5, 3), (2, 1)),
        ),
    }
)
NORMS = ("complex", "naive")


def to_stacked(x: torch.Tensor) -> torch.Tensor:
    """Complex (batch, ...) -> real (2 * batch, ...): real parts first, then imaginary parts.

    The complex layers of this module work on this layout: a convolution then
    treats real and imaginary parts as a batch of twice the size (one call),
    and channel concatenation and leaky ReLU need no special case.

    Example
    -------
    >>> to_stacked(torch.tensor([[1.0 + 2.0j]]))
    tensor([[1.],
            [2.]])
    """
    return torch.cat([x.real, x.imag], dim=0)


def from_stacked(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_stacked``: real (2 * batch, ...) -> complex (batch, ...).

    Example
    -------
    >>> from_stacked(torch.tensor([[1.0], [2.0]]))
    tensor([[1.+2.j]])
    """
    real, imag = x.chunk(2, dim=0)
    return torch.complex(real, imag)


class ComplexConv2d(nn.Module):
    """Complex 2-D (transposed) convolution ``(W_r + iW_i)(x_r + ix_i)``.

    ``W_r`` and ``W_i`` are the two halves of the output channels of one real
    convolution (the same as two real convolutions, in one call): applied to
    the stacked input it gives ``W_r x_r, W_i x_r, W_r x_i, W_i x_i``, combined
    into ``(W_r x_r - W_i x_i) + i(W_r x_i + W_i x_r)``. The two bias halves
    make a general complex bias.

    Arguments
    ---------
    in_channels, out_channels : int
        Complex channels.
    kernel_size, stride, padding : tuple of int
        As ``torch.nn.Conv2d`` (frequency, time).
    transposed : bool
        Transposed convolution (decoder); ``forward`` then takes the wanted
        output size.

    Example
    -------
    >>> conv = ComplexConv2d(1, 4, (7, 5), (2, 2), (3, 2))
    >>> x = to_stacked(torch.randn(2, 1, 513, 20, dtype=torch.complex64))
    >>> y = conv(x)
    >>> y.shape
    torch.Size([4, 4, 257, 10])
    >>> up = ComplexConv2d(4, 1, (7, 5), (2, 2), (3, 2), transposed=True)
    >>> up(y, output_size=(513, 20)).shape
    torch.Size([4, 1, 513, 20])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, transposed=False):
        super().__init__()
        layer = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.transposed = transposed
        self.out_channels = out_channels
        self.conv = layer(in_channels, 2 * out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        """Stacked (2 * batch, in_channels, F, T) -> stacked (2 * batch, out_channels, F', T')."""
        if self.transposed:
            size = None if output_size is None else tuple(output_size)
            y = self.conv(x, output_size=size)
        else:
            y = self.conv(x)
        batch, c = x.shape[0] // 2, self.out_channels
        by_real, by_imag = y[:, :c], y[:, c:]  # W_r x, W_i x for x = [x_r; x_i]
        real = by_real[:batch] - by_imag[batch:]
        imag = by_real[batch:] + by_imag[:batch]
        return torch.cat([real, imag], dim=0)


def _apply_2x2(x: torch.Tensor, matrix, offset) -> torch.Tensor:
    """Per channel ``[y_r; y_i] = matrix @ [x_r; x_i] + offset`` on a stacked tensor.

    ``matrix``: four (C,) tensors (m_rr, m_ri, m_ir, m_ii); ``offset``: two.
    """
    real, imag = x.chunk(2, dim=0)
    view = (1, -1, 1, 1)
    m_rr, m_ri, m_ir, m_ii = (m.view(view) for m in matrix)
    out_r = m_rr * real + m_ri * imag + offset[0].view(view)
    out_i = m_ir * real + m_ii * imag + offset[1].view(view)
    return torch.cat([out_r, out_i], dim=0)


class ComplexBatchNorm2d(nn.Module):
    """Whitening complex batch norm (Trabelsi et al., 2018) over (batch, F, T).

    For each channel, ``x - E[x]`` is multiplied by ``V^(-1/2)`` where ``V``
    is the 2×2 covariance of (real, imag), so that real and imaginary parts
    are decorrelated with unit variance; then ``y = Γ x̃ + β`` with a learned
    symmetric ``Γ = [[γ_rr, γ_ri], [γ_ri, γ_ii]]`` (initialised to
    ``I / √2``: unit complex variance) and complex ``β`` (zero). Running
    mean/covariance (exponential average with ``momentum``, initialised to 0
    and ``I``) are used in eval mode, as ``torch.nn.BatchNorm2d`` does.
    Input and output are stacked (see ``to_stacked``).

    Example
    -------
    >>> norm = ComplexBatchNorm2d(3)
    >>> x = to_stacked(torch.randn(4, 3, 10, 8, dtype=torch.complex64) * 5 + 2)
    >>> y = norm(x)
    >>> y.shape, bool(y.mean().abs() < 1e-4)
    (torch.Size([8, 3, 10, 8]), True)
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        gamma = torch.tensor([1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)])
        # (3, C): γ_rr, γ_ri, γ_ii and (2, C): β_r, β_i.
        self.weight = nn.Parameter(gamma.unsqueeze(1).repeat(1, num_features))
        self.bias = nn.Parameter(torch.zeros(2, num_features))
        self.register_buffer("running_mean", torch.zeros(2, num_features))
        identity = torch.tensor([1.0, 0.0, 1.0]).unsqueeze(1).repeat(1, num_features)
        self.register_buffer("running_cov", identity)  # (3, C): V_rr, V_ri, V_ii

    def _batch_statistics(self, x: torch.Tensor):
        real, imag = x.chunk(2, dim=0)
        dims = (0, 2, 3)
        var_r, mean_r = torch.var_mean(real, dim=dims, correction=0)
        var_i, mean_i = torch.var_mean(imag, dim=dims, correction=0)
        cov_ri = (real * imag).mean(dims) - mean_r * mean_i
        return torch.stack([mean_r, mean_i]), torch.stack([var_r, cov_ri, var_i])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked (2 * batch, C, F, T) -> same shape, normalized per channel."""
        if self.training:
            mean, cov = self._batch_statistics(x)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_cov.lerp_(cov.detach(), self.momentum)
        else:
            mean, cov = self.running_mean, self.running_cov
        v_rr, v_ri, v_ii = cov[0] + self.eps, cov[1], cov[2] + self.eps
        # Inverse square root of the 2×2 SPD matrix [[a, b], [b, c]]:
        # (1 / (s t)) [[c + s, -b], [-b, a + s]], s = sqrt(det), t = sqrt(a + c + 2 s).
        s = torch.sqrt((v_rr * v_ii - v_ri * v_ri).clamp(min=self.eps * self.eps))
        t = torch.sqrt(v_rr + v_ii + 2 * s)
        w_rr, w_ri, w_ii = (v_ii + s) / (s * t), -v_ri / (s * t), (v_rr + s) / (s * t)
        g_rr, g_ri, g_ii = self.weight
        # Γ W and β - Γ W μ, so that the big tensor is touched once.
        a_rr, a_ri = g_rr * w_rr + g_ri * w_ri, g_rr * w_ri + g_ri * w_ii
        a_ir, a_ii = g_ri * w_rr + g_ii * w_ri, g_ri * w_ri + g_ii * w_ii
        c_r = self.bias[0] - a_rr * mean[0] - a_ri * mean[1]
        c_i = self.bias[1] - a_ir * mean[0] - a_ii * mean[1]
        return _apply_2x2(x, (a_rr, a_ri, a_ir, a_ii), (c_r, c_i))


class NaiveComplexBatchNorm2d(nn.Module):
    """Substitute for ``ComplexBatchNorm2d``: real and imaginary parts normalized separately.

    Two real ``BatchNorm2d`` (statistics, running averages and affine
    parameters of their own); no decorrelation of real and imaginary parts.

    Example
    -------
    >>> norm = NaiveComplexBatchNorm2d(2)
    >>> norm(to_stacked(torch.randn(3, 2, 5, 4, dtype=torch.complex64))).shape
    torch.Size([6, 2, 5, 4])
    """

    def __init__(self, num_features):
        super().__init__()
        self.real_norm = nn.BatchNorm2d(num_features)
        self.imag_norm = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked (2 * batch, C, F, T) -> same shape."""
        real, imag = x.chunk(2, dim=0)
        return torch.cat([self.real_norm(real), self.imag_norm(imag)], dim=0)


def _make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "complex":
        return ComplexBatchNorm2d(channels)
    if norm == "naive":
        return NaiveComplexBatchNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def bounded_tanh_mask(output: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``tanh(|O|) · O / |O|``: the phase of ``O`` and a magnitude below 1.

    ``output`` is complex, or stacked real (see ``to_stacked``; the mask is
    then stacked too). ``|O|`` is computed as ``sqrt(re² + im² + eps²)`` so
    that the gradient is finite where ``O = 0`` (the mask is then 0).

    Example
    -------
    >>> m = bounded_tanh_mask(torch.tensor([3.0 + 4.0j, 0.0j]))
    >>> round(float(m[0].abs()), 4), round(float(m[0].angle()), 4), float(m[1].abs())
    (0.9999, 0.9273, 0.0)
    """
    if output.is_complex():
        return from_stacked(bounded_tanh_mask(to_stacked(output), eps))
    real, imag = output.chunk(2, dim=0)
    magnitude = torch.sqrt(real * real + imag * imag + eps * eps)
    scale = torch.tanh(magnitude) / magnitude
    return output * torch.cat([scale, scale], dim=0)


class DCUNet(nn.Module):
    """Deep Complex U-Net with a bounded-tanh complex ratio mask (see the module docstring).

    Arguments
    ---------
    architecture : str
        A key of ``DCUNET_ARCHITECTURES`` ("DCUNet-10", "DCUNet-16"); ignored
        when ``encoder_layers`` is given.
    encoder_layers : sequence of (channels, (kF, kT), (sF, sT)), optional
        A custom encoder (e.g. a small one for CPU runs); the decoder mirrors it.
    n_fft, hop_length : int
        STFT size and hop (Hann window of ``n_fft``).
    norm : str
        "complex" (whitening complex batch norm) or "naive" (separate real
        and imaginary ``BatchNorm2d``).
    negative_slope : float
        Of the complex leaky ReLU.

    Example
    -------
    >>> model = DCUNet(encoder_layers=[(4, (7, 5), (2, 2)), (8, (5, 3), (2, 1))], n_fft=256,
    ...                hop_length=64)
    >>> wav = torch.randn(2, 3001)
    >>> model(wav).shape
    torch.Size([2, 3001])
    >>> DCUNet("DCUNet-10").num_parameters() > 1_000_000
    True
    """

    # Non-causal: centred STFT frames and time kernels that look both ways (model cards say so).
    causal = False

    def __init__(
        self,
        architecture="DCUNet-10",
        encoder_layers=None,
        n_fft=1024,
        hop_length=256,
        norm="complex",
        negative_slope=0.01,
    ):
        super().__init__()
        if encoder_layers is None:
            if architecture not in DCUNET_ARCHITECTURES:
                raise ValueError(
                    f"unknown architecture {architecture!r}; expected one of "
                    f"{sorted(DCUNET_ARCHITECTURES)} or encoder_layers"
                )
            encoder_layers = DCUNET_ARCHITECTURES[architecture]
        layers = [(int(c), tuple(k), tuple(s)) for c, k, s in encoder_layers]
        if not layers:
            raise ValueError("encoder_layers is empty")
        for channels, kernel, stride in layers:
            if channels < 1 or len(kernel) != 2 or len(stride) != 2 or min(*kernel, *stride) < 1:
                raise ValueError(f"bad encoder layer {(channels, kernel, stride)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if not 0 < hop_length <= n_fft:
            raise ValueError(f"need 0 < hop_length ({hop_length}) <= n_fft ({n_fft})")
        self.n_fft, self.hop_length = int(n_fft), int(hop_length)
        self.negative_slope = negative_slope
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

        in_channels = [1] + [c for c, _, _ in layers[:-1]]
        self.encoders = nn.ModuleList()
        self.encoder_norms = nn.ModuleList()
        for c_in, (c_out, kernel, stride) in zip(in_channels, layers, strict=True):
            padding = (kernel[0] // 2, kernel[1] // 2)
            self.encoders.append(ComplexConv2d(c_in, c_out, kernel, stride, padding))
            self.encoder_norms.append(_make_norm(norm, c_out))
        # Decoder j mirrors encoder L-1-j: its input is the previous decoder's
        # output concatenated with the skip (except the first, fed the bottleneck).
        self.decoders = nn.ModuleList()
        self.decoder_norms = nn.ModuleList()
        depth = len(layers)
        for j in range(depth):
            index = depth - 1 - j
            c_out_enc, kernel, stride = layers[index]
            c_in = c_out_enc if j == 0 else 2 * c_out_enc
            c_out = in_channels[index]  # 1 for the last decoder: the mask
            padding = (kernel[0] // 2, kernel[1] // 2)
            self.decoders.append(
                ComplexConv2d(c_in, c_out, kernel, stride, padding, transposed=True)
            )
            if j < depth - 1:
                self.decoder_norms.append(_make_norm(norm, c_out))

    def num_parameters(self) -> int:
        """Number of trainable (real) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> complex (batch, n_fft // 2 + 1, frames)."""
        return torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(waveform.dtype),
            center=True,
            pad_mode="constant",  # works for inputs shorter than n_fft / 2 too
            return_complex=True,
        )

    def istft(self, spectrogram: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of ``stft``, cropped/padded to ``length`` samples."""
        return torch.istft(
            spectrogram,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(spectrogram.real.dtype),
            center=True,
            length=length,
        )

    def estimate_mask(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Complex ratio mask (batch, F, T) of a complex spectrogram (batch, F, T)."""
        x = to_stacked(spectrogram).unsqueeze(1)
        encoder_inputs = []
        for conv, norm in zip(self.encoders, self.encoder_norms, strict=True):
            encoder_inputs.append(x)
            x = F.leaky_relu(norm(conv(x)), self.negative_slope)
        depth = len(self.decoders)
        for j, conv in enumerate(self.decoders):
            skip = encoder_inputs[depth - 1 - j]
            x = conv(x, output_size=skip.shape[-2:])
            if j < depth - 1:
                x = F.leaky_relu(self.decoder_norms[j](x), self.negative_slope)
                x = torch.cat([x, skip], dim=1)
        return from_stacked(bounded_tanh_mask(x.squeeze(1)))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Enhance (batch, samples) waveforms; the output has the same shape."""
        if waveform.dim() != 2:
            raise ValueError(f"expected (batch, samples), got shape {tuple(waveform.shape)}")
        spectrogram = self.stft(waveform)
        mask = self.estimate_mask(spectrogram)
        return self.istft(mask * spectrogram, length=waveform.shape[-1])
