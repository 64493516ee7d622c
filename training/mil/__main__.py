"""``python -m training.mil``: see :mod:`training.mil.cli`."""

import sys

from .cli import main

sys.exit(main())
