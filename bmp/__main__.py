"""``python -m bmp ...`` (and so ``torchrun -m bmp eval ...``): the ``bmp`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
