"""The shared prefix-trie core: one array-based trie for bit prefixes and token sequences.

A :class:`PrefixTrie` stores its nodes in growable numpy arrays (no per-node Python objects):

* ``label`` (``uint64``): for a bit trie, the node's full prefix code (a prefix of length ℓ bits
  of an m-bit code, most significant bits first, as in :mod:`fedhh.core.codes`) while ℓ ≤ 64; for a
  longer prefix, its 64-bit fingerprint (:func:`fedhh.core.codes.fingerprint` of the prefix and ℓ,
  the key the oracles use): labels stay one word, :meth:`find` works on them, and whoever needs
  the full prefixes keeps them beside the node ids (:func:`fedhh.mechanisms.local.local_search`
  does); :meth:`extend` works on full labels only (ℓ + step ≤ 64). For a token tree, the token on
  the edge into the node (the first token of the edge in a compressed tree), or :data:`END` for
  an end-of-sequence child "⊥".
* ``parent`` (``int64``): the parent's node id, ``-1`` for a root. A parent always has a smaller id
  than its children, so node order is a topological order.
* ``depth`` (``int64``): the prefix length in bits or tokens (never smaller than the parent's).
* ``alive`` (``bool``): pruned nodes stay in the arrays, marked dead; a dead node's descendants
  are dead too (nodes created under a dead parent are created dead).
* ``stats`` (``dict[str, float64 array]``): named per-node statistics; a node without a value
  holds NaN.

Every operation is vectorised over node arrays. Walks that follow parent pointers (pruning,
descendants) take one vectorised pass per tree level.

Bit tries (the heavy-hitter mechanisms)::

    trie = PrefixTrie()
    root = trie.add_nodes(0, -1, 0)              # the empty prefix
    lvl1 = trie.extend(root, 2)                  # labels 0..3 at depth 2
    trie.set_stat("estimate", lvl1, [5.0, 1.0, 7.0, 0.0])
    best = trie.top(lvl1, "estimate", 2)         # ids of labels 2 and 0
    trie.prune(lvl1, np.isin(lvl1, best))        # the other two (and their subtrees) die
    lvl2 = trie.extend(trie.frontier(2), 3)      # 2 · 8 children at depth 5

Token trees (:mod:`fedhh.tempo`) build a compressed forest in one call with
:meth:`PrefixTrie.from_arrays`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core.codes import check_int
from fedhh.errors import ParameterError

__all__ = ["END", "MAX_BITS", "PrefixTrie"]

#: Label of an end-of-sequence node "⊥" in a token tree (no token id equals it).
END = np.uint64(np.iinfo(np.uint64).max)
#: Largest depth of a bit trie built with :meth:`PrefixTrie.extend`.
MAX_BITS = 64
#: Refuse an ``extend`` that would create more nodes than this in one call.
MAX_NEW_NODES = 1 << 31

IdArray = NDArray[np.int64]
_U1 = np.uint64(1)


def _label_array(labels: ArrayLike) -> NDArray[Any]:
    """``np.asarray``, but a list of Python ints beyond int64 stays exact (object dtype)."""
    arr = np.asarray(labels)
    if arr.dtype.kind == "f" and not isinstance(labels, np.ndarray):
        obj = np.asarray(labels, dtype=object)
        if all(isinstance(v, (int, np.integer)) for v in obj.reshape(-1).tolist()):
            return obj
    return arr


def _as_labels(labels: ArrayLike) -> NDArray[np.uint64]:
    """Return labels as a 1-D ``uint64`` array, rejecting negative or non-integer values."""
    arr = _label_array(labels)
    if arr.dtype == np.uint64:
        return arr.reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    kind = arr.dtype.kind
    if kind == "u":
        return arr.astype(np.uint64).reshape(-1)
    if kind == "i":
        if (arr < 0).any():
            raise ParameterError(f"labels must be non-negative, got {int(arr.min())}")
        return arr.astype(np.uint64).reshape(-1)
    if kind == "O":
        try:
            flat = [int(v) for v in arr.reshape(-1)]
            return np.array(flat, dtype=np.uint64)
        except (OverflowError, TypeError, ValueError) as exc:
            raise ParameterError(f"labels must be integers in [0, 2^64): {exc}") from None
    raise ParameterError(f"labels must be integers, got an array of dtype {arr.dtype}")


def _as_int64(values: ArrayLike, what: str) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise ParameterError(f"{what} must be integers, got an array of dtype {arr.dtype}")
    if arr.dtype == np.uint64 and (arr > np.iinfo(np.int64).max).any():
        raise ParameterError(f"{what} out of range")
    return arr.astype(np.int64, copy=False).reshape(-1)


def _nan_to_none(values: NDArray[np.float64]) -> list[float | None]:
    return [None if v != v else float(v) for v in values.tolist()]


class PrefixTrie:
    """An array-based prefix trie (or forest) over integer labels with arbitrary step widths.

    See the module docstring for the node arrays. Node ids are positions in the arrays; they never
    change (pruning only marks nodes dead).
    """

    __slots__ = ("_alive", "_depth", "_label", "_n", "_parent", "_stats")

    def __init__(self, capacity: int = 64) -> None:
        cap = max(1, check_int(capacity, "capacity"))
        self._n = 0
        self._label = np.zeros(cap, dtype=np.uint64)
        self._parent = np.full(cap, -1, dtype=np.int64)
        self._depth = np.zeros(cap, dtype=np.int64)
        self._alive = np.zeros(cap, dtype=np.bool_)
        self._stats: dict[str, NDArray[np.float64]] = {}

    # ------------------------------------------------------------------ storage
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"PrefixTrie(nodes={self._n}, alive={int(self.alive.sum())}, "
            f"stats={sorted(self._stats)})"
        )

    @property
    def capacity(self) -> int:
        return int(self._label.shape[0])

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more nodes (arrays grow geometrically)."""
        need = self._n + check_int(extra, "extra")
        cap = self.capacity
        if need <= cap:
            return
        new_cap = max(need, 2 * cap)

        def grow(arr: NDArray[Any], fill: Any) -> NDArray[Any]:
            out = np.full(new_cap, fill, dtype=arr.dtype)
            out[: self._n] = arr[: self._n]
            return out

        self._label = grow(self._label, 0)
        self._parent = grow(self._parent, -1)
        self._depth = grow(self._depth, 0)
        self._alive = grow(self._alive, False)
        self._stats = {k: grow(v, np.nan) for k, v in self._stats.items()}

    @property
    def label(self) -> NDArray[np.uint64]:
        """Node labels (a view trimmed to ``len(self)``)."""
        return self._label[: self._n]

    @property
    def parent(self) -> IdArray:
        """Parent ids, -1 for roots (a view)."""
        return self._parent[: self._n]

    @property
    def depth(self) -> IdArray:
        """Prefix lengths in bits or tokens (a view)."""
        return self._depth[: self._n]

    @property
    def alive(self) -> NDArray[np.bool_]:
        """Alive flags (a view; use :meth:`prune` to kill nodes so that subtrees follow)."""
        return self._alive[: self._n]

    @property
    def stats(self) -> dict[str, NDArray[np.float64]]:
        """Per-node statistics by name (views trimmed to ``len(self)``; NaN = no value)."""
        return {k: v[: self._n] for k, v in self._stats.items()}

    def _ids(self, ids: ArrayLike) -> IdArray:
        arr = _as_int64(ids, "node ids")
        if arr.size and (arr.min() < 0 or arr.max() >= self._n):
            bad = arr[(arr < 0) | (arr >= self._n)][0]
            raise ParameterError(f"node id {int(bad)} out of range [0, {self._n})")
        return arr

    # ------------------------------------------------------------------ building
    def add_nodes(
        self,
        labels: ArrayLike,
        parents: ArrayLike,
        depths: ArrayLike,
        *,
        alive: ArrayLike | None = None,
    ) -> IdArray:
        """Append nodes (vectorised; scalars broadcast) and return their ids.

        A parent is -1 (a root), an existing node, or a node earlier in the same call. A node's
        depth must be ≥ its parent's. ``alive`` defaults to True for roots and to the parent's
        flag otherwise (a node added under a dead parent is dead).
        """
        lab = _label_array(labels)
        par = np.asarray(parents)
        dep = np.asarray(depths)
        try:
            shape = np.broadcast_shapes(lab.shape, par.shape, dep.shape)
        except ValueError:
            raise ParameterError(
                f"labels, parents and depths have incompatible shapes "
                f"{lab.shape}, {par.shape}, {dep.shape}"
            ) from None
        lab_a = _as_labels(np.broadcast_to(lab, shape))
        par_a = _as_int64(np.broadcast_to(par, shape), "parents")
        dep_a = _as_int64(np.broadcast_to(dep, shape), "depths")
        k = int(lab_a.size)
        n0 = self._n
        ids = np.arange(n0, n0 + k, dtype=np.int64)
        if k == 0:
            return ids
        if (par_a < -1).any() or (par_a >= ids).any():
            raise ParameterError("each parent must be -1, an existing node or an earlier new node")
        if (dep_a < 0).any():
            raise ParameterError(f"depths must be ≥ 0, got {int(dep_a.min())}")
        if alive is not None:
            alive_a = np.broadcast_to(np.asarray(alive, dtype=np.bool_), shape).reshape(-1)
        self.reserve(k)
        self._label[n0 : n0 + k] = lab_a
        self._parent[n0 : n0 + k] = par_a
        self._depth[n0 : n0 + k] = dep_a
        has_par = par_a >= 0
        if (dep_a[has_par] < self._depth[par_a[has_par]]).any():
            self._n = n0
            raise ParameterError("a node's depth must be ≥ its parent's depth")
        if alive is None:
            self._alive[n0 : n0 + k] = True
            self._n = n0 + k
            # a node under a dead parent is dead; inside the batch, follow the new subtrees
            outer = has_par & (par_a < n0)
            dead_start = np.zeros(self._n, dtype=np.bool_)
            dead_start[ids[outer]] = ~self._alive[par_a[outer]]
            if dead_start.any():
                self._alive[: self._n][self._descendant_mask(dead_start, alive_only=False)] = False
        else:
            self._alive[n0 : n0 + k] = alive_a
        for col in self._stats.values():
            col[n0 : n0 + k] = np.nan
        self._n = n0 + k
        return ids

    @classmethod
    def from_arrays(
        cls,
        labels: ArrayLike,
        parents: ArrayLike,
        depths: ArrayLike,
        *,
        alive: ArrayLike | None = None,
        stats: Mapping[str, ArrayLike] | None = None,
    ) -> PrefixTrie:
        """Build a trie (or forest) from whole node arrays in one call (see :meth:`add_nodes`)."""
        lab = _label_array(labels).reshape(-1)
        trie = cls(capacity=max(1, lab.size))
        ids = trie.add_nodes(lab, parents, depths, alive=alive)
        for name, values in (stats or {}).items():
            trie.set_stat(name, ids, values)
        return trie

    def extend(self, node_ids: ArrayLike, step: int) -> IdArray:
        """Give each node (label p, depth ℓ) the 2^step children p·2^step + z, z = 0..2^step−1.

        Children come in node order, then z order, at depth ℓ + step; they are dead if their
        parent is. Requires step ≥ 1, ℓ + step ≤ 64 and p < 2^ℓ (a bit-prefix label).
        """
        ids = self._ids(node_ids)
        s = check_int(step, "step")
        if s < 1:
            raise ParameterError(f"step must be ≥ 1, got {s}")
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64)
        dep = self._depth[ids]
        if int(dep.max()) + s > MAX_BITS:
            raise ParameterError(f"depth {int(dep.max())} + step {s} exceeds {MAX_BITS} bits")
        lab = self._label[ids]
        short = dep < MAX_BITS
        if ((lab[short] >> dep[short].astype(np.uint64)) != 0).any():
            raise ParameterError("extend needs bit-prefix labels (label < 2^depth)")
        count = int(ids.size) << s
        if count > MAX_NEW_NODES:
            raise ParameterError(f"extend by {s} bits would create {count} nodes")
        width = 1 << s
        z = np.arange(width, dtype=np.uint64)
        child_labels = ((lab << np.uint64(s))[:, None] | z[None, :]).reshape(-1)
        child_parents = np.repeat(ids, width)
        child_depths = np.repeat(dep + s, width)
        return self.add_nodes(child_labels, child_parents, child_depths)

    # ------------------------------------------------------------------ statistics
    def set_stat(self, name: str, ids: ArrayLike, values: ArrayLike) -> None:
        """Set statistic ``name`` of nodes ``ids`` (created, NaN-filled, on first use)."""
        if not isinstance(name, str) or not name:
            raise ParameterError(f"stat name must be a non-empty string, got {name!r}")
        idx = self._ids(ids)
        vals = np.asarray(values, dtype=np.float64)
        try:
            vals = np.broadcast_to(vals, idx.shape)
        except ValueError:
            raise ParameterError(f"{vals.size} values for {idx.size} nodes") from None
        col = self._stats.get(name)
        if col is None:
            col = np.full(self.capacity, np.nan, dtype=np.float64)
            self._stats[name] = col
        col[idx] = vals

    def get_stat(self, name: str, ids: ArrayLike | None = None) -> NDArray[np.float64]:
        """Statistic ``name`` of nodes ``ids`` (all nodes, as a view, when ``ids`` is None)."""
        col = self._stats.get(name)
        if col is None:
            raise ParameterError(f"unknown stat {name!r}; known: {sorted(self._stats)}")
        if ids is None:
            return col[: self._n]
        return col[self._ids(ids)]

    # ------------------------------------------------------------------ pruning and ranking
    def _descendant_mask(self, start: NDArray[np.bool_], alive_only: bool) -> NDArray[np.bool_]:
        """Nodes under the marked ones (the marked ones included), one pass per level."""
        n = self._n
        out = start.copy()
        if not out.any():
            return out
        lo = int(np.argmax(out)) + 1
        par = self._parent[lo:n]
        has_par = par >= 0
        par_c = np.where(has_par, par, 0)
        cand = has_par & self._alive[lo:n] if alive_only else has_par
        cur = out
        while True:
            hit = cand & cur[par_c] & ~out[lo:n]
            if not hit.any():
                return out
            cur = np.zeros(n, dtype=np.bool_)
            cur[lo:][hit] = True
            out |= cur

    def prune(self, ids: ArrayLike, keep_mask: ArrayLike) -> int:
        """Mark ``ids[~keep_mask]`` and their descendants dead; return how many nodes died."""
        idx = self._ids(ids)
        keep = np.asarray(keep_mask, dtype=np.bool_).reshape(-1)
        if keep.shape != idx.shape:
            raise ParameterError(f"keep_mask has {keep.size} entries for {idx.size} ids")
        kill = idx[~keep]
        start = np.zeros(self._n, dtype=np.bool_)
        start[kill] = True
        start &= self.alive
        dead = self._descendant_mask(start, alive_only=True)
        self._alive[: self._n][dead] = False
        return int(dead.sum())

    def top(
        self,
        ids: ArrayLike | None,
        stat: str,
        k: int,
        *,
        min_value: float | None = None,
    ) -> IdArray:
        """The ≤ k ids with the largest ``stat``, descending; ties by label, then id, ascending.

        NaN values never rank; with ``min_value`` only values > min_value do. ``ids=None`` ranks
        all alive nodes.
        """
        kk = check_int(k, "k")
        if kk < 0:
            raise ParameterError(f"k must be ≥ 0, got {kk}")
        idx = np.flatnonzero(self.alive) if ids is None else self._ids(ids)
        vals = self.get_stat(stat, idx)
        ok = ~np.isnan(vals)
        if min_value is not None:
            ok &= vals > float(min_value)
        idx, vals = idx[ok], vals[ok]
        order = np.lexsort((idx, self._label[idx], -vals))
        return idx[order[:kk]].astype(np.int64, copy=False)

    # ------------------------------------------------------------------ navigation
    def children(self, ids: ArrayLike, *, alive_only: bool = False) -> IdArray:
        """Children of any of ``ids`` (in node order)."""
        idx = self._ids(ids)
        mark = np.zeros(self._n + 1, dtype=np.bool_)  # slot n stands for "no parent"
        mark[idx] = True
        par = self.parent
        hit = mark[np.where(par >= 0, par, self._n)]
        if alive_only:
            hit &= self.alive
        return np.flatnonzero(hit).astype(np.int64)

    def find(self, labels: ArrayLike, depth: int, *, alive_only: bool = False) -> IdArray:
        """Vectorised lookup of nodes at ``depth`` by label: ids, or -1 where there is none.

        If several nodes match, an alive one wins, then the smallest id.
        """
        d = check_int(depth, "depth")
        q = _as_labels(labels)
        mask = self.depth == d
        if alive_only:
            mask &= self.alive
        cand = np.flatnonzero(mask)
        out = np.full(q.shape, -1, dtype=np.int64)
        if cand.size == 0 or q.size == 0:
            return out
        cand = cand[np.lexsort((cand, ~self._alive[cand], self._label[cand]))]
        keys = self._label[cand]
        pos = np.searchsorted(keys, q, side="left")
        inside = pos < keys.size
        pos_c = np.minimum(pos, keys.size - 1)
        hit = inside & (keys[pos_c] == q)
        out[hit] = cand[pos_c[hit]]
        return out

    def frontier(self, depth: int | None = None) -> IdArray:
        """Alive nodes at ``depth``, or (``depth=None``) alive nodes without alive children."""
        alive = self.alive
        if depth is not None:
            d = check_int(depth, "depth")
            return np.flatnonzero(alive & (self.depth == d)).astype(np.int64)
        par = self.parent
        with_parent = alive & (par >= 0)
        has_child = np.zeros(self._n, dtype=np.bool_)
        has_child[par[with_parent]] = True
        return np.flatnonzero(alive & ~has_child).astype(np.int64)

    def roots(self) -> IdArray:
        """Ids of all roots (parent -1)."""
        return np.flatnonzero(self.parent < 0).astype(np.int64)

    # ------------------------------------------------------------------ export
    def export(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict of lists (NaN statistics become None)."""
        return {
            "label": [int(v) for v in self.label.tolist()],
            "parent": self.parent.tolist(),
            "depth": self.depth.tolist(),
            "alive": self.alive.tolist(),
            "stats": {k: _nan_to_none(v) for k, v in self.stats.items()},
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per node: id, label, parent, depth, alive and every statistic."""
        data = self.export()
        names = list(data["stats"])
        return [
            {
                "id": i,
                "label": data["label"][i],
                "parent": data["parent"][i],
                "depth": data["depth"][i],
                "alive": data["alive"][i],
                **{k: data["stats"][k][i] for k in names},
            }
            for i in range(self._n)
        ]

    def copy(self) -> PrefixTrie:
        """A deep copy."""
        out = PrefixTrie(capacity=self.capacity)
        out._n = self._n
        out._label = self._label.copy()
        out._parent = self._parent.copy()
        out._depth = self._depth.copy()
        out._alive = self._alive.copy()
        out._stats = {k: v.copy() for k, v in self._stats.items()}
        return out
