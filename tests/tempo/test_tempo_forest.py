"""Tests of the prefix forest of TEMPO (fedhh.tempo.forest; docs/tempo.md §1): its nodes, members,
values and labels against the responses, strict prefixes and holes in the mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tempo_cases import Batch, for_random_batches

from fedhh.core.trie import END
from fedhh.tempo import build_prefix_tree


@for_random_batches
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
