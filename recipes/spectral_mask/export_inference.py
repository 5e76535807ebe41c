#!/usr/bin/env python3
"""Kept for the old command: the export of every recipe is ``python -m custom_modules.export``.

    python recipes/spectral_mask/export_inference.py --run <run> --out <folder>

is ``python -m custom_modules.inference.export --run <run> --out <folder>`` (the same as
``python -m custom_modules.export``; see ``custom_modules/inference/export.py``): a folder that
``SpectralMaskEnhancement.from_hparams(source=<folder>, savedir=...)`` loads. It needs the project
importable (``pip install -e .``, or ``make``'s ``PYTHONPATH``); ``python -m`` from the clone's
root needs neither.
"""

import sys

from custom_modules.inference.export import main

if __name__ == "__main__":
    sys.exit(main())
