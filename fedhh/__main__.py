"""``python -m fedhh``: the ``fedhh`` command."""

import sys

from fedhh.cli import main

sys.exit(main())
