"""Test cases of fedhh.tempo (tests/test_tempo*.py): random batches drawn by hypothesis, and the
golden example of docs/tempo.md §4.10."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# FEDHH_HYPOTHESIS_EXAMPLES=1000 runs a longer search locally
SETTINGS = settings(
    max_examples=int(os.environ.get("FEDHH_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- random batches
@dataclass
class Batch:
    rewards: np.ndarray  # [n, L] token-level
    mask: np.ndarray
    index: np.ndarray  # object array of uids
    responses: np.ndarray
    seqs: list[list[int]]  # response tokens of each row
    cols: list[np.ndarray]  # their columns

    def group_rows(self) -> dict[Any, list[int]]:
        out: dict[Any, list[int]] = defaultdict(list)
        for i, u in enumerate(self.index.tolist()):
            out[u].append(i)
        return out

    @property
    def scores(self) -> np.ndarray:
        return self.rewards.sum(axis=1)


@st.composite
def batches(
    draw: Any,
    max_groups: int = 4,
    max_g: int = 6,
    max_len: int = 8,
    holes: bool | None = None,
    equal_rewards: bool = False,
) -> Batch:
    n_groups = draw(st.integers(1, max_groups))
    width = draw(st.integers(1, max_len))
    vocab = draw(st.integers(1, 3))
    tok = st.integers(0, vocab - 1)
    seqs: list[list[int]] = []
    uids: list[str] = []
    for g in range(n_groups):
        size = draw(st.integers(1, max_g))
        group: list[list[int]] = []
        for _ in range(size):
            mode = draw(st.sampled_from(["new", "dup", "prefix", "extend"])) if group else "new"
            if mode == "new":
                y = draw(st.lists(tok, max_size=width))
            else:
                src = draw(st.sampled_from(group))
                if mode == "dup":
                    y = list(src)
                elif mode == "prefix":
                    y = src[: draw(st.integers(0, len(src)))]
                else:
                    cut = draw(st.integers(0, len(src)))
                    y = src[:cut] + draw(st.lists(tok, max_size=width - cut))
            group.append(y)
        seqs += group
        uids += [f"uid-{g}"] * size
    n = len(seqs)
    perm = draw(st.permutations(range(n)))
    seqs = [seqs[p] for p in perm]
    uids = [uids[p] for p in perm]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    use_holes = draw(st.booleans()) if holes is None else holes
    responses = rng.integers(0, vocab, size=(n, width))  # pads are real token ids
    mask = np.zeros((n, width), dtype=np.int64)
    cols = []
    for i, y in enumerate(seqs):
        if use_holes and rng.random() < 0.5:
            c = np.sort(rng.choice(width, size=len(y), replace=False))
        else:
            c = np.arange(len(y))
        mask[i, c] = 1
        responses[i, c] = y
        cols.append(c)
    if equal_rewards:
        values = np.full(n, draw(st.sampled_from([0.0, 1.0, 0.3, -7.5])))
    else:
        values = np.array(
            draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, -2.0, 3.25]), min_size=n, max_size=n))
        )
    rewards = np.zeros((n, width))
    at = rng.integers(0, width, size=n)
    rewards[np.arange(n), at] = values
    index = np.array(uids, dtype=object)
    return Batch(rewards, mask, index, responses, seqs, cols)


def for_random_batches(test: Callable[[Batch], None]) -> Callable[[], None]:
    """``test(b)`` as a property of every random batch ``b`` (:func:`batches`, :data:`SETTINGS`)."""
    return SETTINGS(given(b=batches())(test))


# ---------------------------------------------------------------- golden example (§4.10)
GOLDEN_RESP = np.array([[5, 7, 1, 9], [5, 7, 2, 9], [5, 8, 3, 9], [5, 8, 3, 9]])
GOLDEN_UNNORM = np.array(
    [
        [0.25, 0, 0.75, 0.25],
        [-0.75, -1, -1.25, -0.75],
        [0.25, 0.5, 0.25, 0.25],
        [0.25, 0.5, 0.25, 0.25],
    ]
)


def golden_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rewards = np.zeros((4, 4))
    rewards[:, -1] = [1, 0, 1, 1]
    return rewards, np.ones((4, 4), dtype=np.int64), np.array(["p"] * 4, dtype=object), GOLDEN_RESP
