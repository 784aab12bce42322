"""How different the parties must look before the shared levels stop (adaptive depth,
docs/mechanisms.md §5): TAPS at the χ² test's threshold z = 3 (``heterogeneity``, the default)
and at higher ones, on seeds held out from the study. Most true items TAPS misses on Dirichlet
splits are reported by no party (§6): each holder's share is too small for its own search, and
a shared level sums every party's estimate of a prefix (M times the users behind one estimate).

Reproduce (about 15 minutes on 2 cores):
  .venv/bin/python experiments/depth_threshold.py --epsilon 1,2,4 --seeds 5,6,7 --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import compare_variants

VARIANTS: dict[str, dict[str, Any]] = {
    "z = 3 (default)": {},
    "z = 10": {"heterogeneity": 10.0},
    "z = 30": {"heterogeneity": 30.0},
}


if __name__ == "__main__":
    compare_variants(__doc__.splitlines()[0], VARIANTS, "depth_threshold.py")
