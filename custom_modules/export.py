"""``python -m custom_modules.export``: see :mod:`custom_modules.inference.export`."""

import sys

from custom_modules.inference.export import main

if __name__ == "__main__":
    sys.exit(main())
