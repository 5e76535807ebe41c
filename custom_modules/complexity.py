"""Model size and compute: parameter count and multiply-accumulates (MACs) per second.

What is counted
---------------
MACs of ``Conv1d``/``Conv2d``/``ConvTranspose1d``/``ConvTranspose2d``/``Linear``
layers, measured with forward hooks on a real forward pass (so only layers that
actually run are counted, with their actual output sizes):

* convolution: ``output elements x in_channels / groups x kernel size``;
* transposed convolution: ``input elements x out_channels / groups x kernel size``;
* linear: ``output elements x in_features``.

``macs_per_second`` gives the steady-state rate (edge frames excluded).

Not counted: bias additions, normalisation, activations, gating products,
residual/skip additions and the STFT/inverse STFT (FFTs; a 320-point real FFT
is a few thousand operations per 10 ms frame, negligible here).

Command line (figures of the full and CPU-size UNet-TCM)::

    python -m custom_modules.complexity
    python -m custom_modules.complexity --preset cpu --config channels=24 --config norm=batch_norm
"""

from __future__ import annotations

import argparse
import ast
import inspect
import math

import torch
from torch import nn

from custom_modules.models.unet_tcm import ComplexSpectralMapping, UNetEngine

STFT_KEYS = ("n_fft", "win_length", "hop_length")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``).

    Example
    -------
    >>> count_parameters(nn.Linear(10, 3))
    33
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs, output) -> int:
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        kernel = math.prod(module.kernel_size)
        return inputs[0].numel() * module.out_channels // module.groups * kernel
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        kernel = math.prod(module.kernel_size)
        return output.numel() * module.in_channels // module.groups * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: nn.Module, example_input: torch.Tensor, by_module: bool = False):
    """MACs of one forward pass of ``model`` on ``example_input`` (see module docstring).

    Returns the total (int), or with ``by_module=True`` a dict
    ``{submodule name: MACs}`` of the layers that ran.

    Example
    -------
    >>> count_macs(nn.Conv1d(2, 4, kernel_size=3), torch.zeros(1, 2, 10))  # 8 outputs x 4 ch x 6
    192
    """
    counts = {}
    handles = []
    layer_types = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
    for name, module in model.named_modules():
        if isinstance(module, layer_types):

            def hook(module, inputs, output, name=name):
                counts[name] = counts.get(name, 0) + _layer_macs(module, inputs, output)

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts if by_module else sum(counts.values())


def macs_per_second(model: nn.Module, sr=16000, seconds=1.0) -> float:
    """Steady-state MACs per second of audio of a waveform model (batch of one).

    ``(MACs on 2 * seconds - MACs on seconds) / seconds`` of silent input
    (shape (1, samples); the MACs do not depend on the sample values), so
    the extra edge frames of a finite signal are not counted.

    Example
    -------
    >>> conv = nn.Conv1d(1, 1, kernel_size=3, padding=1)  # 3 MACs per sample
    >>> macs_per_second(nn.Sequential(nn.Unflatten(0, (1, 1)), conv), sr=100)
    300.0
    """
    num_samples = round(sr * seconds)
    short = count_macs(model, torch.zeros(1, num_samples))
    long = count_macs(model, torch.zeros(1, 2 * num_samples))
    return (long - short) / seconds


def unet_tcm_presets() -> dict:
    """Keyword arguments of the full-size (paper) and CPU-size UNet-TCM models.

    They mirror ``recipes/unet_tcm/hparams/unet.yaml`` and ``unet_cpu.yaml``
    (keep them in sync); window and hop follow from ``n_fft`` (window
    ``n_fft``, hop half of it). Returns new dicts on every call.
    """
    return {
        "full": dict(
            n_fft=320, num_layers=5, channels=64,
            bottleneck_dim=256, tcm_hidden=64, tcm_kernel=5,
            tcm_dilations=(1, 2, 4, 8, 16, 32), tcm_repeats=2, norm="frame_layer_norm",
        ),
        "cpu": dict(
            n_fft=320, num_layers=4, channels=16,
            bottleneck_dim=128, tcm_hidden=32, tcm_kernel=5,
            tcm_dilations=(1, 2, 4, 8, 16), tcm_repeats=1, norm="frame_layer_norm",
        ),
    }  # fmt: skip


def build_unet_tcm(**config) -> ComplexSpectralMapping:
    """``ComplexSpectralMapping(UNetEngine(...))`` from one flat dict of hparams.

    ``n_fft``/``win_length``/``hop_length`` go to the wrapper, everything
    else to ``UNetEngine`` (``num_freqs`` is derived from ``n_fft``).

    Example
    -------
    >>> model = build_unet_tcm(**unet_tcm_presets()["cpu"])
    >>> model.engine.num_freqs
    161
    """
    engine_keys = set(inspect.signature(UNetEngine).parameters) - {"num_freqs"}
    unknown = set(config) - engine_keys - set(STFT_KEYS)
    if unknown:
        raise ValueError(
            f"unknown UNet-TCM option(s) {sorted(unknown)}; "
            f"expected some of {sorted(engine_keys | set(STFT_KEYS))}"
        )
    stft = {key: config[key] for key in STFT_KEYS if key in config}
    n_fft = stft.setdefault("n_fft", 320)
    engine_kwargs = {key: value for key, value in config.items() if key not in STFT_KEYS}
    engine = UNetEngine(num_freqs=n_fft // 2 + 1, **engine_kwargs)
    return ComplexSpectralMapping(engine, **stft)


def _parse_override(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--config expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value  # a bare string such as batch_norm


def main(argv=None) -> dict:
    """Print (and return) parameters and MACs/s of the chosen presets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=("full", "cpu", "all"), default="all")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="override a preset option (repeatable), e.g. channels=32 or tcm_dilations=(1,2,4)",
    )
    parser.add_argument("--sr", type=int, default=16000)
    args = parser.parse_args(argv)

    presets = unet_tcm_presets()
    names = list(presets) if args.preset == "all" else [args.preset]
    results = {}
    for name in names:
        config = {**presets[name], **dict(args.config)}
        model = build_unet_tcm(**config)
        params = count_parameters(model)
        macs = macs_per_second(model, sr=args.sr)
        results[name] = {"parameters": params, "macs_per_second": macs, "config": config}
        print(
            f"{name}: {params:,} parameters, {macs / 1e6:,.1f} M MACs per second of audio "
            f"(STFT excluded; {config})"
        )
    return results


if __name__ == "__main__":
    main()
