"""``python -m aiscan.scanner.cli``: the same as ``aiscan``."""

import sys

from . import main

sys.exit(main())
