"""``python -m kanode.analysis`` (see :mod:`kanode.analysis.cli`)."""

import sys

from kanode.analysis.cli import main

sys.exit(main())
