"""``python -m consolidator.sim``: same as ``python -m consolidator.sim.cli``."""

import sys

from consolidator.sim.cli import main

sys.exit(main())
