"""Which prior items a TAPS party may rank into its report (docs/mechanisms.md §6), on seeds
held out from the study: only those its own search reached (``prior_by_rank = false``, the
default; a prior item it did not reach is reported only when its estimate is significant,
> consensus_z·SE) or every prior item (``prior_by_rank = true``, the rule before); TAP beside.

A party's top-k' is a selection: an item ranked into it carries an estimate selected upwards.
A prior item the party's own search never reached is a candidate only because an earlier party
reported it; ranked in, its upward-selected estimate is added to the earlier party's, and a
noise item one party reported just under the answer's noise bar can pass the bar on that sum.
The bar (§5) counts as noise candidates only the parties' own last-level candidates, which is
true only when every report comes from the party's own search.

Reproduce (about 15 minutes on 2 cores):
  .venv/bin/python experiments/prior_report.py --epsilon 0.5,1,2,4 --seeds 5,6,7,8,9 --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import compare_variants

VARIANTS: dict[str, dict[str, Any]] = {
    "own": {"prior_by_rank": False},  # a party ranks only what its own search reached
    "rank": {"prior_by_rank": True},  # every prior item too
    "TAP": {"mechanism": "tap"},
}


if __name__ == "__main__":
    compare_variants(__doc__.splitlines()[0], VARIANTS, "prior_report.py")
