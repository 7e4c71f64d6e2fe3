"""``python -m taskiq_abort.cli``."""

import sys

from taskiq_abort.cli import main

if __name__ == "__main__":
    sys.exit(main())
