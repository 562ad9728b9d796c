"""Entry point for ``python -m carclf``."""

import sys

from carclf.cli import main

if __name__ == "__main__":
    sys.exit(main())
