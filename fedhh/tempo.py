"""TEMPO advantages on prefix trees of sampled responses (docs/tempo.md), built on fedhh.trie.

The G responses sampled for one prompt (one ``index`` uid) form a prefix tree (P2T): a node is a
distinct token prefix s, its members N(s) are the responses that start with s, and its value
V(s) is the mean outcome reward of its members. With r_i the row sum of ``token_level_rewards``,
μ and σ the group's mean and Bessel-corrected standard deviation (μ = 0, σ = 1 for a group of one,
as in verl's GRPO), and s_{i,t} the first t tokens of response i::

    δ_{i,t} = V(s_{i,t+1}) − V(s_{i,t})
    A_{i,t} = [ (r_i − μ) + td_coef · δ_{i,t} ] / (σ + ε)        for t < T_i, 0 elsewhere

δ is zero except at the first token after a branching node, so TEMPO equals GRPO everywhere else.

How it is computed (no per-token Python loop; docs/tempo.md §5). Each row's masked tokens are
encoded with 0 as an end sentinel that no token equals; the rows are sorted by (group, token
sequence) with a single ``memcmp`` sort of the rows as byte strings (any fixed order of the tokens
gives a trie-consistent order: every subtree is a contiguous run of sorted rows); the longest common
prefix (LCP) of adjacent sorted rows is found by comparing column chunks of doubling width, only for
the pairs that have not diverged yet. Then every internal node of the compressed trie is an "LCP
interval" (a maximal run of rows whose adjacent LCPs are ≥ d, for d one of those LCPs), found for
all boundaries at once by binary lifting over a sparse table of range minima, and every leaf is a
run of identical responses. Node sums are range sums over the sorted rewards, so a response's δ at
the branching node b is V(c) − V(b) for the child c on its path, applied at token position depth(b).
The forest is stored in a :class:`fedhh.trie.PrefixTrie`: labels are the first token of the edge
into a node (:data:`fedhh.trie.END` for an end-of-response child "⊥", the group number for a root),
depths are prefix lengths in tokens, and the statistics are ``members``, ``value`` (V), ``ends``
(members whose response ends exactly at the node), ``delta`` (V(node) − V(parent)) and ``group``.

Inputs may be numpy arrays or torch tensors (torch is imported only if a tensor is passed); the
result has the type, dtype and device of ``token_level_rewards``. Inputs are never modified. The
mask is read as binary (nonzero = response token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedhh.errors import DataError, ParameterError
from fedhh.trie import END, PrefixTrie

__all__ = [
    "PrefixForest",
    "build_prefix_tree",
    "grpo_advantages",
    "tempo_advantages",
    "tempo_advantages_trl",
]

IdArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

_FIRST_CHUNK = 32  # columns compared in the first LCP round; the width doubles every round
_MAX_CHUNK = 4096


# ---------------------------------------------------------------------------- array backends
def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _to_numpy(x: Any) -> NDArray[Any]:
    if _is_torch(x):
        t = x.detach()
        if t.is_floating_point() and t.dtype not in _torch_numpy_floats():
            t = t.float()  # bfloat16 has no numpy dtype
        return np.asarray(t.cpu().numpy())
    return np.asarray(x)


def _torch_numpy_floats() -> tuple[Any, ...]:
    import torch

    return (torch.float16, torch.float32, torch.float64)


def _float_dtype(x: Any) -> Any:
    """The floating dtype of the result (the input's if it is floating)."""
    if _is_torch(x):
        import torch

        return x.dtype if x.is_floating_point() else torch.get_default_dtype()
    arr = np.asarray(x)
    return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)


def _numpy_float(dtype: Any) -> np.dtype[Any]:
    """The numpy dtype to compute a result of (numpy or torch) floating ``dtype`` in."""
    if isinstance(dtype, np.dtype):
        return dtype
    import torch

    if dtype == torch.float16:
        return np.dtype(np.float16)
    return np.dtype(np.float64) if dtype == torch.float64 else np.dtype(np.float32)


def _like(arr: NDArray[Any], like: Any, dtype: Any) -> Any:
    """``arr`` as the array type of ``like`` (same device), with result dtype ``dtype``."""
    if _is_torch(like):
        import torch

        return torch.from_numpy(arr).to(device=like.device, dtype=dtype)
    return arr


