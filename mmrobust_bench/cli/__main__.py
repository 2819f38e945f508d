"""``python -m mmrobust_bench.cli`` (what ``torchrun -m`` runs)."""

import sys

from . import main

sys.exit(main())
