"""``python -m segloc ...``: the ``segloc`` command, e.g. under ``torchrun -m segloc train sld-backbone ...``."""

import sys

from segloc.cli import main

if __name__ == "__main__":
    sys.exit(main())