# ---------------------------------------------------------------------------- validation
def _check_eps(epsilon: float) -> float:
    eps = float(epsilon)
    if not np.isfinite(eps) or eps < 0:
        raise ParameterError(f"epsilon must be finite and ≥ 0, got {epsilon!r}")
    return eps


def _check_td(td_coef: float) -> float:
    td = float(td_coef)
    if not np.isfinite(td):
        raise ParameterError(f"td_coef must be finite, got {td_coef!r}")
    return td


def _as_2d(x: Any, name: str, shape: tuple[int, ...] | None = None) -> NDArray[Any]:
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape [bs, L], got {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise DataError(f"{name} has shape {arr.shape}, expected {shape}")
    return arr


def _scores(rewards: NDArray[Any], n: int) -> FloatArray:
    """Outcome rewards: row sums of token-level rewards (verl), or the given [bs] vector."""
    if rewards.dtype.kind not in "biuf":
        raise DataError(f"rewards must be numbers, got dtype {rewards.dtype}")
    if rewards.ndim == 2:
        return rewards.sum(axis=1, dtype=np.float64)
    if rewards.ndim == 1 and rewards.shape[0] == n:
        return rewards.astype(np.float64)
    raise DataError(f"rewards must have shape [{n}] or [{n}, L], got {rewards.shape}")


def _factorize(index: Any, n: int) -> tuple[IdArray, list[Any]]:
    """Group codes 0..g−1 in order of first appearance, and the uid of each group."""
    if _is_torch(index):
        index = index.detach().cpu().numpy()
    arr = np.asarray(index) if not isinstance(index, np.ndarray) else index
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"index must have shape [{n}], got {np.shape(arr)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    if arr.dtype.kind in "biuUS":
        uniq, first, inv = np.unique(arr, return_index=True, return_inverse=True)
        rank = np.empty(uniq.size, dtype=np.int64)
        by_first = np.argsort(first, kind="stable")
        rank[by_first] = np.arange(uniq.size)
        return rank[inv.reshape(-1)], uniq[by_first].tolist()
    seen: dict[Any, int] = {}
    try:
        codes = np.fromiter(
            (seen.setdefault(u, len(seen)) for u in arr.tolist()), dtype=np.int64, count=n
        )
    except TypeError as exc:
        raise DataError(f"index values must be hashable: {exc}") from None
    return codes, list(seen)


@dataclass
class _Batch:
    """Validated numpy views of one call's inputs."""

    n: int
    width: int
    mask: NDArray[np.bool_]
    lengths: IdArray
    prefix_rows: NDArray[np.bool_]  # rows whose mask is 1…1 0…0
    codes: IdArray
    groups: list[Any]
    scores: FloatArray | None


def _prepare(
    rewards: Any, response_mask: Any, index: Any, responses: Any | None
) -> tuple[_Batch, NDArray[Any] | None]:
    mask_in = _to_numpy(response_mask)
    if mask_in.ndim != 2:
        raise DataError(f"response_mask must have shape [bs, L], got {mask_in.shape}")
    n, width = mask_in.shape
    mask = mask_in if mask_in.dtype == np.bool_ else mask_in != 0
    tokens = None
    if responses is not None:
        tokens = _as_2d(responses, "responses", (n, width))
        if tokens.dtype.kind not in "biu":
            raise DataError(f"responses must be integer token ids, got dtype {tokens.dtype}")
    scores = None if rewards is None else _scores(_to_numpy(rewards), n)
    codes, groups = _factorize(index, n)
    lengths = np.count_nonzero(mask, axis=1).astype(np.int64)
    if width:
        first_zero = np.argmin(mask, axis=1)  # stops at the first False
        prefix_rows = (lengths == width) | (first_zero == lengths)
    else:
        prefix_rows = np.ones(n, dtype=np.bool_)
    batch = _Batch(n, width, mask, lengths, prefix_rows, codes, groups, scores)
    return batch, tokens


# ---------------------------------------------------------------------------- group statistics
@dataclass
class _Moments:
    count: IdArray  # [g]
    ref: FloatArray  # [g] a member's reward (the smallest), to centre sums exactly
    mean: FloatArray  # [g] μ as used in the advantage (0 for a group of one)
    std: FloatArray  # [g] σ (ddof 1; 1 for a group of one)
    centred: FloatArray  # [bs] r_i − ref
    numerator: FloatArray  # [bs] r_i − μ


def _moments(scores: FloatArray, codes: IdArray, n_groups: int) -> _Moments:
    """Group mean and unbiased std (verl's GRPO conventions), order-independent to the bit."""
    count = np.bincount(codes, minlength=n_groups).astype(np.int64)
    if scores.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return _Moments(count, empty, empty, empty, empty, empty)
    order = np.lexsort((scores, codes))
    starts = np.concatenate(([0], np.cumsum(count)[:-1]))
    ref = scores[order][starts]
    centred = scores - ref[codes]
    mean_c = np.add.reduceat(centred[order], starts) / count
    dev = centred - mean_c[codes]
    ss = np.add.reduceat((dev * dev)[order], starts)
    single = count == 1
    std = np.where(single, 1.0, np.sqrt(ss / np.maximum(count - 1, 1)))
    mean = np.where(single, 0.0, ref + mean_c)
    numerator = np.where(single[codes], scores, dev)
    return _Moments(count, ref, mean, std, centred, numerator)


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


# ---------------------------------------------------------------------------- advantages
def _advantages(
    batch: _Batch,
    tokens: NDArray[Any] | None,
    out_dtype: np.dtype[Any],
    epsilon: float,
    norm: bool,
    td_coef: float,
) -> NDArray[Any]:
    assert batch.scores is not None
    mom = _moments(batch.scores, batch.codes, len(batch.groups))
    scale = 1.0 / (mom.std + epsilon) if norm else np.ones_like(mom.std)
    base = mom.numerator * scale[batch.codes]
    out = np.zeros((batch.n, batch.width), dtype=out_dtype)
    np.copyto(out, base.astype(out_dtype)[:, None], where=batch.mask)
    if tokens is None or td_coef == 0.0 or batch.n == 0:
        return out
    forest, vc = _build(batch, tokens, mom)
    par = forest.trie.parent
    depth = forest.trie.depth
    edge = np.flatnonzero(par >= 0)
    p = par[edge]
    edge = edge[forest.branching[p] & (depth[edge] > depth[p])]
    if edge.size == 0:
        return out
    p = par[edge]
    delta = vc[edge] - vc[p]
    sizes = forest.members[edge]
    which = np.repeat(np.arange(edge.size), sizes)
    offset = np.arange(which.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    rows = forest.order[forest.lo[edge][which] + offset]
    pos = depth[p][which]
    cols = forest.columns(rows, pos)
    g = batch.codes[rows]
    out[rows, cols] = base[rows] + td_coef * delta[which] * scale[g]
    return out


def grpo_advantages(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    *,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[Any, Any]:
    """verl's GRPO outcome advantage, vectorised: ``(advantages, returns)``, both [bs, L].

    score = row sum of ``token_level_rewards``; per uid the mean and the unbiased (torch.std)
    standard deviation, with mean 0 and std 1 for a uid of one row; the advantage
    (score − mean) / (std + ε) (or score − mean without std normalisation) where the mask is
    nonzero, exactly 0 elsewhere.
    Returns equal advantages (the same array, as verl does).
    """
    eps = _check_eps(epsilon)
    rewards = _as_2d(token_level_rewards, "token_level_rewards")
    batch, _ = _prepare(rewards, response_mask, index, None)
    if rewards.shape != (batch.n, batch.width):
        raise DataError(f"token_level_rewards has shape {rewards.shape}, mask {batch.mask.shape}")
    dtype = _float_dtype(token_level_rewards)
    out = _advantages(batch, None, _numpy_float(dtype), eps, bool(norm_adv_by_std_in_grpo), 0.0)
    res = _like(out, token_level_rewards, dtype)
    return res, res


def tempo_advantages(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    responses: Any,
    *,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    td_coef: float = 1.0,
) -> tuple[Any, Any]:
    """TEMPO advantages (docs/tempo.md §2): ``(advantages, returns)``, both [bs, L].

    Same arguments as verl's ``compute_grpo_outcome_advantage`` plus ``responses`` [bs, L] (token
    ids; only positions where the mask is nonzero are read) and ``td_coef`` (0 gives GRPO). The
    options are keyword-only, so an ``epsilon`` given in verl's position cannot land in
    ``responses``.
    """
    eps = _check_eps(epsilon)
    td = _check_td(td_coef)
    rewards = _as_2d(token_level_rewards, "token_level_rewards")
    batch, tokens = _prepare(rewards, response_mask, index, responses)
    if rewards.shape != (batch.n, batch.width):
        raise DataError(f"token_level_rewards has shape {rewards.shape}, mask {batch.mask.shape}")
    dtype = _float_dtype(token_level_rewards)
    out = _advantages(batch, tokens, _numpy_float(dtype), eps, bool(norm_adv_by_std_in_grpo), td)
    res = _like(out, token_level_rewards, dtype)
    return res, res


def tempo_advantages_trl(
    rewards: Any,
    completion_mask: Any,
    completion_ids: Any,
    num_generations: int,
    *,
    epsilon: float = 1e-4,
    scale_rewards: bool | str = True,
    td_coef: float = 1.0,
) -> Any:
    """TEMPO advantages [B, L] for TRL's layout: groups are contiguous blocks of num_generations.

    ``rewards`` is the per-completion reward [B] (as TRL's GRPOTrainer computes it) or token-level
    rewards [B, L]. ``epsilon`` defaults to TRL's 1e-4. ``scale_rewards`` as in TRL: True / "group"
    divides by the group std, "batch" by the std of all B rewards (both Bessel-corrected), False /
    "none" does not divide. A NaN reward marks an unscorable completion (TRL's convention): it is
    left out of its group (statistics and tree) and its advantage is 0. The result has the type,
    dtype and device of ``rewards`` (float32 for integer rewards given as torch tensors).
    """
    if isinstance(num_generations, bool) or not isinstance(num_generations, (int, np.integer)):
        raise ParameterError(f"num_generations must be an integer, got {num_generations!r}")
    k = int(num_generations)
    if k < 1:
        raise ParameterError(f"num_generations must be ≥ 1, got {k}")
    scale = scale_rewards
    if isinstance(scale_rewards, bool):
        scale = "group" if scale_rewards else "none"
    if scale not in ("group", "batch", "none"):
        raise ParameterError(
            f"scale_rewards must be True/False, 'group', 'batch' or 'none', got {scale_rewards!r}"
        )
    eps = _check_eps(epsilon)
    td = _check_td(td_coef)
    ids = _as_2d(completion_ids, "completion_ids")
    n = ids.shape[0]
    if n % k:
        raise DataError(f"batch of {n} completions is not a multiple of num_generations={k}")
    index = np.arange(n, dtype=np.int64) // k
    raw = _to_numpy(rewards)
    if raw.dtype.kind not in "biuf":
        raise DataError(f"rewards must be numbers, got dtype {raw.dtype}")
    scores = _scores(raw, n)
    unscorable = np.isnan(scores)
    if unscorable.any():  # each in a group of its own, advantage 0
        index[unscorable] = -1 - np.flatnonzero(unscorable)
        scores = np.where(unscorable, 0.0, scores)
    batch, tokens = _prepare(scores, completion_mask, index, ids)
    if batch.mask.shape != ids.shape:
        raise DataError(f"completion_mask has shape {batch.mask.shape}, ids {ids.shape}")
    dtype = _float_dtype(rewards)
    if scale == "batch":
        out = _advantages(batch, tokens, np.dtype(np.float64), eps, False, td)
        valid = scores[~unscorable]
        std = float(np.std(valid, ddof=1)) if valid.size > 1 else 0.0
        out = out / (std + eps)
    else:
        out = _advantages(batch, tokens, np.dtype(np.float64), eps, scale == "group", td)
    out[unscorable] = 0.0
    return _like(out.astype(_numpy_float(dtype), copy=False), rewards, dtype)
