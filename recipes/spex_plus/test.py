#!/usr/bin/env python3
"""Evaluate a trained SpEx+ run on any custom directory of triplets (chunked evaluation too).

The command of ``custom_modules/inference/tse_evaluation.py`` (its options and report are
documented there)::

    python recipes/spex_plus/test.py recipes/spex_plus/hparams/spex_plus.yaml \
        -t <custom dir> [--output_folder <run>] [other YAML overrides] \
        [--chunk_sec 2.0 --chunk_overlap_sec 0.25] [--report_folder <folder>]

It needs the project importable (``pip install -e .``, or ``make``'s ``PYTHONPATH``); from the
clone's root, ``python -m custom_modules.inference.tse_evaluation`` with the same arguments
needs neither.
"""

import sys

from custom_modules.inference.tse_evaluation import cli

if __name__ == "__main__":
    sys.exit(cli())
