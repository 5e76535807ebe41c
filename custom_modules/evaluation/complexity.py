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

A waveform model predicting from a finite receptive field (the Denoising
WaveNet: its ``receptive_field`` attribute) gets it printed too; its MACs
are those of its default forward, i.e. of whole-signal inference with its
overlapping fragments.

Command line (figures of the full and CPU-size UNet-TCM)::

    python -m custom_modules.evaluation.complexity    # unet.yaml and unet_cpu.yaml
    python -m custom_modules.evaluation.complexity recipes/<recipe>/hparams/<file>.yaml
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from torch import nn

from custom_modules.models.unet_tcm import ResizeConvTranspose2d

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``).

    Example
    -------
    >>> count_parameters(nn.Linear(10, 3))
    33
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs, output) -> int:
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, ResizeConvTranspose2d)):
        # ResizeConvTranspose2d runs as the equivalent transposed convolution.
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
    layer_types = (
        nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear,
        ResizeConvTranspose2d,
    )  # fmt: skip
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


def load_recipe_model(hparams_file, overrides=None) -> nn.Module:
    """The ``model`` of a recipe YAML, built exactly as training builds it.

    Output paths are redirected to a temporary folder (loading a recipe YAML
    instantiates its logger and checkpointer); ``data_folder`` is not needed.

    Arguments
    ---------
    hparams_file : str or Path
        A recipe YAML with a top-level ``model`` key.
    overrides : dict, optional
        Extra top-level overrides (HyperPyYAML semantics).
    """
    text = Path(hparams_file).read_text(encoding="utf-8")
    keys = set(re.findall(r"^(\w+)\s*:", text, re.MULTILINE))
    with tempfile.TemporaryDirectory() as tmp:
        values = {k: tmp for k in ("data_folder", "output_folder") if k in keys}
        hparams = load_hyperpyyaml(text, {**values, **(overrides or {})})
    if "model" not in hparams:
        raise KeyError(f"{hparams_file}: no top-level 'model' key")
    return hparams["model"]


def main(argv=None) -> dict:
    """Print (and return) parameters and MACs/s of the models of recipe YAMLs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "hparams",
        nargs="*",
        default=[
            str(RECIPES / "unet_tcm/hparams/unet.yaml"),
            str(RECIPES / "unet_tcm/hparams/unet_cpu.yaml"),
        ],
        help="recipe YAML files (default: UNet-TCM unet.yaml and unet_cpu.yaml)",
    )
    parser.add_argument("--sr", type=int, default=16000)
    args = parser.parse_args(argv)
    results = {}
    for hparams_file in args.hparams:
        model = load_recipe_model(hparams_file)
        params = count_parameters(model)
        macs = macs_per_second(model, sr=args.sr)
        results[hparams_file] = {"parameters": params, "macs_per_second": macs}
        print(
            f"{hparams_file}: {params:,} parameters, "
            f"{macs / 1e6:,.1f} M MACs per second of audio (STFT excluded)"
        )
        field = getattr(model, "receptive_field", None)
        if field is not None:  # waveform models with a finite field (Denoising WaveNet)
            results[hparams_file]["receptive_field"] = field
            print(f"    receptive field {field:,} samples ({1000 * field / args.sr:.1f} ms)")
    return results


if __name__ == "__main__":
    main()
