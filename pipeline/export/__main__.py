"""``python -m pipeline.export``."""

import sys

from pipeline.export import main

sys.exit(main())
