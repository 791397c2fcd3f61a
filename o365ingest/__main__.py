"""``python -m o365ingest``."""

import sys

from .cli import main
from .process import tune_garbage_collector

tune_garbage_collector()
sys.exit(main())
