#!/usr/bin/env python3
"""Make a folder that ``SpectralMaskEnhancement.from_hparams`` loads, from a training run.

The command of ``custom_modules/inference/spectral_mask_export.py`` (what the folder holds and
how it is checked are documented there)::

    python recipes/spectral_mask/export_inference.py \
        --run results/spectral_mask_cpu/1234 --out results/spectral_mask_cpu/1234/inference

It needs the project importable (``pip install -e .``, or ``make``'s ``PYTHONPATH``); from the
clone's root, ``python -m custom_modules.inference.spectral_mask_export`` with the same
arguments needs neither.
"""

import sys

from custom_modules.inference.spectral_mask_export import main

if __name__ == "__main__":
    sys.exit(main())
