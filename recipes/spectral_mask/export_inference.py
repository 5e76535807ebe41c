#!/usr/bin/env python3
"""Kept for the old command: the export of every recipe is ``python -m custom_modules.export``.

    python recipes/spectral_mask/export_inference.py --run <run> --out <folder>

is ``python -m custom_modules.export --run <run> --out <folder>`` (see
``custom_modules/inference/export.py``): a folder that
``SpectralMaskEnhancement.from_hparams(source=<folder>, savedir=...)`` loads.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a clone, uninstalled
from custom_modules.inference.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
