"""``python -m rlcv_lib``: the command line (:mod:`rlcv_lib.cli`)."""

import sys

from rlcv_lib.cli import main

sys.exit(main())
