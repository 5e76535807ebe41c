#!/usr/bin/env python3
"""Size and compute of the SpEx+ models of this recipe's YAML files (the README's table).

The command of ``custom_modules/evaluation/spex_plus_size.py`` (defaults: both YAMLs of
``hparams/``)::

    python recipes/spex_plus/model_size.py [--num_speakers 251] [hparams/*.yaml ...]

It needs the project importable (``pip install -e .``, or ``make``'s ``PYTHONPATH``); from the
clone's root, ``python -m custom_modules.evaluation.spex_plus_size`` with the same arguments
needs neither.
"""

from custom_modules.evaluation.spex_plus_size import main

if __name__ == "__main__":
    main()
