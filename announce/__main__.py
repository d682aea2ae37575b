"""`python -m announce`: announce with settings from the environment (what supervisord runs)."""

import sys

from announce.main import main

sys.exit(main())
