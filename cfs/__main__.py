"""``python -m cfs`` is the ``cfs`` command."""

import sys

from cfs.cli import main

sys.exit(main())
