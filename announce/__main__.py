"""`python -m buoy.announce`: announce with settings from the environment (what supervisord runs)."""

import sys

from buoy.announce.main import main

sys.exit(main())
