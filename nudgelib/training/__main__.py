"""``python -m nudgelib.training``: see :mod:`nudgelib.training.cli`."""

import sys

from nudgelib.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
