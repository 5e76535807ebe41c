"""Causal UNet with gated temporal convolution modules (TCM) for complex spectral mapping.

The engine maps the real/imaginary STFT of a noisy signal to the real/imaginary
STFT of the clean signal (Tan & Wang style complex spectral mapping). Its
bottleneck is a stack of dual-branch modified gated TCMs after Li et al.,
"Two Heads Are Better Than One" (ICASSP 2021, arXiv:2011.01561).

Causality
---------
* ``UNetEngine`` is strictly frame-causal: output frame ``k`` depends only on
  input frames ``<= k``. Convolutions have kernel 1 and stride 1 over time
  except the TCM convolutions, which are left-padded (``CausalConv1d``); the
  default normalisation (``"frame_layer_norm"``) normalises every time frame on
  its own. ``"batch_norm"`` is causal in eval mode only (training uses batch
  statistics over all frames).
* ``ComplexSpectralMapping`` frames the waveform causally: ``n_fft // 2`` zeros
  are prepended and frame ``k`` covers input samples
  ``[k*hop - n_fft//2, k*hop - n_fft//2 + n_fft)``. Overlap-add still needs
  every frame whose window covers an output sample, so output sample ``t``
  depends on input samples ``<= t + lookahead`` with
  ``lookahead = win_length - 2`` samples (318 samples = 19.9 ms for the
  default 320-sample, 20 ms window; the periodic Hann window is zero at its
  first sample, so a frame neither reads nor writes that sample). The bound is
  attained (tests check both). With ``delay_output=True`` the output is
  delayed by ``lookahead`` samples, which makes it strictly causal: output
  sample ``t`` depends on input samples ``<= t`` only. Keep the default
  (time-aligned output) for training against a clean target.
* For a streaming implementation: frame ``k`` needs input samples up to
  ``k*hop + n_fft - n_fft//2 - 1``; once it is processed, output samples up to
  ``(k+1)*hop + (n_fft - win_length)//2 - n_fft//2`` are final (defaults:
  input up to ``160k + 159``, output up to ``160k``).
* Synthesis uses ``torchaudio.transforms.InverseSpectrogram`` with
  ``center=True``: its inverse drops the first ``n_fft // 2`` samples, which
  are exactly the zeros prepended here. (``center=False`` is unusable: the
  window envelope is zero at the first sample and ``torch.istft`` rejects it.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.functional import lfilter
from torchaudio.transforms import InverseSpectrogram, Spectrogram

# Power floor of the level normalisation (a frame-power average; about -140 dB re
# a full-scale 320-point frame), so digital silence gives no division by zero.
LEVEL_FLOOR = 1e-12

NORM_TYPES = ("frame_layer_norm", "batch_norm")
# Power-law compression: magnitude floor (zero bins stay zero, finite gradient) and
# the magnitude above which the expansion stops growing (level-normalised spectra
# are O(1); an untrained engine's outliers must not overflow when raised to 1/c).
COMPRESS_FLOOR = 1e-12
COMPRESS_CEILING = 1e3


class FrameLayerNorm(nn.Module):
    """Layer normalisation of every time frame over channels (and frequency).

    Statistics are computed per batch item and per frame, so the operation is
    causal and identical in training and inference. A gain and a bias per
    channel follow.

    Arguments
    ---------
    num_channels : int
        Size of dimension 1.
    eps : float
        Added to the variance.

    Example
    -------
    >>> norm = FrameLayerNorm(num_channels=8)
    >>> norm(torch.randn(2, 8, 10, 5)).shape
    torch.Size([2, 8, 10, 5])
    >>> norm(torch.randn(2, 8, 10)).shape
    torch.Size([2, 8, 10])
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape (batch, channels, time[, freq])."""
        if x.dim() not in (3, 4):
            raise ValueError(f"expected (batch, channels, time[, freq]), got {tuple(x.shape)}")
        # Time moved next to batch, so that one fused layer_norm kernel (forward and
        # backward) normalises each frame over the trailing channel (and frequency)
        # axes: 3-4x faster in training than reductions over non-adjacent axes.
        frames = x.transpose(1, 2)
        weight, bias = self.weight, self.bias
        if x.dim() == 4:
            freqs = x.shape[3]
            weight = weight[:, None].expand(-1, freqs)
            bias = bias[:, None].expand(-1, freqs)
        out = F.layer_norm(frames, frames.shape[2:], weight, bias, self.eps)
        return out.transpose(1, 2)


def make_norm(norm: str, num_channels: int, spatial_dims: int) -> nn.Module:
    """Normalisation layer ``norm`` (one of ``NORM_TYPES``) for 1-D or 2-D features."""
    if norm == "frame_layer_norm":
        return FrameLayerNorm(num_channels)
    if norm == "batch_norm":
        return nn.BatchNorm1d(num_channels) if spatial_dims == 1 else nn.BatchNorm2d(num_channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORM_TYPES}")


class CausalConv1d(nn.Module):
    """1-D convolution padded on the left only, so output ``t`` sees inputs ``<= t``.

    ``(kernel_size - 1) * dilation`` zeros are prepended; the output has the
    input's length.

    Example
    -------
    >>> conv = CausalConv1d(4, 6, kernel_size=5, dilation=2)
    >>> conv.left_padding
    8
    >>> conv(torch.randn(3, 4, 20)).shape
    torch.Size([3, 6, 20])
    """

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, bias=True):
        super().__init__()
        self.left_padding = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, time) -> (batch, out_channels, time)."""
        return self.conv(F.pad(x, (self.left_padding, 0)))


