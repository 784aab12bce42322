"""Tests of TEMPO advantages and the prefix forest (fedhh.tempo; docs/tempo.md §4)."""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedhh.errors import DataError, ParameterError
from fedhh.tempo import (
    build_prefix_tree,
    grpo_advantages,
    tempo_advantages,
    tempo_advantages_trl,
)
from fedhh.trie import END

# FEDHH_HYPOTHESIS_EXAMPLES=1000 runs a longer search locally
SETTINGS = settings(
    max_examples=int(os.environ.get("FEDHH_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- a plain reference (dict trie)
def reference_tempo(
    rewards: np.ndarray,
    mask: np.ndarray,
    index: Any,
    responses: np.ndarray,
    epsilon: float = 1e-6,
    norm: bool = True,
    td_coef: float = 1.0,
) -> np.ndarray:
    """Spec §1–2 token by token, with a Python dict trie per group."""
    n, width = mask.shape
    score = [float(sum(rewards[i].tolist())) for i in range(n)]
    groups: dict[Any, list[int]] = defaultdict(list)
    for i in range(n):
        groups[index[i]].append(i)
    adv = np.zeros((n, width), dtype=np.float64)
    for rows in groups.values():
        if len(rows) == 1:
            mu, sd = 0.0, 1.0
        else:
            mu = statistics.fmean(score[i] for i in rows)
            sd = statistics.stdev(score[i] for i in rows)
        root: dict[str, Any] = {"sum": 0.0, "count": 0, "kids": {}}
        seqs = {}
        for i in rows:
            cols = [c for c in range(width) if mask[i, c] != 0]
            seq = [int(responses[i, c]) for c in cols]
            seqs[i] = (seq, cols)
            node = root
            node["sum"] += score[i]
            node["count"] += 1
            for tok in seq:
                node = node["kids"].setdefault(tok, {"sum": 0.0, "count": 0, "kids": {}})
                node["sum"] += score[i]
                node["count"] += 1
        for i in rows:
            seq, cols = seqs[i]
            node = root
            for t, tok in enumerate(seq):
                nxt = node["kids"][tok]
                delta = nxt["sum"] / nxt["count"] - node["sum"] / node["count"]
                a = (score[i] - mu) + td_coef * delta
                adv[i, cols[t]] = a / (sd + epsilon) if norm else a
                node = nxt
    return adv


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
@SETTINGS
@given(b=batches())
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


@SETTINGS
@given(b=batches())
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


@SETTINGS
@given(b=batches())
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


@SETTINGS
@given(b=batches())
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


@SETTINGS
@given(b=batches())
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


# ---------------------------------------------------------------- the forest
@SETTINGS
@given(b=batches())
def test_forest_structure(b: Batch) -> None:
    f = build_prefix_tree(b.responses, b.mask, b.index, rewards=b.rewards)
    trie = f.trie
    par, depth = trie.parent, trie.depth
    assert (par[par >= 0] < np.flatnonzero(par >= 0)).all()
    groups = b.group_rows()
    assert len(f.groups) == len(groups) and f.roots.size == len(groups)
    for g, uid in enumerate(f.groups):
        rows = groups[uid]
        nodes = f.group_nodes(g)
        assert nodes[0] == f.roots[g] and par[nodes[0]] == -1
        assert trie.label[nodes[0]] == g
        assert f.members[f.roots[g]] == len(rows)
        assert (f.node_group[nodes] == g).all()
        distinct = {tuple(b.seqs[i]) for i in rows}
        leaves = [v for v in nodes if f.branching[v] is False or not (par == v).any()]
        assert len([v for v in nodes if not (par == v).any()]) == len(distinct)
        assert int(f.branching[nodes].sum()) <= len(rows) - 1
        assert len(leaves) >= len(distinct)
        for v in nodes:
            members = sorted(f.rows_under(v).tolist())
            some = members[0]
            pref = b.seqs[some][: depth[v]]
            is_leaf = not (par == v).any()  # a leaf holds the responses ending there
            expected = [
                i for i in rows if (b.seqs[i] == pref if is_leaf else b.seqs[i][: depth[v]] == pref)
            ]
            assert members == expected
            assert trie.get_stat("value", [v])[0] == pytest.approx(
                float(np.mean(b.scores[expected])), abs=1e-12
            )
            ends = sum(1 for i in members if len(b.seqs[i]) == depth[v])
            assert trie.get_stat("ends", [v])[0] == ends
            p = par[v]
            if p >= 0:
                if depth[v] == depth[p]:
                    assert trie.label[v] == END  # ⊥ child of a strict prefix
                else:
                    assert trie.label[v] == b.seqs[some][depth[p]]
                # compressed: the path between p and v does not branch
                inner = {tuple(b.seqs[i][: depth[p] + 1]) for i in members}
                assert len(inner) == 1 or depth[v] == depth[p]
            internal = (par == v).any()
            if internal and p >= 0:
                assert f.branching[v]  # kept internal nodes are branch points
        for i in rows:
            leaf = f.row_leaf[i]
            assert depth[leaf] == len(b.seqs[i])
            assert i in f.rows_under(leaf).tolist()
            assert not (par == leaf).any()
    json.dumps(f.to_dict(), allow_nan=False)


def test_forest_without_rewards_and_strict_prefix() -> None:
    resp = np.array([[3, 4, 0, 0], [3, 4, 6, 0], [3, 4, 6, 0], [9, 9, 9, 9]])
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0]])
    f = build_prefix_tree(resp, mask, np.array([1, 1, 1, 2]))
    assert f.groups == [1, 2]
    assert np.isnan(f.values).all()
    rec = f.trie.to_records()
    # group 1: root (one child) → [3, 4] (branches: ⊥ and 6) → ⊥ leaf, [3, 4, 6] leaf
    assert [(r["depth"], r["members"], r["ends"]) for r in rec[:4]] == [
        (0, 3, 0),
        (2, 3, 1),
        (2, 1, 1),
        (3, 2, 2),
    ]
    assert rec[2]["label"] == int(END)
    assert f.branching[:4].tolist() == [False, True, False, False]
    # group 2: a hole in the mask: response (9, 9) at columns 0 and 2
    assert rec[5]["depth"] == 2 and f.columns(np.array([3]), np.array([1])).tolist() == [2]


