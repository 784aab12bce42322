"""Tests of the shared prefix-trie core (fedhh.core.trie)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.core.trie import END, PrefixTrie
from fedhh.errors import ParameterError


def bit_trie() -> tuple[PrefixTrie, np.ndarray]:
    trie = PrefixTrie(capacity=1)
    root = trie.add_nodes(0, -1, 0)
    return trie, root


# ---------------------------------------------------------------- building
@pytest.mark.parametrize("step", [1, 2, 3, 5, 8])
def test_extend_labels_and_depths(step: int) -> None:
    trie, root = bit_trie()
    lvl1 = trie.extend(root, step)
    assert lvl1.tolist() == list(range(1, 1 + 2**step))
    assert trie.label[lvl1].tolist() == list(range(2**step))
    assert (trie.depth[lvl1] == step).all()
    assert (trie.parent[lvl1] == 0).all()
    pick = lvl1[[1, 0]] if step > 0 else lvl1
    lvl2 = trie.extend(pick, 2)
    # node order, then z order
    expected = [(1 << 2) | z for z in range(4)] + [(0 << 2) | z for z in range(4)]
    assert trie.label[lvl2].tolist() == expected
    assert (trie.depth[lvl2] == step + 2).all()
    assert trie.parent[lvl2].tolist() == [pick[0]] * 4 + [pick[1]] * 4


def test_extend_mixed_depths_and_uint64_limit() -> None:
    trie, root = bit_trie()
    node = root
    for _ in range(63):
        node = trie.extend(node, 1)[-1:]  # always the all-ones child
    assert int(trie.depth[node[0]]) == 63
    last = trie.extend(node, 1)
    assert trie.label[last].tolist() == [2**64 - 2, 2**64 - 1]
    assert trie.label.dtype == np.uint64
    assert (trie.depth[last] == 64).all()
    with pytest.raises(ParameterError):
        trie.extend(last[:1], 1)
    # nodes of different depths in one call
    t2, r2 = bit_trie()
    a = t2.extend(r2, 1)  # depth 1
    b = t2.extend(a[1:], 3)  # depth 4
    kids = t2.extend(np.array([a[0], b[5]]), 2)
    assert t2.depth[kids].tolist() == [3] * 4 + [6] * 4
    assert t2.label[kids].tolist() == [0, 1, 2, 3] + [(13 << 2) | z for z in range(4)]


def test_extend_validation() -> None:
    trie, root = bit_trie()
    with pytest.raises(ParameterError):
        trie.extend(root, 0)
    with pytest.raises(ParameterError):
        trie.extend(root, 65)
    with pytest.raises(ParameterError):
        trie.extend(root, 40)  # 2^40 nodes
    with pytest.raises(ParameterError):
        trie.extend([5], 1)  # no such node
    with pytest.raises(ParameterError):
        trie.extend(root, True)
    bad = trie.add_nodes(7, -1, 2)  # label does not fit in 2 bits
    with pytest.raises(ParameterError):
        trie.extend(bad, 1)
    assert trie.extend(np.array([], dtype=np.int64), 3).size == 0


def test_add_nodes_validation_and_broadcast() -> None:
    trie = PrefixTrie()
    ids = trie.add_nodes([10, 11, 12], -1, 0)
    assert ids.tolist() == [0, 1, 2]
    kids = trie.add_nodes([1, 2, 3], [0, 3, 4], [1, 2, 3])  # chain inside the batch
    assert kids.tolist() == [3, 4, 5]
    with pytest.raises(ParameterError):
        trie.add_nodes([1], [6], [4])  # parent is the node itself
    with pytest.raises(ParameterError):
        trie.add_nodes([1], [0], [-1])
    with pytest.raises(ParameterError):
        trie.add_nodes([-1], [0], [1])
    with pytest.raises(ParameterError):
        trie.add_nodes([1.5], [0], [1])
    with pytest.raises(ParameterError):
        trie.add_nodes([1], [5], [2])  # shallower than its parent (depth 3)
    with pytest.raises(ParameterError):
        trie.add_nodes([1, 2], [0, 0, 0], [1])
    assert len(trie) == 6  # failed calls added nothing
    trie.add_nodes(int(END), 5, 3)  # ⊥ child at its parent's depth is allowed
    assert trie.label[-1] == END


# ---------------------------------------------------------------- statistics, pruning, top
def test_stats_nan_default_and_growth() -> None:
    trie, root = bit_trie()
    kids = trie.extend(root, 3)
    trie.set_stat("est", kids[:4], [1.0, 2.0, 3.0, 4.0])
    est = trie.get_stat("est")
    assert np.isnan(est[0]) and np.isnan(est[5:]).all()
    assert trie.get_stat("est", kids[:2]).tolist() == [1.0, 2.0]
    more = trie.extend(kids, 3)  # forces growth of the stat column
    assert np.isnan(trie.get_stat("est", more)).all()
    trie.set_stat("est", more, 0.5)  # broadcast
    assert (trie.get_stat("est", more) == 0.5).all()
    assert set(trie.stats) == {"est"} and trie.stats["est"].shape == (len(trie),)
    with pytest.raises(ParameterError):
        trie.get_stat("nope")
    with pytest.raises(ParameterError):
        trie.set_stat("est", kids[:2], [1.0, 2.0, 3.0])


def test_prune_propagates_to_descendants() -> None:
    trie, root = bit_trie()
    l1 = trie.extend(root, 1)
    l2 = trie.extend(l1, 2)
    l3 = trie.extend(l2, 1)
    died = trie.prune(l1, np.array([True, False]))
    assert died == 1 + 4 + 8
    assert trie.alive[l1].tolist() == [True, False]
    assert trie.alive[l2].tolist() == [True] * 4 + [False] * 4
    assert trie.alive[l3].tolist() == [True] * 8 + [False] * 8
    # children created under a dead node are dead; pruning again kills nothing more
    late = trie.extend(l3[-1:], 2)
    assert not trie.alive[late].any()
    assert trie.prune(l1, np.array([True, False])) == 0
    assert trie.frontier(3).tolist() == l2[:4].tolist()
    assert trie.frontier().tolist() == l3[:8].tolist()


def test_top_order_ties_and_threshold() -> None:
    trie, root = bit_trie()
    kids = trie.extend(root, 3)  # labels 0..7
    vals = np.array([3.0, 9.0, 3.0, np.nan, 9.0, 1.0, 3.0, -2.0])
    trie.set_stat("c", kids, vals)
    ranked = trie.top(kids[::-1], "c", 8)  # input order does not matter
    assert trie.label[ranked].tolist() == [1, 4, 0, 2, 6, 5, 7]  # NaN never ranks
    assert trie.label[trie.top(kids, "c", 3)].tolist() == [1, 4, 0]
    assert trie.label[trie.top(kids, "c", 10, min_value=3.0)].tolist() == [1, 4]
    assert trie.top(kids, "c", 0).size == 0
    trie.prune(kids, trie.label[kids] != 4)
    assert trie.label[trie.top(None, "c", 2)].tolist() == [1, 0]
    with pytest.raises(ParameterError):
        trie.top(kids, "c", -1)


# ---------------------------------------------------------------- navigation
def test_find_and_children() -> None:
    trie, root = bit_trie()
    l1 = trie.extend(root, 2)
    l2 = trie.extend(l1[[2, 3]], 2)
    assert trie.find([0b1001, 0b1110, 0b0001, 99], 4).tolist() == [l2[1], l2[6], -1, -1]
    assert trie.find([3], 2).tolist() == [l1[3]]
    assert trie.find([0], 7).tolist() == [-1]
    assert trie.children(l1).tolist() == l2.tolist()
    assert trie.children(root).tolist() == l1.tolist()
    # a dead duplicate loses to an alive one in find
    trie.prune(l2[5:6], [False])
    dup = trie.add_nodes([0b1101], l1[3:4], 4)
    assert trie.alive[dup].all() and not trie.alive[l2[5]]
    assert trie.find([0b1101], 4).tolist() == [dup[0]]
    trie.prune(dup, [False])
    assert trie.find([0b1101], 4).tolist() == [l2[5]]  # both dead: the smaller id
    assert trie.find([0b1101], 4, alive_only=True).tolist() == [-1]
    assert trie.children(l1[3:], alive_only=True).tolist() == [l2[4], l2[6], l2[7]]


def test_forest_from_arrays() -> None:
    # two token trees: roots labelled by group, ⊥ leaf at its parent's depth
    labels = [0, 1, 5, 7, 8, int(END), 5]
    parents = [-1, -1, 0, 2, 2, 2, 1]
    depths = [0, 0, 1, 3, 4, 1, 2]
    trie = PrefixTrie.from_arrays(labels, parents, depths, stats={"members": [3, 1, 3, 1, 1, 1, 1]})
    assert trie.roots().tolist() == [0, 1]
    assert trie.get_stat("members").tolist() == [3, 1, 3, 1, 1, 1, 1]
    assert trie.find([0, 1], 0).tolist() == [0, 1]
    assert trie.frontier().tolist() == [3, 4, 5, 6]


# ---------------------------------------------------------------- export
def test_export_round_trip_is_json() -> None:
    trie, root = bit_trie()
    kids = trie.extend(root, 2)
    trie.set_stat("est", kids, [1.0, np.nan, 3.0, 4.0])
    trie.prune(kids, [True, False, True, True])
    trie.add_nodes([2**64 - 1], root, 64)
    data = trie.export()
    back = json.loads(json.dumps(data, allow_nan=False))
    assert back == data and back["label"][-1] == 2**64 - 1
    recs = trie.to_records()
    assert recs[2] == {"id": 2, "label": 1, "parent": 0, "depth": 2, "alive": False, "est": None}
    assert trie.copy().export() == data


# ---------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_extends_prune_property(steps: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    trie, root = bit_trie()
    level = root
    all_children = []
    for step in steps:
        if level.size == 0 or trie.depth[level].max() + step > 64:
            break
        kids = trie.extend(level, step)
        par = trie.parent[kids]
        assert (trie.label[kids] >> np.uint64(step) == trie.label[par]).all()
        assert (trie.depth[kids] == trie.depth[par] + step).all()
        assert (trie.label[kids] >> trie.depth[kids].astype(np.uint64) == 0).all()
        all_children.append(kids)
        keep = rng.random(kids.size) < 0.5
        trie.prune(kids, keep)
        level = kids[keep]
    # invariant: a dead node's subtree is dead; parents precede children
    par = trie.parent
    has = par >= 0
    assert (par[has] < np.flatnonzero(has)).all()
    assert not (trie.alive[has] & ~trie.alive[par[has]]).any()
    # find returns every alive node at its depth by label
    for kids in all_children:
        alive = kids[trie.alive[kids]]
        if alive.size:
            d = int(trie.depth[alive[0]])
            assert trie.find(trie.label[alive], d, alive_only=True).tolist() == alive.tolist()


@settings(max_examples=60, deadline=None)
@given(
    vals=st.lists(
        st.one_of(st.integers(-3, 3).map(float), st.just(float("nan"))), min_size=1, max_size=40
    ),
    k=st.integers(0, 45),
)
def test_top_matches_sorted_reference(vals: list[float], k: int) -> None:
    trie = PrefixTrie()
    ids = trie.add_nodes(np.arange(len(vals))[::-1].copy(), -1, 0)  # labels descending by id
    trie.set_stat("s", ids, vals)
    ref = sorted(
        (i for i in range(len(vals)) if vals[i] == vals[i]),
        key=lambda i: (-vals[i], int(trie.label[i]), i),
    )[:k]
    assert trie.top(ids, "s", k).tolist() == ref
