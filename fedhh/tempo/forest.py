"""The prefix forest of a batch, built with array operations only (docs/tempo.md §1, §5).

Each row's masked tokens are encoded with 0 as an end sentinel that no token equals; the rows are
sorted by (group, token sequence) with a single ``memcmp`` sort of the rows as byte strings (any
fixed order of the tokens gives a trie-consistent order: every subtree is a contiguous run of
sorted rows); the longest common prefix (LCP) of adjacent sorted rows is found by comparing column
chunks of doubling width, only for the pairs that have not diverged yet. Then every internal node
of the compressed trie is an "LCP interval" (a maximal run of rows whose adjacent LCPs are ≥ d, for
d one of those LCPs), found for all boundaries at once by binary lifting over a sparse table of
range minima, and every leaf is a run of identical responses. Node sums are range sums over the
sorted rewards, so a response's δ at the branching node b is V(c) − V(b) for the child c on its
path, applied at token position depth(b).

The forest is stored in a :class:`fedhh.core.trie.PrefixTrie`: labels are the first token of the
edge into a node (:data:`fedhh.core.trie.END` for an end-of-response child "⊥", the group number
for a root), depths are prefix lengths in tokens, and the statistics are ``members``, ``value``
(V), ``ends`` (members whose response ends exactly at the node), ``delta`` (V(node) − V(parent))
and ``group``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedhh.core.trie import END, PrefixTrie
from fedhh.errors import DataError, ParameterError
from fedhh.tempo.batch import FloatArray, IdArray, _Batch, _Moments, _moments, _prepare

__all__ = ["PrefixForest", "build_prefix_tree"]

_FIRST_CHUNK = 32  # columns compared in the first LCP round; the width doubles every round
_MAX_CHUNK = 4096


# ---------------------------------------------------------------------------- the forest
@dataclass(eq=False)
class PrefixForest:
    """The compressed prefix trees of all groups, stored in one :class:`PrefixTrie`.

    Nodes are the roots (one per group, depth 0, label = group number), the branching nodes and
    one leaf per distinct response (a run of identical responses); a response that is a strict
    prefix of another ends in a "⊥" leaf (label :data:`END`) at its parent's depth. Node ids
    follow a depth-first order. Trie statistics: ``members``, ``value`` (V), ``ends``, ``delta``
    (V(node) − V(parent), applied at token position depth(parent)) and ``group``; V is NaN when
    no rewards were given.
    """

    trie: PrefixTrie
    groups: list[Any]  # uid of each group, in order of first appearance
    roots: IdArray  # [n_groups] root node of each group
    row_group: IdArray  # [bs] group number of each row
    row_leaf: IdArray  # [bs] leaf where each row's response ends
    branching: NDArray[np.bool_]  # [nodes] ≥ 2 children (distinct next tokens or ⊥)
    order: IdArray  # [bs] rows in tree order: node v holds rows order[lo[v] : hi[v] + 1]
    lo: IdArray
    hi: IdArray
    _colmap_rows: IdArray = field(repr=False)  # rows whose mask is not 1…1 0…0
    _colmap: IdArray = field(repr=False)  # their column of each response position

    def __len__(self) -> int:
        return len(self.trie)

    @property
    def parents(self) -> IdArray:
        return self.trie.parent

    @property
    def depths(self) -> IdArray:
        return self.trie.depth

    @property
    def labels(self) -> NDArray[np.uint64]:
        return self.trie.label

    @property
    def members(self) -> IdArray:
        return (self.hi - self.lo + 1).astype(np.int64)

    @property
    def values(self) -> FloatArray:
        return self.trie.get_stat("value")

    @property
    def deltas(self) -> FloatArray:
        return self.trie.get_stat("delta")

    @property
    def node_group(self) -> IdArray:
        return self.trie.get_stat("group").astype(np.int64)

    def group_nodes(self, group: int) -> IdArray:
        """Node ids of one group (a contiguous id range, root first)."""
        g = int(group)
        if not 0 <= g < self.roots.size:
            raise ParameterError(f"group {g} out of range [0, {self.roots.size})")
        end = self.roots[g + 1] if g + 1 < self.roots.size else len(self.trie)
        return np.arange(self.roots[g], end, dtype=np.int64)

    def rows_under(self, node: int) -> IdArray:
        """Rows whose response passes through (or ends at) a node, in tree order."""
        v = int(node)
        return self.order[self.lo[v] : self.hi[v] + 1].copy()

    def columns(self, rows: IdArray, positions: IdArray) -> IdArray:
        """Column of the ``positions``-th response token of each of ``rows``."""
        cols = np.asarray(positions, dtype=np.int64).copy()
        if self._colmap_rows.size:
            rows = np.asarray(rows, dtype=np.int64)
            where = np.searchsorted(self._colmap_rows, rows)
            where = np.minimum(where, self._colmap_rows.size - 1)
            hit = self._colmap_rows[where] == rows
            cols[hit] = self._colmap[where[hit], cols[hit]]
        return cols

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description: the trie export plus the per-group mapping."""
        out = self.trie.export()
        out["branching"] = self.branching.tolist()
        out["groups"] = [g if isinstance(g, (str, int, float)) else repr(g) for g in self.groups]
        out["roots"] = self.roots.tolist()
        out["row_group"] = self.row_group.tolist()
        out["row_leaf"] = self.row_leaf.tolist()
        return out


