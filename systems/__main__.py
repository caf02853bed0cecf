"""``python -m systems``: see :mod:`systems.cli`."""

import sys

from .cli import main

sys.exit(main())
