"""One frame of ``UNetEngine`` as a single fused step with explicit TCM state.

``FusedUNetStep(engine)`` copies a trained (or random) ``UNetEngine``'s
weights into a module that processes one STFT frame and computes, per frame,
exactly what the offline engine computes for that frame (to float rounding).
Everything but the TCM convolutions is frame-local (time kernel 1, per-frame
normalisation), so the only state is the past inputs of the dilated causal
convolutions, which the caller passes in and gets back explicitly
(``custom_modules.streaming.history.TcmHistory`` keeps them): the step is a
pure function, which is what ONNX export needs.

Where the time goes, and what is done about it. With one frame per call, the
full configuration (``unet.yaml``) is ~6 M multiply-accumulates and ~7.8 MB of
weights per frame: eager PyTorch spends it in per-op call overhead (a few
microseconds per op) and in streaming the weights (the TCMs' matrix-vector
products are memory-bound). Hence few, large ops and no redundant weights:

* Features are frequency-major, ``(freqs, channels)``. Frequency convolutions
  are "gather rows + one matmul" (``folding.py``), not convolution kernels
  (several times slower per call at these sizes); the two decoders (real,
  imaginary) run as one batched matmul per level, their skip 1x1
  convolutions as one batched matmul.
* Encoder ``FrameLayerNorm`` and its affine are one ``layer_norm`` call;
  BatchNorm (eval) is folded into the preceding convolution.
* In a TCM, the four gated paths (two branches x main/gate) share the input
  1x1 convolution (one small matmul), then one broadcast PReLU, one
  ``layer_norm`` (per path), one batched matmul for the newest tap, one
  ``glu`` for the gating of both branches. The older taps of every TCM are
  known when the frame starts: their contributions are one batched matmul
  for all layers at once.
* Affine maps are folded into the following linear maps: the path norms'
  into the dilated convolutions (scale into the weights; shift into a
  "valid tap" column of the state, which is 1 for a stored frame and 0 for
  the zero padding before the signal start, so the padding stays exactly
  zero as offline), the output norm's into the output 1x1 convolution; that
  convolution's bias is carried along the residual stream into the next
  layers' biases.

* For the ONNX export (onnxruntime runs every node as a separate kernel
  call): PReLU is written branch-free, as ``Max(x, x * slopes)`` when every
  slope is <= 1 (``prelu_form``; onnxruntime's own ``PRelu`` branches per
  element and is several times slower on real, changing data); constants of
  elementwise ops are materialised at the full operand shape (``full``:
  onnxruntime is several times slower broadcasting along a middle axis);
  and the TCM paths stay (4, 1, H), so no reshape per layer.

Per frame, the full configuration runs ~250 eager PyTorch ops (views
included) or 276 onnxruntime nodes (``unet_cpu.yaml``: 158); onnxruntime
runs it about three times faster than eager PyTorch, and the same step in C
(``native.py``, ``native_step.c``, packed from this module's tensors) about
1.8 times faster again (see ``benchmarks/streaming.py`` and this package's README).

Example
-------
>>> from custom_modules.models.unet_tcm import UNetEngine
>>> engine = UNetEngine(num_freqs=161, num_layers=2, channels=4, bottleneck_dim=8,
...                     tcm_hidden=4, tcm_dilations=(1, 2), tcm_repeats=1).eval()
>>> step = FusedUNetStep(engine)
>>> out, present = step(torch.zeros(161, 2), torch.zeros(step.past_shape))
>>> out.shape, present.shape, step.past_shape
(torch.Size([161, 2]), torch.Size([8, 4]), (8, 20))
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from custom_modules.streaming.folding import (
    conv_as_matmul,
    norm_affine,
    prelu_slopes,
    transposed_conv_as_matmul,
)

PATHS_PER_TCM = 4  # two gated branches, each a main and a gate convolution


def prelu_form(slopes: torch.Tensor) -> str:
    """How ``prelu`` writes a PReLU with these slopes in an ONNX export.

    ``"max"`` (every slope <= 1): ``Max(x, x * slopes)``; ``"min"`` (every
    slope >= 1): ``Min(x, x * slopes)``; ``"mixed"``: ``Relu(x) + Min(x, 0) *
    slopes``. The first two are exact (for ``s <= 1``: ``x >= s x`` when
    ``x >= 0``, ``s x >= x`` when ``x < 0``) and two nodes instead of four.

    Example
    -------
    >>> prelu_form(torch.tensor([0.25, -0.1])), prelu_form(torch.tensor([0.5, 1.5]))
    ('max', 'mixed')
    """
    if bool((slopes <= 1).all()):
        return "max"
    return "min" if bool((slopes >= 1).all()) else "mixed"


def prelu(x: torch.Tensor, slopes: torch.Tensor, form: str = "mixed") -> torch.Tensor:
    """``max(x, 0) + slopes * min(x, 0)``; slopes broadcast (``F.prelu`` needs 1-D slopes).

    In an ONNX export the PReLU is written branch-free, in the ``form`` of
    ``prelu_form(slopes)``: onnxruntime's own ``PRelu`` kernel branches on
    every element's sign and runs several times slower on real, changing data
    (measured: 56 vs 13 microseconds on a (2, 79, 64) tensor).

    Example
    -------
    >>> prelu(torch.tensor([[-2.0, 3.0]]), torch.tensor([[0.5], [2.0]]))
    tensor([[-1.,  3.],
            [-4.,  3.]])
    """
    if torch.onnx.is_in_onnx_export():
        if form == "max":
            return torch.maximum(x, x * slopes)
        if form == "min":
            return torch.minimum(x, x * slopes)
        return torch.addcmul(F.relu(x), slopes, x.clamp(max=0))
    if slopes.dim() == 1 and x.dim() == 2 and x.shape[1] == slopes.numel():
        return F.prelu(x, slopes)  # one op in eager PyTorch
    return torch.addcmul(F.relu(x), slopes, x.clamp(max=0))


def full(constant: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``constant`` broadcast to ``like``'s shape, materialised in an ONNX export.

    onnxruntime's elementwise kernels are several times slower with an operand
    broadcast along a middle axis (a (2, 1, C) bias on (2, F, C)) than with
    equal shapes; the export folds the expanded constant into a full-size
    initializer. In eager PyTorch the constant is returned as is (broadcast).

    Example
    -------
    >>> full(torch.ones(2, 1, 3), torch.zeros(2, 4, 3)).shape  # eager: unchanged
    torch.Size([2, 1, 3])
    """
    return constant.expand(like.shape) if torch.onnx.is_in_onnx_export() else constant


