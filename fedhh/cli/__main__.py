"""``python -m fedhh.cli``: the ``fedhh`` command."""

import sys

from fedhh.cli import main

sys.exit(main())
