"""``python -m kanode`` is ``python -m kanode.fit``."""

import sys

from .fit import main

sys.exit(main())
