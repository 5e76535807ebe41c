"""``python -m custom_modules.enhance``: see :mod:`custom_modules.inference.enhance`."""

import sys

from custom_modules.inference.enhance import main

if __name__ == "__main__":
    sys.exit(main())
