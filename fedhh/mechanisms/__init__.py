"""Mechanisms: PEM (single population), PEM-Local, PEM-Global, TAP and TAPS
(docs/mechanisms.md §4–6).

* Privacy: each user belongs to exactly one group and sends one ε-LDP report, so every
  mechanism is ε-LDP per user; candidates, priors, thresholds and sums are post-processing.
* Accuracy: a group of n_g users estimating |C| candidates has per-count variance
  Var_FO(n_g, |C|+1) (see :mod:`fedhh.oracles`), scaled by (n_i/n_g)² to the party; summing
  parties adds variances.

Party side: :mod:`fedhh.mechanisms.local`; coordinator side: :mod:`fedhh.mechanisms.plans`;
[choice] rules: :mod:`fedhh.mechanisms.strategies`; parameters: :mod:`fedhh.mechanisms.params`;
what each mechanism is (its party modes, prior, completion, baseline):
:mod:`fedhh.mechanisms.registry`; its levels and rounds: :mod:`fedhh.mechanisms.layout`; the level
planner: :mod:`fedhh.mechanisms.levels`.
"""

from fedhh.mechanisms.params import MECHANISMS, MechanismParams
from fedhh.mechanisms.plans import Combined, combine, run_plan
from fedhh.mechanisms.registry import REGISTRY, Mechanism, mechanism_of

__all__ = [
    "MECHANISMS",
    "REGISTRY",
    "Combined",
    "Mechanism",
    "MechanismParams",
    "combine",
    "mechanism_of",
    "run_plan",
]
