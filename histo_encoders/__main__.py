"""``python -m histo_encoders``: the same command line as ``histo-encoders``."""

import sys

from histo_encoders.cli import main

sys.exit(main())
