"""Fewer, wider levels (issue 22 item 3): TAPS with the default decode budget B = 2^17 (the
``auto`` oracle, and olh-affine at every level) against olh-affine with B = 2^20 − 64 (a party
refuses sets over 2^20, and a TAPS level may add the prior's 2k items), whose levels hold up to
that many candidates (for m = 32: levels at 19/32 bits instead of 17/25/32), on seeds held out
from the study. Prints mean F1 and the wrong items answered per run (k = 16, M = 8).

Fewer levels give each level more users, but the last level's candidate set grows and with it
the noise bar's z (it grows with log N), so it is measured, not assumed.

Reproduce (the figures of docs/mechanisms.md §10 are seeds 5–7 and 8–12 of these two runs,
weighted 3:5; about 45 minutes on 2 shared cores):
  .venv/bin/python experiments/wide_levels.py --epsilon 0.5,1,2,4 --seeds 5,6,7 --jobs 2
  .venv/bin/python experiments/wide_levels.py --epsilon 0.5,1,2,4 --seeds 8,9,10,11,12 --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import compare_variants

VARIANTS: dict[str, dict[str, Any]] = {
    "auto B=2^17": {},
    "affine B=2^17": {"oracle": "olh-affine"},
    "affine B=2^20": {"oracle": "olh-affine", "level_candidates": (1 << 20) - 64},
}


if __name__ == "__main__":
    compare_variants(__doc__.splitlines()[0], VARIANTS, "wide_levels.py")
