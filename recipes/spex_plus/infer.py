#!/usr/bin/env python3
"""Extract a target speaker with a trained SpEx+ run: mixture + enrolment -> wav.

The command of ``custom_modules/inference/speaker_extraction.py`` (its options are documented
there)::

    python recipes/spex_plus/infer.py --run results/spex_plus_cpu/1234 \
        --mix mixture.wav --ref enrolment.wav --out extracted.wav \
        [--chunk_sec 4 --chunk_overlap_sec 0.5] [--device cpu]

It needs the project importable (``pip install -e .``, or ``make``'s ``PYTHONPATH``); from the
clone's root, ``python -m custom_modules.inference.speaker_extraction`` with the same arguments
needs neither.
"""

import sys

from custom_modules.inference.speaker_extraction import main

if __name__ == "__main__":
    sys.exit(main())
