"""Weights of ``UNetEngine`` layers rewritten for one-frame matmuls (used by ``fused.py``).

With one time frame, a ``Conv2d`` with kernel ``(1, k)`` is a 1-D convolution
over frequency and a ``ConvTranspose2d`` a transposed 1-D convolution. Both are
computed here as "gather the input rows with one precomputed index, then one
matmul": features are stored frequency-major, ``(freqs, channels)``, so the
gather copies whole rows of channels (fast in PyTorch and in onnxruntime) and
the layer runs as two plain ops, several times faster per call than
PyTorch's convolution kernels at these sizes.

Transposed convolution by phases: output ``f = stride*m + r`` (phase ``r``)
receives the inputs ``i = m, m-1, ..., m-A+1`` (``A = ceil(kernel/stride)``)
through kernel taps ``k = r + stride*a``. One matmul of the patches
``[u[m], u[m-1], ...]`` (one row per ``m``, ``A * C_in`` columns) by an
``(A * C_in, stride * C_out)`` weight gives all phases at once, and its
``(M, stride, C_out)`` result read as ``(M * stride, C_out)`` is already in
natural frequency order (positions past the output size are cut off).
Out-of-range inputs read an extra zero row appended to the input.

Normalisation: ``FrameLayerNorm`` is kept as a normalisation plus affine;
BatchNorm in eval mode is an affine map, folded into the preceding
convolution.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from custom_modules.models.unet_tcm import FrameLayerNorm


def prelu_slopes(prelu: nn.PReLU, channels: int) -> torch.Tensor:
    """PReLU slopes expanded to one per channel.

    Example
    -------
    >>> prelu_slopes(nn.PReLU(), 3)
    tensor([0.2500, 0.2500, 0.2500])
    """
    return prelu.weight.detach().reshape(-1).expand(channels).clone()


def norm_affine(norm: nn.Module):
    """(scale, shift, eps, normalise) of a norm layer in eval mode.

    FrameLayerNorm: normalise per frame (``normalise=True``), then
    ``x * scale + shift``. BatchNorm (running statistics): ``x * scale + shift``
    only (``normalise=False``).

    Example
    -------
    >>> scale, shift, eps, normalise = norm_affine(FrameLayerNorm(4))
    >>> scale.shape, normalise
    (torch.Size([4]), True)
    """
    if isinstance(norm, FrameLayerNorm):
        return norm.weight.detach().clone(), norm.bias.detach().clone(), norm.eps, True
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.running_mean is None:
            raise ValueError("BatchNorm without running statistics cannot be streamed")
        scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
        if norm.affine:
            scale = scale * norm.weight.detach()
            shift = norm.bias.detach() - norm.running_mean.detach() * scale
        else:
            shift = -norm.running_mean.detach() * scale
        return scale, shift, norm.eps, False
    raise TypeError(f"unsupported normalisation layer {type(norm).__name__}")


def conv_as_matmul(conv: nn.Conv2d, in_size: int, scale=None, shift=None):
    """Frequency convolution ``(F_in, C_in) -> (F_out, C_out)`` as row gather + matmul.

    Arguments
    ---------
    conv : nn.Conv2d
        Kernel ``(1, k)``, stride ``(1, s)``, no padding, no dilation, no groups.
    in_size : int
        Input frequency size ``F_in``.
    scale, shift : torch.Tensor, optional
        Per-output-channel affine map folded into the weights (BatchNorm).

    Returns
    -------
    index : LongTensor (F_out * k,)
        Input rows of the patch matrix, read as (F_out, k * C_in).
    weight : (k * C_in, C_out)
    bias : (C_out,)

    Example
    -------
    >>> conv = nn.Conv2d(2, 3, (1, 4), (1, 2))
    >>> index, weight, bias = conv_as_matmul(conv, 9)
    >>> x = torch.randn(9, 2)  # (freqs, channels)
    >>> y = x[index].view(3, 8) @ weight + bias
    >>> torch.allclose(y, conv(x.T[None, :, None])[0, :, 0].T, atol=1e-6)
    True
    """
    if conv.padding[1] != 0 or conv.dilation[1] != 1 or conv.groups != 1:
        raise ValueError("only unpadded, undilated, ungrouped frequency convolutions are supported")
    kernel, stride = conv.kernel_size[1], conv.stride[1]
    out_size = (in_size - kernel) // stride + 1
    index = torch.tensor([stride * f + k for f in range(out_size) for k in range(kernel)])
    weight = conv.weight.detach()[:, :, 0, :].permute(2, 1, 0)  # (k, C_in, C_out)
    weight = weight.reshape(-1, conv.out_channels)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    if scale is not None:
        weight, bias = weight * scale[None, :], bias * scale + shift
    return index, weight.contiguous(), bias.clone()


def transposed_conv_as_matmul(deconvs, in_size: int, scale=None, shift=None):
    """Transposed frequency convolutions of several decoders as row gather + batched matmul.

    The input of decoder ``d`` is ``(F_in + 1, C_in)``: ``F_in`` rows then one
    zero row, read for out-of-range taps. The output ``(decoders, M * stride,
    C_out)`` is in natural frequency order; its first ``out_size`` rows are
    the result.

    Arguments
    ---------
    deconvs : list of nn.ConvTranspose2d
        One per decoder, same shapes; kernel ``(1, k)``, stride ``(1, s)``.
    in_size : int
        Input frequency size ``F_in``.
    scale, shift : torch.Tensor, optional
        (decoders * C_out,) affine maps folded into the weights (BatchNorm).

    Returns
    -------
    index : LongTensor (M * A,) rows of the padded input, read as (M, A * C_in).
    weight : (decoders, A * C_in, stride * C_out)
    bias : (decoders, 1, stride * C_out)
    out_size : int
        Output frequency size (with ``output_padding``).

    Example
    -------
    >>> deconv = nn.ConvTranspose2d(3, 2, (1, 4), (1, 2), output_padding=(0, 1))
    >>> index, weight, bias, out_size = transposed_conv_as_matmul([deconv], 5)
    >>> u = torch.cat([torch.randn(5, 3), torch.zeros(1, 3)])  # + the zero row
    >>> y = (u[index].view(1, -1, weight.shape[1]) @ weight + bias).view(1, -1, 2)[:, :out_size]
    >>> torch.allclose(y[0], deconv(u[:5].T[None, :, None])[0, :, 0].T, atol=1e-6)
    True
    """
    first = deconvs[0]
    if first.padding[1] != 0 or first.dilation[1] != 1 or first.groups != 1:
        raise ValueError(
            "only unpadded, undilated, ungrouped transposed convolutions are supported"
        )
    kernel, stride = first.kernel_size[1], first.stride[1]
    in_channels, out_channels = first.in_channels, first.out_channels
    out_size = (in_size - 1) * stride + kernel + first.output_padding[1]
    taps = math.ceil(kernel / stride)  # inputs reaching one output
    groups = math.ceil(out_size / stride)  # outputs per phase (M)
    index = torch.tensor(
        [m - a if 0 <= m - a < in_size else in_size for m in range(groups) for a in range(taps)]
    )
    weights, biases = [], []
    for d, deconv in enumerate(deconvs):
        w = deconv.weight.detach()[:, :, 0, :]  # (C_in, C_out, k)
        b = deconv.bias.detach() if deconv.bias is not None else torch.zeros(out_channels)
        if scale is not None:
            s = scale[d * out_channels : (d + 1) * out_channels]
            w = w * s[None, :, None]
            b = b * s + shift[d * out_channels : (d + 1) * out_channels]
        phases = torch.zeros(taps, in_channels, stride, out_channels)
        for phase in range(stride):
            for a in range(taps):
                if phase + stride * a < kernel:
                    phases[a, :, phase, :] = w[:, :, phase + stride * a]
        weights.append(phases.reshape(taps * in_channels, stride * out_channels))
        biases.append(b.repeat(stride)[None, :])
    return index, torch.stack(weights), torch.stack(biases), out_size
