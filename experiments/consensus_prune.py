"""Whether TAPS' consensus-based pruning pays (docs/mechanisms.md §6), on seeds held out from the
study: TAPS pruning as TAP (a positive estimate, the default) against the consensus rule at
several z (a candidate stays when ĉ + z·SE reaches the prior's bar; smaller z prunes more), a
search pruned to the prior's items alone taking one last level with every user left.

What a prune can buy: fewer candidates at the next level (wider steps through the re-made
plan, fewer levels when the step covers the bits left), more users for the last level when the
search ends early, and fewer noise candidates N under the answer's bar (a lower z).

Reproduce (about 20 minutes on 2 cores):
  .venv/bin/python experiments/consensus_prune.py --epsilon 1,2,4 --seeds 5,6,7 --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import compare_variants

VARIANTS: dict[str, dict[str, Any]] = {
    "threshold": {"prune_rule": "threshold"},  # TAP's rule: ĉ > 0 (the default)
    "cons-z2": {"prune_rule": "consensus", "prune_z": 2.0},
    "cons-z1": {"prune_rule": "consensus", "prune_z": 1.0},
    "cons-z0": {"prune_rule": "consensus", "prune_z": 0.0},
    # the last level's users against the others' (final_weight): a pruned last level has fewer
    # candidates, so a lower noise floor, and may need fewer users than the search levels
    "threshold-fw0.6": {"prune_rule": "threshold", "final_weight": 0.6},
    "cons-z0-fw0.6": {"prune_rule": "consensus", "prune_z": 0.0, "final_weight": 0.6},
    "cons-z1-fw0.6": {"prune_rule": "consensus", "prune_z": 1.0, "final_weight": 0.6},
    "cons-z0-fw1.5": {"prune_rule": "consensus", "prune_z": 0.0, "final_weight": 1.5},
}


if __name__ == "__main__":
    compare_variants(__doc__.splitlines()[0], VARIANTS, "consensus_prune.py")
