"""The plain reference of TEMPO advantages (docs/tempo.md §1–2): a Python dict trie per group,
then one pass per token, with no array tricks.

tests/test_tempo*.py check :mod:`fedhh.tempo` against it and experiments/bench_tempo.py times it;
it imports neither fedhh nor test tooling.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np


def reference_tempo(
    rewards: np.ndarray,
    mask: np.ndarray,
    index: Any,
    responses: np.ndarray,
    epsilon: float = 1e-6,
    norm: bool = True,
    td_coef: float = 1.0,
) -> np.ndarray:
    """Spec §1–2 token by token: a dict trie per group, then one pass per token."""
    n, width = mask.shape
    scores = rewards.sum(axis=1, dtype=np.float64).tolist()
    groups: dict[Any, list[int]] = {}
    for i, uid in enumerate(np.asarray(index).tolist()):
        groups.setdefault(uid, []).append(i)
    out = np.zeros((n, width), dtype=np.float64)
    for rows in groups.values():
        vals = [scores[i] for i in rows]
        mu, sd = (statistics.fmean(vals), statistics.stdev(vals)) if len(rows) > 1 else (0.0, 1.0)
        div = sd + epsilon if norm else 1.0
        root: dict[str, Any] = {"s": 0.0, "c": 0, "k": {}}
        seqs = {}
        for i in rows:
            m = mask[i].tolist()
            cols = [c for c in range(width) if m[c]]
            toks = responses[i].tolist()
            seq = [toks[c] for c in cols]
            seqs[i] = (seq, cols)
            node = root
            node["s"] += scores[i]
            node["c"] += 1
            for tok in seq:
                node = node["k"].setdefault(tok, {"s": 0.0, "c": 0, "k": {}})
                node["s"] += scores[i]
                node["c"] += 1
        for i in rows:
            seq, cols = seqs[i]
            row = out[i]
            node = root
            for t, tok in enumerate(seq):
                nxt = node["k"][tok]
                delta = nxt["s"] / nxt["c"] - node["s"] / node["c"]
                row[cols[t]] = ((scores[i] - mu) + td_coef * delta) / div
                node = nxt
    return out
