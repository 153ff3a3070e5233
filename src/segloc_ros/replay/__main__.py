"""``python -m segloc_ros.replay``: the ``segloc_replay`` command line."""

import sys

from segloc_ros.replay.cli import main

if __name__ == "__main__":
    sys.exit(main())
