"""Tests of TEMPO advantages (fedhh.tempo; docs/tempo.md §4): the golden example, agreement with
the plain reference, the §4 properties, GRPO."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tempo_cases import (
    GOLDEN_UNNORM,
    SETTINGS,
    Batch,
    batches,
    for_random_batches,
    golden_inputs,
)
from tempo_reference import reference_tempo

from fedhh.tempo import build_prefix_tree, grpo_advantages, tempo_advantages


def deltas(b: Batch, td: float = 1.0) -> np.ndarray:
    """δ_{i,t} laid out like the input ([n, L]), from unnormalised TEMPO minus GRPO."""
    a, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses, norm_adv_by_std_in_grpo=False)
    g, _ = grpo_advantages(b.rewards, b.mask, b.index, norm_adv_by_std_in_grpo=False)
    return (a - g) / td


def lcp(x: list[int], y: list[int]) -> int:
    k = 0
    while k < min(len(x), len(y)) and x[k] == y[k]:
        k += 1
    return k


def prefix_value(b: Batch, rows: list[int], prefix: list[int]) -> float:
    members = [i for i in rows if b.seqs[i][: len(prefix)] == prefix]
    return float(np.mean([b.scores[i] for i in members]))


# ---------------------------------------------------------------- golden example (§4.10)
def test_golden_example() -> None:
    rewards, mask, index, resp = golden_inputs()
    a, ret = tempo_advantages(rewards, mask, index, resp, norm_adv_by_std_in_grpo=False)
    np.testing.assert_allclose(a, GOLDEN_UNNORM, atol=1e-12)
    assert ret is a
    a, _ = tempo_advantages(rewards, mask, index, resp)
    np.testing.assert_allclose(a, GOLDEN_UNNORM / (0.5 + 1e-6), rtol=1e-12)
    forest = build_prefix_tree(resp, mask, index, rewards=rewards)
    rec = forest.trie.to_records()
    assert [r["depth"] for r in rec] == [0, 1, 2, 4, 4, 4]
    assert [r["label"] for r in rec] == [0, 5, 7, 1, 2, 8]
    assert [r["members"] for r in rec] == [4, 4, 2, 1, 1, 2]
    assert [r["value"] for r in rec] == [0.75, 0.75, 0.5, 1.0, 0.0, 1.0]
    assert forest.branching.tolist() == [False, True, True, False, False, False]
    assert forest.row_leaf.tolist() == [3, 4, 5, 5]
    json.dumps(forest.to_dict(), allow_nan=False)


def test_golden_rows_in_any_order_and_mixed_groups() -> None:
    rewards, mask, _, resp = golden_inputs()
    # interleave with a second, shifted copy of the group and a singleton
    r2 = np.concatenate([rewards, rewards * 2 + 1, [[0, 0, 0, 5.0]]])
    m2 = np.concatenate([mask, mask, [[1, 1, 0, 0]]])
    t2 = np.concatenate([resp, resp, [[5, 7, 3, 3]]])
    i2 = np.array(["p"] * 4 + ["q"] * 4 + ["s"], dtype=object)
    perm = np.array([8, 4, 0, 5, 1, 6, 2, 7, 3])
    a, _ = tempo_advantages(r2[perm], m2[perm], i2[perm], t2[perm], norm_adv_by_std_in_grpo=False)
    inv = np.argsort(perm)
    np.testing.assert_allclose(a[inv][:4], GOLDEN_UNNORM, atol=1e-12)
    np.testing.assert_allclose(a[inv][4:8], 2 * GOLDEN_UNNORM, atol=1e-12)
    assert a[inv][8].tolist() == [5.0, 5.0, 0.0, 0.0]  # a group of one: μ = 0, σ = 1


# ---------------------------------------------------------------- agreement with the reference
@SETTINGS
@given(
    b=batches(),
    norm=st.booleans(),
    eps=st.sampled_from([1e-6, 1e-3, 0.1]),
    td=st.sampled_from([1.0, 0.5, 2.0]),
)
def test_matches_reference(b: Batch, norm: bool, eps: float, td: float) -> None:
    ref = reference_tempo(b.rewards, b.mask, b.index, b.responses, eps, norm, td)
    opts = {"epsilon": eps, "norm_adv_by_std_in_grpo": norm, "td_coef": td}
    got, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses, **opts)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_matches_reference_long_and_large_groups() -> None:
    rng = np.random.default_rng(7)
    # long shared prefixes (several doubling chunks), a big group (deep sparse table)
    n_groups, width = 5, 700
    rows, uids = [], []
    for g in range(n_groups):
        size = [1, 2, 40, 300, 9][g]
        base = rng.integers(0, 4, size=width)
        for _ in range(size):
            cut = int(rng.integers(0, width))
            length = int(rng.integers(cut, width + 1))
            y = np.concatenate([base[:cut], rng.integers(0, 2, size=length - cut)])
            rows.append(y)
            uids.append(g)
    n = len(rows)
    resp = rng.integers(0, 4, size=(n, width))
    mask = np.zeros((n, width), dtype=bool)
    for i, y in enumerate(rows):
        resp[i, : y.size] = y
        mask[i, : y.size] = True
    rewards = np.zeros((n, width), dtype=np.float32)
    rewards[:, 0] = rng.integers(0, 3, size=n)
    index = np.array(uids)
    perm = rng.permutation(n)
    got, _ = tempo_advantages(rewards[perm], mask[perm], index[perm], resp[perm])
    ref = reference_tempo(rewards[perm], mask[perm], index[perm], resp[perm])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- §4 properties
@for_random_batches
def test_shape_and_mask(b: Batch) -> None:  # §4.1
    a, r = tempo_advantages(b.rewards, b.mask, b.index, b.responses)
    assert a.shape == b.mask.shape and r.shape == b.mask.shape
    assert (a[b.mask == 0] == 0).all()
    assert np.isfinite(a).all()


@SETTINGS
@given(b=batches(), td=st.sampled_from([1.0, 0.3]))
def test_off_branch_equals_grpo(b: Batch, td: float) -> None:  # §4.2
    a, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses, td_coef=td)
    g, _ = grpo_advantages(b.rewards, b.mask, b.index)
    z, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses, td_coef=0.0)
    assert np.array_equal(z, g)  # td_coef = 0 is GRPO exactly
    for rows in b.group_rows().values():
        for i in rows:
            seq = b.seqs[i]
            for t, c in enumerate(b.cols[i]):
                # does the node s_{i,t} branch? (distinct next tokens or an ending member)
                nxt = {
                    (b.seqs[k][t] if len(b.seqs[k]) > t else None)
                    for k in rows
                    if b.seqs[k][:t] == seq[:t]
                }
                if len(nxt) < 2:
                    assert a[i, c] == g[i, c]
        if len({tuple(b.seqs[i]) for i in rows}) == 1:  # identical responses: GRPO
            assert np.array_equal(a[rows], g[rows])


@for_random_batches
def test_telescoping(b: Batch) -> None:  # §4.3
    d = deltas(b)
    for rows in b.group_rows().values():
        mu = float(np.mean(b.scores[rows]))
        for i in rows:
            leaf_value = prefix_value(b, rows, b.seqs[i])
            assert d[i].sum() == pytest.approx(leaf_value - mu, abs=1e-9)
            is_prefix = any(
                len(b.seqs[k]) > len(b.seqs[i]) and b.seqs[k][: len(b.seqs[i])] == b.seqs[i]
                for k in rows
            )
            same = [b.scores[k] for k in rows if b.seqs[k] == b.seqs[i]]
            if not is_prefix and len(set(same)) == 1:
                assert d[i].sum() == pytest.approx(b.scores[i] - mu, abs=1e-9)


@for_random_batches
def test_zero_sum_at_every_node(b: Batch) -> None:  # §4.4
    """Σ_{k∈N(s)} δ_{k,|s|} = 0, where a member ending at s steps to its ⊥ child (V = its mean)."""
    d = deltas(b)
    for rows in b.group_rows().values():
        prefixes = {tuple(b.seqs[i][:t]) for i in rows for t in range(len(b.seqs[i]) + 1)}
        for s in prefixes:
            depth = len(s)
            members = [k for k in rows if tuple(b.seqs[k][:depth]) == s]
            v_s = float(np.mean(b.scores[members]))
            total = 0.0
            ended = [k for k in members if len(b.seqs[k]) == depth]
            for k in members:
                if len(b.seqs[k]) > depth:
                    total += d[k, b.cols[k][depth]]
            total += sum(b.scores[k] - v_s for k in ended)  # the ⊥ steps
            assert total == pytest.approx(0.0, abs=1e-9)


@for_random_batches
def test_sparsity(b: Batch) -> None:  # §4.5
    d = deltas(b)
    for rows in b.group_rows().values():
        for i in rows:
            t_nonzero = [t for t, c in enumerate(b.cols[i]) if d[i, c] != 0]
            assert len(t_nonzero) <= len(rows) - 1
            diverge = {lcp(b.seqs[i], b.seqs[k]) for k in rows if k != i}
            assert set(t_nonzero) <= diverge


@SETTINGS
@given(b=batches(equal_rewards=True), norm=st.booleans())
def test_equal_rewards_give_zero(b: Batch, norm: bool) -> None:  # §4.6
    a, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses, norm_adv_by_std_in_grpo=norm)
    sizes = {u: len(r) for u, r in b.group_rows().items()}
    multi = np.array([sizes[u] > 1 for u in b.index.tolist()])
    assert not np.isnan(a).any()
    assert (a[multi] == 0).all()


@SETTINGS
@given(b=batches(), data=st.data())
def test_permutation_and_group_independence(b: Batch, data: Any) -> None:  # §4.7
    a, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses)
    perm = np.array(data.draw(st.permutations(range(len(b.seqs)))))
    p, _ = tempo_advantages(b.rewards[perm], b.mask[perm], b.index[perm], b.responses[perm])
    assert np.array_equal(p, a[perm])
    # change one group's rewards and tokens: the other groups do not move
    uid = b.index[0]
    rows = np.flatnonzero(b.index == uid)
    rewards, resp = b.rewards.copy(), b.responses.copy()
    rewards[rows] = rewards[rows] * 3 - 1
    resp[rows] = (resp[rows] + 1) % 3
    c, _ = tempo_advantages(rewards, b.mask, b.index, resp)
    others = b.index != uid
    assert np.array_equal(c[others], a[others])


@SETTINGS
@given(
    b=batches(), scale=st.sampled_from([0.5, 2.0, 10.0]), shift=st.sampled_from([-3.0, 0.0, 7.0])
)
def test_affine_invariance(b: Batch, scale: float, shift: float) -> None:  # §4.8
    sizes = {u: len(r) for u, r in b.group_rows().items()}
    multi = np.array([sizes[u] > 1 for u in b.index.tolist()])
    a, _ = tempo_advantages(b.rewards, b.mask, b.index, b.responses)
    moved = b.rewards * scale
    moved[np.arange(len(b.seqs)), np.argmax(b.rewards != 0, axis=1)] += shift
    assert np.allclose(moved.sum(1), b.scores * scale + shift)
    m, _ = tempo_advantages(moved, b.mask, b.index, b.responses)
    np.testing.assert_allclose(m[multi], a[multi], rtol=1e-4, atol=1e-4)


@for_random_batches
def test_delta_bounded_by_reward_range(b: Batch) -> None:  # §4.9
    d = deltas(b)
    for rows in b.group_rows().values():
        spread = float(np.ptp(b.scores[rows]))
        assert (np.abs(d[rows]) <= spread + 1e-12).all()


# ---------------------------------------------------------------- GRPO
def verl_grpo_reference(
    rewards: np.ndarray, mask: np.ndarray, index: Any, epsilon: float = 1e-6, norm: bool = True
) -> np.ndarray:
    scores = rewards.sum(-1)
    by: dict[Any, list[float]] = defaultdict(list)
    for i in range(len(scores)):
        by[index[i]].append(scores[i])
    out = np.empty(len(scores))
    for i in range(len(scores)):
        vals = by[index[i]]
        mean, std = (0.0, 1.0) if len(vals) == 1 else (np.mean(vals), np.std(vals, ddof=1))
        out[i] = (scores[i] - mean) / (std + epsilon) if norm else scores[i] - mean
    return out[:, None] * mask


@SETTINGS
@given(b=batches(), norm=st.booleans())
def test_grpo_matches_verl_semantics(b: Batch, norm: bool) -> None:
    g, r = grpo_advantages(b.rewards, b.mask, b.index, norm_adv_by_std_in_grpo=norm)
    assert r is g
    np.testing.assert_allclose(g, verl_grpo_reference(b.rewards, b.mask, b.index, norm=norm))