def _encode(tokens: NDArray[Any], batch: _Batch) -> tuple[NDArray[Any], IdArray, IdArray]:
    """Masked tokens, left-aligned, as unsigned codes ≥ 1 with 0 after the end of each response.

    Returns the code matrix and, for rows whose mask is not a prefix of ones, their row ids and
    the column of each of their response positions.
    """
    n = batch.n
    width = max(1, int(batch.lengths.max()) if n else 0)
    cols_all = min(width, batch.width)
    sub = tokens[:, :cols_all]
    if sub.dtype == np.bool_:
        sub = sub.astype(np.uint8)
    odd_rows = np.flatnonzero(~batch.prefix_rows).astype(np.int64)
    tmin = tmax = 0
    if sub.size:
        tmin, tmax = int(sub.min()), int(sub.max())
    if odd_rows.size:
        r, c = np.nonzero(batch.mask[odd_rows])
        odd_vals = tokens[odd_rows[r], c]
        if odd_vals.size:
            tmin, tmax = min(tmin, int(odd_vals.min())), max(tmax, int(odd_vals.max()))
    fast = tmin >= 0 and tmax + 1 < 2**32
    code_dtype: np.dtype[Any]
    if fast:
        code_dtype = np.dtype(np.uint16) if tmax + 1 < 2**16 else np.dtype(np.uint32)
        shift: int = 1
    else:
        span = tmax - tmin + 1
        if span >= 2**64 - 1:
            raise DataError("token ids span the whole 64-bit range; no room for an end sentinel")
        code_dtype = np.dtype(np.uint32) if span < 2**32 else np.dtype(np.uint64)
        shift = 1 - tmin

    def encode(vals: NDArray[Any]) -> NDArray[Any]:
        if fast:
            return vals.astype(np.int64) + 1
        wide = vals.astype(np.uint64) + np.uint64(shift % 2**64)  # exact modulo 2^64
        return wide.astype(code_dtype)

    codes = np.zeros((n, width), dtype=code_dtype)
    if fast:
        view = codes[:, :cols_all]
        np.add(sub, 1, out=view, where=batch.mask[:, :cols_all], casting="unsafe", dtype=np.int64)
    elif sub.size:
        codes[:, :cols_all] = np.where(batch.mask[:, :cols_all], encode(sub), 0)
    colmap = np.zeros((0, width), dtype=np.int64)
    if odd_rows.size:
        codes[odd_rows] = 0
        lens = batch.lengths[odd_rows]
        starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
        pos = np.arange(r.size) - starts[r]
        codes[odd_rows[r], pos] = encode(odd_vals)
        colmap = np.full((odd_rows.size, width), -1, dtype=np.int64)
        colmap[r, pos] = c
    return codes, odd_rows, colmap


def _adjacent_lcp(codes: NDArray[Any], ra: IdArray, rb: IdArray, bound: IdArray) -> IdArray:
    """LCP of rows ra[k] and rb[k], at most bound[k]: chunked comparisons of doubling width."""
    lcp = bound.copy()
    active = np.flatnonzero(bound > 0)
    c0, chunk = 0, _FIRST_CHUNK
    while active.size:
        c1 = min(c0 + chunk, codes.shape[1])
        diff = codes[ra[active], c0:c1] != codes[rb[active], c0:c1]
        first = c0 + np.argmax(diff, axis=1)
        found = diff[np.arange(active.size), first - c0] & (first < bound[active])
        lcp[active[found]] = first[found]
        active = active[~found & (bound[active] > c1)]
        c0, chunk = c1, min(2 * chunk, _MAX_CHUNK)
    return lcp


