"""``python -m ssl_robust``: the same command line as ``ssl-robust``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
