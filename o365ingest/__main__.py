"""``python -m o365ingest``."""

import sys

from .cli import main

sys.exit(main())
