"""``python -m saga_core``: the operations CLI (see ``saga --help``)."""

import sys

from ._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
