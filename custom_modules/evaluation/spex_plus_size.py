"""Size and compute of the SpEx+ models of recipe YAML files (``recipes/spex_plus/model_size.py``).

Usage (from the clone's root; ``recipes/spex_plus/model_size.py`` takes the same arguments)::

    python -m custom_modules.evaluation.spex_plus_size [--num_speakers 251] [hparams/*.yaml ...]

Default YAMLs: ``recipes/spex_plus/hparams/spex_plus.yaml`` and ``spex_plus_cpu.yaml``.

Printed per YAML: parameters without the speaker-classification head (what
inference uses), parameters with a head of ``--num_speakers`` classes (251
training speakers in train-clean-100; what training uses), MACs per second
of mixture of the extraction path (encoder, extractor, decoders; batch of one,
steady state) and MACs of embedding one second of reference. MACs are counted
by ``custom_modules.evaluation.complexity`` (convolutions and linear layers).
"""

import argparse
from pathlib import Path

import torch
from torch import nn

from custom_modules.evaluation.complexity import (
    RECIPES,
    count_macs,
    count_parameters,
    load_recipe_model,
    macs_per_second,
)

DEFAULT_YAMLS = tuple(
    RECIPES / "spex_plus" / "hparams" / name for name in ("spex_plus.yaml", "spex_plus_cpu.yaml")
)


class ExtractionPath(nn.Module):
    """``mixture -> s1`` with a fixed embedding: the per-second cost of extraction."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("embedding", torch.zeros(1, model.speaker_encoder.output.out_channels))

    def forward(self, mixture):
        return self.model.extract(mixture, self.embedding)


class EmbeddingPath(nn.Module):
    """``reference -> embedding``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, reference):
        return self.model.embed(reference)


def model_size(hparams_file, num_speakers=251, sr=16000) -> dict:
    """Parameters and MACs of the model of ``hparams_file``."""
    with_head = load_recipe_model(hparams_file, {"num_speakers": num_speakers})
    without_head = load_recipe_model(hparams_file, {"num_speakers": 0})
    return {
        "parameters": count_parameters(without_head),
        "parameters_with_head": count_parameters(with_head),
        "extraction_macs_per_second": macs_per_second(ExtractionPath(without_head), sr=sr),
        "embedding_macs_per_reference_second": count_macs(
            EmbeddingPath(without_head), torch.zeros(1, sr)
        ),
    }


def main(argv=None) -> dict:
    """Print (and return) the figures of each YAML."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hparams", nargs="*", default=[str(p) for p in DEFAULT_YAMLS])
    parser.add_argument("--num_speakers", type=int, default=251, help="classes of the head")
    args = parser.parse_args(argv)
    results = {}
    for hparams_file in args.hparams:
        size = model_size(hparams_file, args.num_speakers)
        results[hparams_file] = size
        print(
            f"{Path(hparams_file).name}: {size['parameters']:,} parameters "
            f"({size['parameters_with_head']:,} with a {args.num_speakers}-speaker head); "
            f"extraction {size['extraction_macs_per_second'] / 1e9:.2f} G MACs per second of "
            f"mixture; embedding {size['embedding_macs_per_reference_second'] / 1e9:.2f} G MACs "
            "per second of reference"
        )
    return results


if __name__ == "__main__":
    main()
