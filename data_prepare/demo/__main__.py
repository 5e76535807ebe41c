"""``python -m data_prepare.demo``: see :mod:`data_prepare.demo.corpus`."""

import sys

from data_prepare.demo.corpus import main

if __name__ == "__main__":
    sys.exit(main())
