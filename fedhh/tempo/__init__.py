"""TEMPO advantages on prefix trees of sampled responses (docs/tempo.md), built on fedhh.core.trie.

The G responses sampled for one prompt (one ``index`` uid) form a prefix tree (P2T): a node is a
distinct token prefix s, its members N(s) are the responses that start with s, and its value
V(s) is the mean outcome reward of its members. With r_i the row sum of ``token_level_rewards``,
μ and σ the group's mean and Bessel-corrected standard deviation (μ = 0, σ = 1 for a group of one,
as in verl's GRPO), and s_{i,t} the first t tokens of response i::

    δ_{i,t} = V(s_{i,t+1}) − V(s_{i,t})
    A_{i,t} = [ (r_i − μ) + td_coef · δ_{i,t} ] / (σ + ε)        for t < T_i, 0 elsewhere

δ is zero except at the first token after a branching node, so TEMPO equals GRPO everywhere else.

The package, by job (no per-token Python loop anywhere; docs/tempo.md §5):

* :mod:`~fedhh.tempo.forest` — :class:`PrefixForest` and :func:`build_prefix_tree`: the forest
  of all groups from one sort of the rows and the longest common prefixes of adjacent rows;
* :mod:`~fedhh.tempo.advantages` — :func:`grpo_advantages`, :func:`tempo_advantages` (verl's
  layout) and :func:`tempo_advantages_trl` (TRL's layout);
* :mod:`~fedhh.tempo.batch` — the inputs as validated numpy views, and the group statistics.

Inputs may be numpy arrays or torch tensors (torch is imported only if a tensor is passed); the
result has the type, dtype and device of ``token_level_rewards``. Inputs are never modified. The
mask is read as binary (nonzero = response token).
"""

from fedhh.tempo.advantages import grpo_advantages, tempo_advantages, tempo_advantages_trl
from fedhh.tempo.forest import PrefixForest, build_prefix_tree

__all__ = [
    "PrefixForest",
    "build_prefix_tree",
    "grpo_advantages",
    "tempo_advantages",
    "tempo_advantages_trl",
]