class GatedBranch(nn.Module):
    """Dilated causal convolution gated by a sigmoid convolution branch.

    ``main(x) * sigmoid(gate(x))`` where each path is PReLU -> norm ->
    ``CausalConv1d`` (pre-activation, as in the modified gated TCM).

    Example
    -------
    >>> branch = GatedBranch(channels=8, kernel_size=5, dilation=4)
    >>> branch(torch.randn(2, 8, 30)).shape
    torch.Size([2, 8, 30])
    """

    def __init__(self, channels, kernel_size=5, dilation=1, norm="frame_layer_norm"):
        super().__init__()
        self.main = nn.Sequential(
            nn.PReLU(channels),
            make_norm(norm, channels, 1),
            CausalConv1d(channels, channels, kernel_size, dilation=dilation),
        )
        self.gate = nn.Sequential(
            nn.PReLU(channels),
            make_norm(norm, channels, 1),
            CausalConv1d(channels, channels, kernel_size, dilation=dilation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, time) -> (batch, channels, time)."""
        return self.main(x) * torch.sigmoid(self.gate(x))


class DoubleModifiedGatedTCM(nn.Module):
    """Dual-branch modified gated temporal convolution module (residual).

    1x1 conv ``in_channels -> hidden_channels``; two gated dilated causal
    branches (same dilation, separate weights); concatenation
    (``2 * hidden_channels``); PReLU -> norm -> 1x1 conv back to
    ``in_channels``; residual addition.

    Arguments
    ---------
    in_channels : int
        Feature size of the input and output.
    hidden_channels : int
        Channels of each branch.
    kernel_size : int
        Kernel of the dilated convolutions.
    dilation : int
        Dilation of both branches.
    norm : str
        One of ``NORM_TYPES``.

    Example
    -------
    >>> tcm = DoubleModifiedGatedTCM(in_channels=16, hidden_channels=8, dilation=2)
    >>> tcm(torch.randn(2, 16, 25)).shape
    torch.Size([2, 16, 25])
    """

    def __init__(
        self,
        in_channels=256,
        hidden_channels=64,
        kernel_size=5,
        dilation=1,
        norm="frame_layer_norm",
    ):
        super().__init__()
        self.input_conv = nn.Conv1d(in_channels, hidden_channels, 1)
        self.branches = nn.ModuleList(
            GatedBranch(hidden_channels, kernel_size, dilation, norm) for _ in range(2)
        )
        self.output = nn.Sequential(
            nn.PReLU(2 * hidden_channels),
            make_norm(norm, 2 * hidden_channels, 1),
            nn.Conv1d(2 * hidden_channels, in_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, time) -> (batch, in_channels, time)."""
        hidden = self.input_conv(x)
        branches = torch.cat([branch(hidden) for branch in self.branches], dim=1)
        return x + self.output(branches)


class ResizeConvTranspose2d(nn.Module):
    """Nearest-neighbour upsampling along frequency, then a convolution: a smooth decoder layer.

    Upsampling by ``stride`` (each bin repeated) followed by a ``(1, k - stride
    + 1)`` convolution is exactly a transposed convolution of kernel ``(1, k)``
    and stride ``stride`` whose kernel is the learned one convolved with a box
    of ``stride`` ones; this layer is computed that way
    (``F.conv_transpose2d``), so it has the geometry of
    ``nn.ConvTranspose2d(in, out, (1, k), (1, stride))`` (same output size,
    same input bins per output bin) and exposes the same attributes
    (``weight`` is the effective kernel), which the streaming step folds like
    any transposed convolution. Every output phase then sums the learned taps
    once, so a constant input gives a constant output: no checkerboard
    pattern along frequency at initialisation, unlike a free transposed
    kernel (Odena et al., "Deconvolution and Checkerboard Artifacts", 2016).

    Arguments
    ---------
    in_channels, out_channels : int
    kernel_size : (int, int)
        ``(1, k)`` of the equivalent transposed convolution, ``k >= stride``.
    stride : (int, int)
        ``(1, stride)``.
    output_padding : (int, int)
        As ``nn.ConvTranspose2d``.
    bias : bool

    Example
    -------
    >>> layer = ResizeConvTranspose2d(3, 2, (1, 4), (1, 2))
    >>> layer.weight.shape, layer(torch.randn(1, 3, 5, 8)).shape
    (torch.Size([3, 2, 1, 4]), torch.Size([1, 2, 5, 18]))
    >>> out = layer(torch.ones(1, 3, 1, 8))[0, 0, 0, 2:-2]  # away from the edges
    >>> bool(torch.allclose(out, out[0].expand_as(out)))
    True
    """

    def __init__(
        self, in_channels, out_channels, kernel_size, stride, output_padding=(0, 0), bias=True
    ):
        super().__init__()
        kernel, step = int(kernel_size[1]), int(stride[1])
        if kernel_size[0] != 1 or stride[0] != 1 or kernel < step:
            raise ValueError(
                f"need kernel_size (1, k) and stride (1, s) with k >= s, got {kernel_size}, {stride}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = (1, kernel), (1, step)
        self.padding, self.dilation, self.groups = (0, 0), (1, 1), 1
        self.output_padding = tuple(output_padding)
        taps = kernel - step + 1
        self.conv_weight = nn.Parameter(torch.empty(in_channels, out_channels, 1, taps))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(out_channels * taps)  # PyTorch's transposed-conv default
        nn.init.uniform_(self.conv_weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)
        self.register_buffer("box", torch.ones(1, 1, step), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """Effective transposed kernel ``(in, out, 1, k)``: the learned taps convolved with a box."""
        taps = self.conv_weight.shape[-1]
        flat = self.conv_weight.reshape(-1, 1, taps)
        step = self.stride[1]
        smoothed = F.conv1d(F.pad(flat, (step - 1, step - 1)), self.box)
        return smoothed.reshape(self.in_channels, self.out_channels, 1, taps + step - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in, time, freqs) -> (batch, out, time, upsampled freqs)."""
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, output_padding=self.output_padding
        )


DECODER_UPSAMPLING = ("transposed", "resize")
ESTIMATES = ("mapping", "mask")


def complex_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Product of complex spectra stored as real/imag in dim 1: (batch, 2, ...) each.

    Example
    -------
    >>> a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])  # 1+2j, 3-1j
    >>> complex_multiply(a, b)
    tensor([[5., 5.]])
    """
    real = a[:, :1] * b[:, :1] - a[:, 1:2] * b[:, 1:2]
    imag = a[:, :1] * b[:, 1:2] + a[:, 1:2] * b[:, :1]
    return torch.cat([real, imag], dim=1)


def encoder_freq_sizes(num_freqs: int, num_layers: int, kernel_freq: int, stride_freq: int):
    """Frequency sizes at the input and after each unpadded encoder layer.

    Example
    -------
    >>> encoder_freq_sizes(161, 5, 4, 2)
    [161, 79, 38, 18, 8, 3]
    """
    sizes = [num_freqs]
    for layer in range(num_layers):
        if sizes[-1] < kernel_freq:
            raise ValueError(
                f"{num_freqs} frequency bins are too few for {num_layers} encoder layers "
                f"with kernel {kernel_freq} (layer {layer} would get {sizes[-1]} bins)"
            )
        sizes.append((sizes[-1] - kernel_freq) // stride_freq + 1)
    return sizes


class UNetEngine(nn.Module):
    """Causal UNet-TCM mapping a real/imag spectrogram to a real/imag spectrogram.

    Encoder: ``num_layers`` Conv2d with kernel ``(1, kernel_freq)``, stride
    ``(1, stride_freq)``, no padding, ``channels`` channels, then norm and PReLU.
    Bottleneck: channels x frequency flattened per frame, linear projection to
    ``bottleneck_dim``, TCMs with dilations ``tcm_dilations`` repeated
    ``tcm_repeats`` times, projection back. Two decoders (real, imaginary) of
    ConvTranspose2d mirroring the encoder; at every level the matching encoder
    output is added after a 1x1 conv (one per decoder and level). The last
    layer of each decoder has one channel, no bias and no activation (linear
    output).

    Frequency sizes follow ``(size - kernel_freq) // stride_freq + 1`` without
    padding (161 -> 79 -> 38 -> 18 -> 8 -> 3 at the defaults). When
    ``size - kernel_freq`` is odd the last bin is not read (bin 160 = 8 kHz,
    the Nyquist bin, at the defaults); the decoder restores those sizes with
    ``output_padding``, so such a bin of the output is exactly 0.

    Arguments
    ---------
    num_freqs : int
        Frequency bins of the input (``n_fft // 2 + 1``).
    in_channels : int
        Input channels (2: real and imaginary).
    num_layers, channels, kernel_freq, stride_freq : int
        Encoder/decoder sizes.
    bottleneck_dim, tcm_hidden, tcm_kernel : int
        TCM feature size, branch channels and kernel.
    tcm_dilations : sequence of int
        Dilations of one TCM group.
    tcm_repeats : int
        How many times the group is repeated.
    norm : str
        ``"frame_layer_norm"`` (default, causal in training too) or ``"batch_norm"``.
    decoder_upsampling : str
        ``"transposed"`` (``nn.ConvTranspose2d``, a free kernel per output
        phase) or ``"resize"`` (:class:`ResizeConvTranspose2d`: nearest-neighbour
        upsampling then convolution, same geometry, no checkerboard).

    Example
    -------
    >>> engine = UNetEngine(num_freqs=81, num_layers=3, channels=8, bottleneck_dim=16,
    ...                     tcm_hidden=8, tcm_dilations=(1, 2), tcm_repeats=1)
    >>> engine(torch.randn(2, 2, 7, 81)).shape
    torch.Size([2, 2, 7, 81])
    """

    def __init__(
        self,
        num_freqs=161,
        in_channels=2,
        num_layers=5,
        channels=64,
        kernel_freq=4,
        stride_freq=2,
        bottleneck_dim=256,
        tcm_hidden=64,
        tcm_kernel=5,
        tcm_dilations=(1, 2, 4, 8, 16, 32),
        tcm_repeats=2,
        norm="frame_layer_norm",
        decoder_upsampling="transposed",
    ):
        super().__init__()
        if norm not in NORM_TYPES:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORM_TYPES}")
        if decoder_upsampling not in DECODER_UPSAMPLING:
            raise ValueError(
                f"unknown decoder_upsampling {decoder_upsampling!r}; "
                f"expected one of {DECODER_UPSAMPLING}"
            )
        upsampling_layer = (
            nn.ConvTranspose2d if decoder_upsampling == "transposed" else ResizeConvTranspose2d
        )
        self.num_freqs = num_freqs
        self.in_channels = in_channels
        self.channels = channels
        self.freq_sizes = encoder_freq_sizes(num_freqs, num_layers, kernel_freq, stride_freq)
        kernel, stride = (1, kernel_freq), (1, stride_freq)

        self.encoder = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels if i == 0 else channels, channels, kernel, stride),
                make_norm(norm, channels, 2),
                nn.PReLU(channels),
            )
            for i in range(num_layers)
        )

        flat_dim = channels * self.freq_sizes[-1]
        self.project_in = nn.Linear(flat_dim, bottleneck_dim)
        self.tcms = nn.Sequential(
            *(
                DoubleModifiedGatedTCM(bottleneck_dim, tcm_hidden, tcm_kernel, dilation, norm)
                for _ in range(tcm_repeats)
                for dilation in tcm_dilations
            )
        )
        self.project_out = nn.Linear(bottleneck_dim, flat_dim)

        self.decoders = nn.ModuleList()
        self.skips = nn.ModuleList()
        for _ in range(2):  # real part, imaginary part
            layers, skips = nn.ModuleList(), nn.ModuleList()
            for level in range(num_layers):
                in_size = self.freq_sizes[num_layers - level]
                target_size = self.freq_sizes[num_layers - level - 1]
                # Recover the bins the unpadded strided encoder layer dropped.
                extra = target_size - ((in_size - 1) * stride_freq + kernel_freq)
                last = level == num_layers - 1
                # No bias on the output layer: bins restored by output_padding (see
                # the class docstring) are then exactly 0, not a learned constant tone.
                deconv = upsampling_layer(
                    channels,
                    1 if last else channels,
                    kernel,
                    stride,
                    output_padding=(0, extra),
                    bias=not last,
                )
                if last:
                    layers.append(deconv)
                else:
                    layers.append(
                        nn.Sequential(deconv, make_norm(norm, channels, 2), nn.PReLU(channels))
                    )
                skips.append(nn.Conv2d(channels, channels, 1))
            self.decoders.append(layers)
            self.skips.append(skips)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, time, num_freqs) -> (batch, 2, time, num_freqs)."""
        if spec.dim() != 4 or spec.shape[1] != self.in_channels or spec.shape[3] != self.num_freqs:
            raise ValueError(
                f"expected input (batch, {self.in_channels}, time, {self.num_freqs}), "
                f"got {tuple(spec.shape)}"
            )
        skips = []
        x = spec
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)

        batch, channels, frames, freqs = x.shape
        flat = x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freqs)
        hidden = self.tcms(self.project_in(flat).transpose(1, 2))
        flat = self.project_out(hidden.transpose(1, 2))
        bottleneck = flat.reshape(batch, frames, channels, freqs).permute(0, 2, 1, 3)

        outputs = []
        for layers, skip_convs in zip(self.decoders, self.skips, strict=True):
            y = bottleneck
            for layer, skip_conv, skip in zip(layers, skip_convs, reversed(skips), strict=True):
                y = layer(y + skip_conv(skip))
            outputs.append(y)
        return torch.cat(outputs, dim=1)


class ComplexSpectralMapping(nn.Module):
    """Waveform-to-waveform wrapper: causal STFT -> engine -> inverse STFT.

    Arguments
    ---------
    engine : nn.Module
        Maps (batch, 2, frames, n_fft // 2 + 1) to the same shape.
    n_fft : int
        FFT size.
    win_length : int, optional
        Hann window length (default ``n_fft``); ``hop_length < win_length <= n_fft``.
    hop_length : int, optional
        Frame shift (default ``win_length // 2``).
    delay_output : bool
        Delay the output by ``lookahead`` samples so that it is strictly causal
        (see the module docstring). Default False: time-aligned output.
    level_normalization : bool
        Divide the spectrum by its causal running level before the engine and
        multiply the engine's output back (``frame_scale``): the model becomes
        scale-equivariant, so inputs 30 dB apart are processed alike (the
        engine's frame-wise normalisation would otherwise discard the level
        the decoders need). Default False (the plain mapping).
    norm_time_constant_frames : float
        Time constant of that running level, in frames (100 = 1 s at hop 160).
    compress_exponent : float
        Power-law compression of the engine's input and output spectra
        (after the level normalisation): the engine sees
        ``X |X|**(c - 1)`` (magnitude ``|X|**c``, phase kept) and its output
        ``Y`` is expanded back to ``Y |Y|**(1/c - 1)``. With ``c < 1`` quiet
        bins (high-frequency speech: fricatives, bursts) are no longer tens
        of dB below the loud ones in what the engine reads and writes.
        Frame-local, so causality and streaming are unchanged. Default 1.0
        (none).
    estimate : str
        ``"mapping"`` (default): the engine's output is the (compressed)
        target spectrum. ``"mask"``: it is a complex ratio mask ``M`` and the
        estimate is ``M * X`` (complex product with the engine's input), so
        "let the input through" is easy to represent and learning starts from
        suppression rather than from synthesis.

    Example
    -------
    >>> engine = UNetEngine(num_freqs=81, num_layers=2, channels=4, bottleneck_dim=8,
    ...                     tcm_hidden=4, tcm_dilations=(1,), tcm_repeats=1)
    >>> model = ComplexSpectralMapping(engine, n_fft=160)
    >>> model(torch.randn(3, 1001)).shape
    torch.Size([3, 1001])
    >>> model.lookahead
    158
    """

    def __init__(
        self,
        engine,
        n_fft=320,
        win_length=None,
        hop_length=None,
        delay_output=False,
        level_normalization=False,
        norm_time_constant_frames=100.0,
        compress_exponent=1.0,
        estimate="mapping",
    ):
        super().__init__()
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
        self.estimate = estimate
        if not 0.0 < compress_exponent <= 1.0:
            raise ValueError(f"compress_exponent must be in (0, 1], got {compress_exponent}")
        self.compress_exponent = float(compress_exponent)
        win_length = n_fft if win_length is None else win_length
        hop_length = win_length // 2 if hop_length is None else hop_length
        if not 0 < hop_length < win_length <= n_fft:
            # hop == win_length would leave the Hann overlap-add envelope zero at frame edges.
            raise ValueError(
                f"need 0 < hop_length ({hop_length}) < win_length ({win_length}) <= n_fft ({n_fft})"
            )
        engine_freqs = getattr(engine, "num_freqs", None)
        if engine_freqs is not None and engine_freqs != n_fft // 2 + 1:
            raise ValueError(
                f"engine expects {engine_freqs} frequency bins but n_fft={n_fft} "
                f"gives {n_fft // 2 + 1}"
            )
        self.engine = engine
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.delay_output = delay_output
        self.left_padding = n_fft // 2
        # Periodic Hann: zero at its first sample, hence win_length - 2 (see module docstring).
        self.lookahead = win_length - 2
        if norm_time_constant_frames <= 0:
            raise ValueError(
                f"norm_time_constant_frames must be > 0, got {norm_time_constant_frames}"
            )
        self.level_normalization = level_normalization
        self.norm_decay = math.exp(-1.0 / norm_time_constant_frames)
        stft_kwargs = dict(n_fft=n_fft, win_length=win_length, hop_length=hop_length)
        self.stft = Spectrogram(**stft_kwargs, power=None, center=False)
        self.istft = InverseSpectrogram(**stft_kwargs, center=True)

    def num_frames(self, num_samples: int) -> int:
        """Frames analysed for ``num_samples`` input samples.

        Every frame whose window is non-zero at the last sample is included, so
        the overlap-add envelope there is as large as in the steady state (a
        lone window tail would make the normalisation ill-conditioned).
        """
        window_offset = (self.n_fft - self.win_length) // 2  # torch centres short windows
        last_sample = self.left_padding + num_samples - 1
        return max(1, (last_sample - window_offset - 1) // self.hop_length + 1)

    def analysis(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, 2, frames, n_fft // 2 + 1) real/imag, causal framing."""
        if waveform.dim() != 2:
            raise ValueError(f"expected a waveform (batch, samples), got {tuple(waveform.shape)}")
        num_samples = waveform.shape[1]
        if num_samples == 0:
            raise ValueError("cannot process an empty waveform (0 samples)")
        frames = self.num_frames(num_samples)
        right_padding = (
            (frames - 1) * self.hop_length + self.n_fft - self.left_padding - num_samples
        )
        padded = F.pad(waveform, (self.left_padding, right_padding))
        spec = self.stft(padded)  # (batch, freqs, frames), complex
        return torch.view_as_real(spec).permute(0, 3, 2, 1)

    def synthesis(self, spec: torch.Tensor, num_samples: int) -> torch.Tensor:
        """(batch, 2, frames, freqs) real/imag -> (batch, num_samples) time-aligned waveform."""
        complex_spec = torch.view_as_complex(spec.permute(0, 3, 2, 1).contiguous())
        return self.istft(complex_spec, length=num_samples)

    def frame_scale(self, spec: torch.Tensor) -> torch.Tensor:
        """Causal level of every frame: (batch, 2, frames, freqs) -> (batch, 1, frames, 1).

        The square root of an exponential moving average (decay
        ``norm_decay`` per frame, bias-corrected so the first frame is its own
        average) of the frame's mean power over bins. It depends on frames
        ``<= k`` only and scales exactly with the input, so
        ``engine(spec / scale) * scale`` makes the model scale-equivariant:
        ``model(g * x) == g * model(x)``. A streaming implementation keeps two
        numbers of state: ``average = d * average + (1 - d) * power`` and
        ``weight = d * weight + (1 - d)``; the level is ``sqrt(average / weight)``.
        """
        power = spec.pow(2).mean(dim=(1, 3))  # (batch, frames)
        decay = self.norm_decay
        average = lfilter(
            power,
            a_coeffs=torch.tensor([1.0, -decay], dtype=power.dtype, device=power.device),
            b_coeffs=torch.tensor([1.0 - decay, 0.0], dtype=power.dtype, device=power.device),
            clamp=False,
        )
        steps = torch.arange(1, power.shape[-1] + 1, dtype=power.dtype, device=power.device)
        weight = 1.0 - decay**steps  # the same average of a constant 1
        return torch.sqrt(average / weight + LEVEL_FLOOR)[:, None, :, None]

    def compress(self, spec: torch.Tensor, exponent: float) -> torch.Tensor:
        """Real/imag ``spec`` (dim 1) with its magnitude raised to ``exponent``, phase kept."""
        if exponent == 1.0:
            return spec
        magnitude = spec.pow(2).sum(dim=1, keepdim=True).add(COMPRESS_FLOOR).sqrt()
        # Bounded so that an untrained engine's large outputs cannot overflow when expanded.
        return spec * magnitude.clamp(max=COMPRESS_CEILING).pow(exponent - 1.0)

    def map_spectrum(self, spec: torch.Tensor) -> torch.Tensor:
        """The engine between compression and expansion (level-normalised spectra)."""
        spec = self.compress(spec, self.compress_exponent)
        out = self.engine(spec)
        if self.estimate == "mask":
            out = complex_multiply(out, spec)
        return self.compress(out, 1.0 / self.compress_exponent)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, samples) enhanced waveform."""
        num_samples = waveform.shape[-1]
        spec = self.analysis(waveform)
        if self.level_normalization:
            scale = self.frame_scale(spec)
            spec = self.map_spectrum(spec / scale) * scale
        else:
            spec = self.map_spectrum(spec)
        estimate = self.synthesis(spec, num_samples)
        if self.delay_output:
            estimate = F.pad(estimate, (self.lookahead, 0))[:, :num_samples]
        return estimate