# ---------------------------------------------------------------- layouts, types, errors
@SETTINGS
@given(b=batches(holes=False), one_d=st.booleans())
def test_trl_helper_matches_verl_layout(b: Batch, one_d: bool) -> None:
    n = len(b.seqs)
    k = n  # one prompt in TRL's layout; also try blocks when they divide evenly
    for gen in sorted({k, 1, *(d for d in (2, 3) if n % d == 0)}):
        index = np.arange(n) // gen
        rewards = b.scores if one_d else b.rewards
        got = tempo_advantages_trl(rewards, b.mask, b.responses, gen, epsilon=1e-4)
        ref, _ = tempo_advantages(b.rewards, b.mask, index, b.responses, epsilon=1e-4)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    off = tempo_advantages_trl(b.scores, b.mask, b.responses, 1, scale_rewards="none")
    assert np.array_equal(
        off, tempo_advantages_trl(b.scores, b.mask, b.responses, 1, scale_rewards=False)
    )


@SETTINGS
@given(b=batches(holes=False), data=st.data())
def test_trl_helper_batch_scaling_and_unscorable(b: Batch, data: Any) -> None:
    """TRL's scale_rewards="batch" and its NaN reward for an unscorable completion."""
    n = len(b.seqs)
    index = np.zeros(n, dtype=np.int64)
    got = tempo_advantages_trl(b.scores, b.mask, b.responses, n, scale_rewards="batch")
    raw, _ = tempo_advantages(b.rewards, b.mask, index, b.responses, norm_adv_by_std_in_grpo=False)
    std = np.std(b.scores, ddof=1) if n > 1 else 0.0
    np.testing.assert_allclose(got, raw / (std + 1e-4), rtol=1e-12, atol=1e-12)
    if n < 2:
        return
    drop = data.draw(st.integers(0, n - 1))
    scores = b.scores.copy()
    scores[drop] = np.nan
    keep = np.arange(n) != drop
    for scale in ("group", "batch", "none"):
        got = tempo_advantages_trl(scores, b.mask, b.responses, n, scale_rewards=scale)
        assert (got[drop] == 0).all()
        ref = tempo_advantages_trl(
            b.scores[keep], b.mask[keep], b.responses[keep], n - 1, scale_rewards=scale
        )
        np.testing.assert_allclose(got[keep], ref, rtol=1e-12, atol=1e-12)


def test_inputs_not_mutated_and_dtypes() -> None:
    rewards, mask, index, resp = golden_inputs()
    copies = [x.copy() for x in (rewards, mask, index, resp)]
    a, _ = tempo_advantages(
        rewards.astype(np.float32), mask.astype(bool), index, resp.astype(np.int32)
    )
    assert a.dtype == np.float32
    for x, c in zip((rewards, mask, index, resp), copies, strict=True):
        assert np.array_equal(x, c)
    a64, _ = tempo_advantages(rewards.astype(int), mask, index.tolist(), resp)
    assert a64.dtype == np.float64