def _nearest_smaller(h: IdArray, at: IdArray, levels: int) -> tuple[IdArray, IdArray]:
    """For each position in ``at``: the nearest positions left and right with h < h[at].

    ``h`` must hold a value smaller than every queried one at both ends, within 2^(levels+1) − 1
    positions of every query. Binary lifting over a sparse table of range minima.
    """
    tables = [h]
    for k in range(1, levels + 1):
        prev, half = tables[-1], 1 << (k - 1)
        if prev.size <= half:
            break
        tables.append(np.minimum(prev[:-half], prev[half:]))
    v = h[at]
    right = at + 1
    for k in range(len(tables) - 1, -1, -1):
        t = tables[k]
        ok = (right < t.size) & (t[np.minimum(right, t.size - 1)] >= v)
        right = np.where(ok, right + (1 << k), right)
    left = at.copy()
    for k in range(len(tables) - 1, -1, -1):
        t = tables[k]
        start = left - (1 << k)
        ok = (start >= 0) & (t[np.maximum(start, 0)] >= v)
        left = np.where(ok, start, left)
    return left - 1, right


def _build(
    batch: _Batch, tokens: NDArray[Any], moments: _Moments | None
) -> tuple[PrefixForest, FloatArray]:
    """The forest, and each node's centred value (mean of r − ref over its members)."""
    n, codes_g = batch.n, batch.codes
    n_groups = len(batch.groups)
    enc, odd_rows, colmap = _encode(tokens, batch)
    lengths = batch.lengths

    # sort rows by (group, token sequence): one memcmp sort of rows as byte strings
    rowbytes = enc.view(np.dtype((np.void, enc.dtype.itemsize * enc.shape[1]))).reshape(-1)
    order = np.argsort(rowbytes, kind="stable")
    order = order[np.argsort(codes_g[order], kind="stable")]

    # LCP of adjacent rows of the same group (-1 across groups); h[j] sits between rows j-1, j
    h = np.full(n + 1, -1, dtype=np.int64)
    if n > 1:
        ra, rb = order[:-1], order[1:]
        same = np.flatnonzero(codes_g[ra] == codes_g[rb])
        bound = np.minimum(lengths[ra[same]], lengths[rb[same]])
        h[same + 1] = _adjacent_lcp(enc, ra[same], rb[same], bound)

    # runs of identical responses; inside a run, order by reward so that sums are deterministic
    len_s = lengths[order]
    ident = np.zeros(n, dtype=np.bool_)
    if n > 1:
        ident[1:] = (h[1:n] >= 0) & (h[1:n] == len_s[:-1]) & (h[1:n] == len_s[1:])
    run_of = np.cumsum(~ident) - 1
    if moments is not None and ident.any():
        order = order[np.lexsort((moments.centred[order], run_of))]

    counts = np.bincount(codes_g, minlength=n_groups).astype(np.int64)
    gstart = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    group_s = codes_g[order]

    # candidate nodes (lo, hi, depth): roots, LCP intervals, runs of identical responses
    bnd = np.flatnonzero(h >= 0)
    levels = int(counts.max()).bit_length() if n else 0
    left, right = _nearest_smaller(h, bnd, levels)
    run_lo = np.flatnonzero(~ident)
    run_hi = np.append(run_lo[1:], n) - 1
    cand_lo = np.concatenate((gstart, left, run_lo))
    cand_hi = np.concatenate((gstart + counts - 1, right - 1, run_hi))
    cand_d = np.concatenate((np.zeros(n_groups, np.int64), h[bnd], len_s[run_lo]))
    srt = np.lexsort((-cand_hi, cand_d, cand_lo))  # depth-first order; parents come first
    s_lo, s_hi, s_d = cand_lo[srt], cand_hi[srt], cand_d[srt]
    new = np.ones(srt.size, dtype=np.bool_)
    new[1:] = (s_lo[1:] != s_lo[:-1]) | (s_hi[1:] != s_hi[:-1]) | (s_d[1:] != s_d[:-1])
    node_of = np.empty(srt.size, dtype=np.int64)
    node_of[srt] = np.cumsum(new) - 1
    lo, hi, depth = s_lo[new], s_hi[new], s_d[new]
    n_nodes = int(lo.size)
    root_node = node_of[:n_groups]
    bnd_node = np.full(n + 1, -1, dtype=np.int64)
    bnd_node[bnd] = node_of[n_groups : n_groups + bnd.size]
    run_node = node_of[n_groups + bnd.size :]
    node_grp = group_s[lo]

    # parent: the LCP interval across the outer boundary with the larger LCP, else the root
    left_h, right_h = h[lo], h[hi + 1]
    via = np.where(left_h >= right_h, lo, hi + 1)
    parent = np.where(np.maximum(left_h, right_h) >= 0, bnd_node[via], root_node[node_grp])
    parent[root_node] = -1
    has_par = parent >= 0
    par_c = np.where(has_par, parent, 0)

    members = hi - lo + 1
    n_children = np.bincount(parent[has_par], minlength=n_nodes)
    branching = n_children >= 2
    ends = np.zeros(n_nodes, dtype=np.int64)
    ends[run_node] = members[run_node]
    rp = parent[run_node]
    bottom = (rp >= 0) & (depth[np.maximum(rp, 0)] == depth[run_node])
    ends[rp[bottom]] += members[run_node[bottom]]

    # labels: group number for roots, END for ⊥ leaves, else the edge's first token
    labels = np.zeros(n_nodes, dtype=np.uint64)
    labels[root_node] = np.arange(n_groups, dtype=np.uint64)
    is_end = has_par & (depth == depth[par_c])
    labels[is_end] = END
    edge = np.flatnonzero(has_par & ~is_end)
    if edge.size:
        rows = order[lo[edge]]
        pos = depth[parent[edge]]
        cols = pos.copy()
        if odd_rows.size:
            where = np.searchsorted(odd_rows, rows)
            hit = odd_rows[np.minimum(where, odd_rows.size - 1)] == rows
            cols[hit] = colmap[where[hit], pos[hit]]
        labels[edge] = tokens[rows, cols].astype(np.uint64)

    # values
    if moments is not None:
        cpad = np.append(moments.centred[order], 0.0)
        bounds = np.empty(2 * n_nodes, dtype=np.int64)
        bounds[0::2], bounds[1::2] = lo, hi + 1
        sums = np.add.reduceat(cpad, bounds)[0::2] if n_nodes else np.zeros(0)
        vc = sums / members
        value = moments.ref[node_grp] + vc
        delta = np.where(has_par, vc - vc[par_c], np.nan)
    else:
        vc = value = delta = np.full(n_nodes, np.nan)

    trie = PrefixTrie.from_arrays(
        labels,
        parent,
        depth,
        stats={
            "members": members.astype(np.float64),
            "value": value,
            "ends": ends.astype(np.float64),
            "delta": delta,
            "group": node_grp.astype(np.float64),
        },
    )
    row_leaf = np.empty(n, dtype=np.int64)
    row_leaf[order] = run_node[run_of]
    forest = PrefixForest(
        trie=trie,
        groups=batch.groups,
        roots=root_node.astype(np.int64),
        row_group=codes_g,
        row_leaf=row_leaf,
        branching=branching,
        order=order.astype(np.int64),
        lo=lo.astype(np.int64),
        hi=hi.astype(np.int64),
        _colmap_rows=odd_rows,
        _colmap=colmap,
    )
    return forest, vc


def build_prefix_tree(
    responses: Any,
    response_mask: Any,
    index: Any,
    *,
    rewards: Any | None = None,
) -> PrefixForest:
    """Build the compressed prefix tree (P2T) of every group, for inspection.

    ``responses`` and ``response_mask`` are [bs, L]; ``index`` [bs] holds the group uids (rows of
    a group need not be contiguous). ``rewards`` — outcome rewards [bs] or token-level rewards
    [bs, L] (row sums) — gives the node values V; without it V and δ are NaN.
    """
    batch, tokens = _prepare(rewards, response_mask, index, responses)
    assert tokens is not None
    moments = None
    if batch.scores is not None:
        moments = _moments(batch.scores, batch.codes, len(batch.groups))
    forest, _ = _build(batch, tokens, moments)
    return forest