class FusedUNetStep(nn.Module):
    """Single-frame UNet-TCM step: ``(spec, past) -> (enhanced spec, present)``.

    The weights are copied into plain tensors (CPU; the module has no
    parameters): later changes to ``engine`` are not seen.

    Arguments
    ---------
    engine : custom_modules.models.unet_tcm.UNetEngine
        The offline engine (eval-mode semantics: BatchNorm uses running statistics).

    Inputs and outputs of ``forward``:

    * ``spec`` (num_freqs, in_channels): one frame, real and imaginary part of
      each bin side by side (a complex64 spectrum viewed as float32).
    * ``past`` ``past_shape`` = (num_tcms * 4, (tcm_kernel - 1) * (tcm_hidden + 1)):
      for every TCM and path, its convolution inputs at the earlier taps,
      oldest first (tap ``k`` is ``(tcm_kernel - 1 - k) * dilation`` frames
      back), each followed by a validity flag (1 for a stored frame; all
      zeros before the signal start).
    * returns the enhanced frame (num_freqs, 2), same layout, and ``present``
      (num_tcms * 4, tcm_hidden): this frame's TCM convolution inputs (before
      the folded affine), the newest tap.
    """

    def __init__(self, engine: nn.Module):
        super().__init__()
        for name in ("encoder", "project_in", "tcms", "project_out", "decoders", "skips"):
            if not hasattr(engine, name):
                raise TypeError(f"expected a UNetEngine, got {type(engine).__name__} (no .{name})")
        first_param = next(engine.parameters())
        if first_param.device.type != "cpu" or first_param.dtype != torch.float32:
            engine = copy.deepcopy(engine).to(device="cpu", dtype=torch.float32)  # CPU float32 step
        self.num_freqs = engine.num_freqs
        self.in_channels = engine.in_channels
        self.num_layers = len(engine.encoder)
        self.channels = engine.encoder[-1][0].out_channels
        self.freq_sizes = list(engine.freq_sizes)
        with torch.no_grad():
            self._build_encoder(engine)
            self._build_bottleneck(engine)
            self._build_decoders(engine)
        # How each PReLU is exported (see prelu_form), per layer and in forward's order.
        self.prelu_forms = {
            "encoder": [prelu_form(layer[4]) for layer in self.encoder_layers],
            "tcm": [(prelu_form(layer[2]), prelu_form(layer[5])) for layer in self.tcm_layers],
            "decoder": [
                None if layer[5] is None else prelu_form(layer[5]) for layer in self.decoder_layers
            ],
        }

    # ---- construction ---------------------------------------------------------------------

    def _build_encoder(self, engine):
        self.encoder_layers, self.skip_layers = [], []
        for i, (conv, norm, prelu) in enumerate(engine.encoder):
            scale, shift, eps, normalise = norm_affine(norm)
            folded = {} if normalise else {"scale": scale, "shift": shift}
            index, weight, bias = conv_as_matmul(conv, self.freq_sizes[i], **folded)
            size = (self.freq_sizes[i + 1], conv.out_channels)
            affine = (size, scale.expand(size).contiguous(), shift.expand(size).contiguous(), eps)
            self.encoder_layers.append(
                (index, weight, bias, affine if normalise else None, prelu_slopes(prelu, size[1]))
            )
            # Skip 1x1 convolutions of both decoders reading this level: one batched matmul.
            level = self.num_layers - 1 - i
            skip_w = torch.stack([s[level].weight.detach()[:, :, 0, 0].T for s in engine.skips])
            skip_b = torch.stack([s[level].bias.detach()[None, :] for s in engine.skips])
            self.skip_layers.append((skip_b, skip_w))  # (2, 1, C), (2, C, C)

    def _build_bottleneck(self, engine):
        tcms = list(engine.tcms)
        if not tcms:
            raise ValueError("the engine has no TCM layers: nothing to stream")
        first = tcms[0].branches[0].main[2].conv
        self.tcm_kernel, self.tcm_hidden = first.kernel_size[0], first.out_channels
        if self.tcm_kernel < 2:
            raise ValueError("TCM kernel 1 has no temporal state: nothing to stream")
        hidden = self.tcm_hidden
        self.tcm_dilations, self.tcm_layers = [], []
        w_past, b_past, normalise_flags = [], [], set()
        offset = torch.zeros(engine.project_in.out_features)  # bias carried by the residual
        for tcm in tcms:
            # Path order: main 1, main 2, gate 1, gate 2 (so that one glu gates both branches).
            paths = [b.main for b in tcm.branches] + [b.gate for b in tcm.branches]
            convs = [seq[2].conv for seq in paths]
            if any(
                c.dilation != convs[0].dilation or c.kernel_size != first.kernel_size for c in convs
            ):
                raise ValueError(
                    "all TCM convolutions must share the kernel size, paths their dilation"
                )
            self.tcm_dilations.append(convs[0].dilation[0])
            in_w = tcm.input_conv.weight.detach()[:, :, 0]  # (H, B)
            in_b = tcm.input_conv.bias.detach() + in_w @ offset
            affines = [norm_affine(seq[1]) for seq in paths]
            if len({a[2] for a in affines}) != 1:
                raise ValueError("the four path norms of a TCM must share eps")
            w_now, conv_b = [], []
            for conv, (scale, shift, _, _) in zip(convs, affines, strict=True):
                # The path norm's affine goes into the convolution: its scale into the
                # weights, its shift into the "valid tap" row (see module docstring).
                kernel = conv.weight.detach() * scale[None, :, None]  # (H_out, H_in, K)
                shift_terms = torch.einsum("oik,i->ko", conv.weight.detach(), shift)  # (K, H_out)
                past_rows = torch.cat(
                    [kernel[:, :, :-1].permute(2, 1, 0), shift_terms[:-1, None]], 1
                )
                w_past.append(past_rows.reshape(-1, hidden))  # (taps * (H_in + 1), H_out)
                w_now.append(kernel[:, :, -1].T)
                conv_b.append(conv.bias.detach() + shift_terms[-1])
            b_past += [b[None, :] for b in conv_b]
            prelu, norm, conv = tcm.output
            scale, shift, out_eps, out_normalise = norm_affine(norm)
            out_w = conv.weight.detach()[:, :, 0]  # (B, 2H)
            normalise_flags.update([out_normalise, *(a[3] for a in affines)])
            path_slopes = torch.stack([prelu_slopes(seq[0], hidden) for seq in paths])[:, None]
            self.tcm_layers.append(
                (
                    in_b[None, :],
                    in_w.T.contiguous(),  # (B, H)
                    path_slopes,  # (4, 1, H)
                    affines[0][2],
                    torch.stack(w_now),  # newest tap (4, H_in, H_out)
                    prelu_slopes(prelu, 2 * hidden),
                    out_eps,
                    (out_w * scale[None, :]).T.contiguous(),  # (2H, B), norm affine folded
                )
            )
            offset = offset + out_w @ shift + conv.bias.detach()
        if len(normalise_flags) != 1:
            raise ValueError("mixed FrameLayerNorm/BatchNorm TCMs are not supported")
        self.tcm_normalise = normalise_flags.pop()
        self.num_tcms = len(tcms)
        self.tcm_w_past = torch.stack(w_past)  # (L*4, taps*(H+1), H)
        self.tcm_b_past = torch.stack(b_past)  # (L*4, 1, H)
        # Bottleneck projections: features here are (freq, channel); the offline engine
        # flattens (channel, freq).
        freqs = self.freq_sizes[-1]
        flat_order = torch.tensor(
            [c * freqs + f for f in range(freqs) for c in range(self.channels)]
        )
        in_weight = engine.project_in.weight.detach()  # (B, flat)
        if in_weight.shape[1] != len(flat_order):
            raise ValueError("project_in does not match the encoder output size")
        self.proj_in = (
            engine.project_in.bias.detach()[None, :].clone(),
            in_weight[:, flat_order].T.contiguous(),
        )
        out_weight = engine.project_out.weight.detach()[flat_order]  # (flat, B)
        out_bias = engine.project_out.bias.detach()[flat_order] + out_weight @ offset
        self.proj_out = (out_bias[None, :], out_weight.T.contiguous())

    def _build_decoders(self, engine):
        self.decoder_layers = []
        for level in range(self.num_layers):
            last = level == self.num_layers - 1
            layers = [decoder[level] for decoder in engine.decoders]
            deconvs = layers if last else [layer[0] for layer in layers]
            in_size = self.freq_sizes[self.num_layers - level]
            affine = slopes = None
            folded = {}
            if not last:
                channels = deconvs[0].out_channels
                affines = [norm_affine(layer[1]) for layer in layers]
                scale = torch.stack([a[0] for a in affines])[:, None, :]  # (2, 1, C)
                shift = torch.stack([a[1] for a in affines])[:, None, :]
                if affines[0][3]:
                    affine = (scale, shift, affines[0][2])
                else:  # BatchNorm: fold into the transposed convolution
                    folded = {"scale": scale.reshape(-1), "shift": shift.reshape(-1)}
                slopes = torch.stack([prelu_slopes(layer[2], channels) for layer in layers])
                slopes = slopes[:, None, :]  # (2, 1, C)
            index, weight, bias, out_size = transposed_conv_as_matmul(deconvs, in_size, **folded)
            self.decoder_layers.append((index, weight, bias, out_size, affine, slopes))

    # ---- shapes ---------------------------------------------------------------------------

    @property
    def past_shape(self) -> tuple:
        """Shape of the ``past`` input: (num_tcms * 4, (tcm_kernel - 1) * (tcm_hidden + 1))."""
        return (self.num_tcms * PATHS_PER_TCM, (self.tcm_kernel - 1) * (self.tcm_hidden + 1))

    @property
    def present_shape(self) -> tuple:
        """Shape of the ``present`` output: (num_tcms * 4, tcm_hidden)."""
        return (self.num_tcms * PATHS_PER_TCM, self.tcm_hidden)

    def history_config(self) -> dict:
        """Keyword arguments of ``TcmHistory`` for this step."""
        return {
            "dilations": list(self.tcm_dilations),
            "kernel_size": self.tcm_kernel,
            "hidden": self.tcm_hidden,
            "paths": PATHS_PER_TCM,
        }

    # ---- forward --------------------------------------------------------------------------

    def forward(self, spec: torch.Tensor, past: torch.Tensor):
        """(num_freqs, in_channels), past -> (num_freqs, 2), present (see class docstring)."""
        hidden, paths = self.tcm_hidden, PATHS_PER_TCM
        forms = self.prelu_forms

        # Encoder, frequency-major (freqs, channels), and the decoders' skip inputs.
        x = spec
        skips = []
        for (index, weight, bias, affine, slopes), (skip_b, skip_w), form in zip(
            self.encoder_layers, self.skip_layers, forms["encoder"], strict=True
        ):
            patches = x.index_select(0, index).view(-1, weight.shape[0])
            x = torch.addmm(bias, patches, weight)
            if affine is not None:
                x = F.layer_norm(x, *affine)
            x = prelu(x, full(slopes, x), form)
            skip = torch.matmul(x, skip_w)  # (2, F, C): x broadcast, no copy
            skips.append(skip + full(skip_b, skip))

        # Bottleneck: TCMs between the two projections.
        x = torch.addmm(self.proj_in[0], x.reshape(1, -1), self.proj_in[1])
        past_terms = torch.baddbmm(
            self.tcm_b_past, past.view(self.num_tcms * paths, 1, -1), self.tcm_w_past
        )  # (layers * 4, 1, H)
        presents = []
        # split, not unbind: (4, 1, H) views, no squeeze per layer in the ONNX graph
        for layer, past_term, (form, out_form) in zip(
            self.tcm_layers, past_terms.split(paths), forms["tcm"], strict=True
        ):
            in_b, in_w, slopes, eps, w_now, out_slopes, out_eps, out_w = layer
            h = torch.addmm(in_b, x, in_w)  # (1, H): input conv, shared by the paths
            u = prelu(h, slopes, form)  # (4, 1, H): PReLU per path
            if self.tcm_normalise:
                u = F.layer_norm(u, (hidden,), eps=eps)  # per path; affine folded
            presents.append(u)
            conv = torch.baddbmm(past_term, u, w_now)
            # Paths main 1, main 2, gate 1, gate 2 -> main * sigmoid(gate) per branch.
            gated = prelu(F.glu(conv, dim=0).view(1, -1), out_slopes, out_form)
            if self.tcm_normalise:
                gated = F.layer_norm(gated, (2 * hidden,), eps=out_eps)
            x = torch.addmm(x, gated, out_w)
        y = torch.addmm(self.proj_out[0], x, self.proj_out[1]).view(-1, self.channels)

        # Both decoders at once: (decoders, freqs, channels).
        for level, (index, weight, bias, out_size, affine, slopes) in enumerate(
            self.decoder_layers
        ):
            u = F.pad(y + skips[self.num_layers - 1 - level], (0, 0, 0, 1))  # + a zero row
            patches = u.index_select(1, index).view(2, -1, weight.shape[1])
            y = torch.matmul(patches, weight)
            y = y + full(bias, y)
            if slopes is None:  # output layer: one channel per decoder (real, imaginary)
                enhanced = y.view(2, -1)[:, :out_size].t().contiguous()  # (freqs, 2)
                return enhanced, torch.cat(presents).view(self.present_shape)
            # (2, M, stride * C_out) read as (2, M * stride, C_out): natural frequency order.
            channels = slopes.shape[2]
            y = y.view(2, -1, channels)[:, :out_size]
            if affine is not None:
                scale, shift, eps = affine
                normalised = F.layer_norm(y, (out_size, channels), eps=eps)
                y = torch.addcmul(full(shift, y), normalised, full(scale, y))
            y = prelu(y, full(slopes, y), forms["decoder"][level])  # slopes per decoder and channel
        raise AssertionError("unreachable: the last decoder layer returns")
