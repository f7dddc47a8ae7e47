"""``python -m collector.cli``: the same as ``gnahat-collector``."""

import sys

from collector.cli import main

sys.exit(main())
