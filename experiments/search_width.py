"""Whether a wider search finds more of the top-k (docs/mechanisms.md §10), on seeds held out
from the study. Most true top-16 items TAPS misses at ε = 2 are never reported by any party:
their prefixes fell out of every holder's top-κ at some level. κ (``kappa``, prefixes a Phase II
level keeps, 2k by default) sets how marginal a prefix may be and still be extended, and the
candidates of the next level (κ·2^s ≤ B): with olh-affine's near-linear decode B can be 2²⁰,
so a wider κ need not cost levels.

Reproduce (about 30 minutes on 2 cores):
  .venv/bin/python experiments/search_width.py --epsilon 1,2,4 --seeds 5,6,7 --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import compare_variants

WIDE = {"oracle": "olh-affine", "level_candidates": (1 << 20) - 64}  # under a party's limit
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},  # κ = 2k = 32, B = 2¹⁷
    "kappa64": {"kappa": 64},
    "kappa128-B20": {"kappa": 128, **WIDE},
    "kappa256-B20": {"kappa": 256, **WIDE},
}


if __name__ == "__main__":
    compare_variants(__doc__.splitlines()[0], VARIANTS, "search_width.py")