def test_token_id_ranges() -> None:
    rewards, mask, index, resp = golden_inputs()
    ref, _ = tempo_advantages(rewards, mask, index, resp)
    for tokens in (
        resp - 100,  # negative ids
        resp * 10**6,  # beyond 16 bits
        resp.astype(np.int64) * 2**40 - 2**62,  # beyond 32 bits, negative
        resp.astype(np.uint64) * np.uint64(2**60),
        (resp + 118).astype(np.int8),  # up to 127: no overflow when shifted by one
        resp.astype(np.uint8),
    ):
        got, _ = tempo_advantages(rewards, mask, index, tokens)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    pad = resp.copy()
    pad[:, 3] = 1  # pads may be real tokens
    m = mask.copy()
    m[:, 3] = 0
    got, _ = tempo_advantages(rewards, m, index, pad)
    ref2 = reference_tempo(rewards, m, index, pad)
    np.testing.assert_allclose(got, ref2, atol=1e-9)


def test_empty_and_singleton_edge_cases() -> None:
    a, _ = tempo_advantages(np.zeros((0, 3)), np.zeros((0, 3)), np.array([]), np.zeros((0, 3), int))
    assert a.shape == (0, 3)
    a, _ = tempo_advantages(
        np.ones((2, 0)), np.ones((2, 0)), np.array([1, 1]), np.ones((2, 0), int)
    )
    assert a.shape == (2, 0)
    rew = np.array([[0.0, 2.0]])
    a, _ = tempo_advantages(rew, np.array([[1, 1]]), np.array(["x"]), np.array([[1, 2]]))
    np.testing.assert_allclose(a, [[2 / (1 + 1e-6)] * 2])
    mask0 = np.zeros((3, 2))
    a, _ = tempo_advantages(np.ones((3, 2)), mask0, np.array([0, 0, 0]), np.ones((3, 2), int))
    assert (a == 0).all()


def test_errors() -> None:
    rewards, mask, index, resp = golden_inputs()
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask[:, :3], index, resp)
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask, index[:3], resp)
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask, index, resp[:, :2])
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask, index, resp.astype(float))
    with pytest.raises(DataError):
        grpo_advantages(rewards[0], mask, index)
    # the options are keyword-only: verl's positional epsilon cannot land in responses
    with pytest.raises(TypeError):
        tempo_advantages(rewards, mask, index, resp, 1e-6)  # type: ignore[misc]
    with pytest.raises(DataError, match="responses"):
        tempo_advantages(rewards, mask, index, 1e-6)
    with pytest.raises(TypeError):
        grpo_advantages(rewards, mask, index, 1e-6)  # type: ignore[misc]
    with pytest.raises(TypeError):
        build_prefix_tree(resp, mask, index, rewards)  # type: ignore[misc]
    with pytest.raises(ParameterError):
        tempo_advantages(rewards, mask, index, resp, epsilon=-1.0)
    with pytest.raises(ParameterError):
        tempo_advantages(rewards, mask, index, resp, td_coef=float("nan"))
    with pytest.raises(DataError):
        tempo_advantages_trl(rewards, mask, resp, 3)
    with pytest.raises(ParameterError):
        tempo_advantages_trl(rewards, mask, resp, 0)
    with pytest.raises(ParameterError):
        tempo_advantages_trl(rewards, mask, resp, 2, scale_rewards="batchwise")


# ---------------------------------------------------------------- torch
def test_torch_path() -> None:
    torch = pytest.importorskip("torch")
    rewards, mask, index, resp = golden_inputs()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        tr = torch.tensor(rewards, dtype=dtype)
        tm = torch.tensor(mask)
        tt = torch.tensor(resp)
        before = [x.clone() for x in (tr, tm, tt)]
        a, r = tempo_advantages(tr, tm, index, tt, norm_adv_by_std_in_grpo=False)
        assert isinstance(a, torch.Tensor) and a.dtype == dtype and a.device == tr.device
        assert r is a
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
        np.testing.assert_allclose(a.double().numpy(), GOLDEN_UNNORM, atol=tol)
        for x, c in zip((tr, tm, tt), before, strict=True):
            assert torch.equal(x, c)
        g, _ = grpo_advantages(tr, tm, index)
        assert isinstance(g, torch.Tensor) and g.dtype == dtype
    # TRL layout with torch tensors; integer rewards give the default float dtype
    out = tempo_advantages_trl(
        torch.tensor([1, 0, 1, 1]), torch.tensor(mask), torch.tensor(resp), 4
    )
    assert out.dtype == torch.get_default_dtype()
    np.testing.assert_allclose(out.numpy(), GOLDEN_UNNORM / (0.5 + 1e-4), rtol=1e-6)
    # torch index (uids as a tensor)
    a, _ = tempo_advantages(
        torch.tensor(rewards), torch.tensor(mask), torch.zeros(4), torch.tensor(resp)
    )
    np.testing.assert_allclose(a.numpy(), GOLDEN_UNNORM / (0.5 + 1e-6), rtol=1e-9)
