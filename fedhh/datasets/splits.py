"""Non-IID splits of a population into parties, and party size profiles (docs/mechanisms.md §9).

The same rules serve :func:`~fedhh.datasets.synthetic_zipf`, :func:`partition` and
:func:`~fedhh.datasets.load_aol`. M is the number of parties, w the party size profile (below),
D the number of distinct items.

* ``"iid"`` (also ``"dirichlet"`` with ``alpha=inf``): all users are shuffled and cut into parties
  of exactly the target sizes.
* ``"dirichlet"``: every distinct item v draws a share vector q_v ~ Dirichlet(α·M·w) over the
  parties (so E[q_v] = w; with equal sizes this is the symmetric Dirichlet(α)), and the c(v) users
  holding v go to the parties by one Multinomial(c(v), q_v) draw. Small α puts each item in few
  parties. Party sizes are n·w only in expectation.
* ``"permutation"``: every party ranks the items by its own permutation of the global ranks.
  Party i draws a uniformly random set S_i of ⌊permute·D⌋ of the D global ranks and shuffles the
  items on those ranks among themselves; σ_i(r) is the rank, in party i, of the item of global
  rank r (σ_i(r) = r for r ∉ S_i). Each top item is thus moved, mostly deep into the tail, with
  probability ``permute`` independently in every party, so local top-k lists overlap only in
  part: a top item keeps its rank in two given parties with probability (1 − permute)², and the
  items moving up in its place differ between parties (measured: with permute=0.5, 5 parties,
  2000 items and k=10, two local top-10 lists share about 16% of their items; 100% for IID).

  - :func:`~fedhh.datasets.synthetic_zipf`: party i draws its n_i users i.i.d. from Zipf(s)
    over *its* ranks (item of global rank r has probability ∝ σ_i(r)^−s): an exact per-party
    Zipf; party sizes are exact.
  - :func:`partition` (a fixed population): the users of the item of global rank r (ranked by
    count, ties by code) go to party i with probability ∝ w_i·(r / σ_i(r))^s, i.e. in proportion
    to how much more popular party i's permuted Zipf(s) makes the item; sizes then only roughly
    follow w.

**Party sizes**: ``"equal"`` (w_i = 1/M), ``"skewed"`` (a Zipf(1) profile, w_i ∝ 1/i: party 0 is
the largest, M times the last), or a sequence of M positive weights. Exact target sizes are
apportioned from n·w by largest remainder, every party getting at least one user.

Every party gets at least one user (n_users < n_parties raises ParameterError); a party left empty
by a random split receives one random user from the currently largest party.

All randomness comes from a ``numpy.random.Generator`` passed as ``rng`` (or an int seed, as
``rng`` or ``seed``); ``None`` draws fresh OS entropy (not reproducible). No global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core.items import Codes, as_codes
from fedhh.datasets.common import RngLike, Sizes, _check_float, _check_int, make_rng
from fedhh.errors import CodecError, ParameterError

__all__ = ["SIZE_PROFILES", "SPLITS", "SplitOptions", "apportion", "partition", "size_weights"]

SPLITS = ("iid", "dirichlet", "permutation")
SIZE_PROFILES = ("equal", "skewed")

_MATRIX_CELLS = 1 << 22  # items × parties per block of Dirichlet/multinomial draws


def _check_split(split: str, alpha: float, permute: float) -> tuple[str, float, float]:
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    alpha = _check_float("alpha", alpha)
    if math.isnan(alpha) or alpha <= 0:
        raise ParameterError(f"Dirichlet alpha must be > 0 (inf for IID), got {alpha}")
    permute = _check_float("permute", permute)
    if not 0.0 <= permute <= 1.0:
        raise ParameterError(
            f"permute (fraction of ranks each party shuffles) must be in [0, 1], got {permute}"
        )
    if split == "dirichlet" and math.isinf(alpha):
        split = "iid"
    return split, alpha, permute


def _check_s(s: float) -> float:
    s = _check_float("Zipf exponent s", s)
    if not math.isfinite(s) or s <= 0:
        raise ParameterError(f"Zipf exponent s must be a finite number > 0, got {s}")
    return s


def size_weights(n_parties: int, sizes: Sizes = "equal") -> NDArray[np.float64]:
    """The party size profile w (sums to 1): "equal", "skewed" (w_i ∝ 1/(i+1)) or weights."""
    n_parties = _check_int("n_parties", n_parties, 1)
    if isinstance(sizes, str):
        if sizes == "equal":
            w = np.ones(n_parties)
        elif sizes == "skewed":
            w = 1.0 / np.arange(1, n_parties + 1, dtype=np.float64)
        else:
            raise ParameterError(
                f"sizes must be one of {', '.join(SIZE_PROFILES)} or a sequence of weights; "
                f"got {sizes!r}"
            )
    else:
        try:
            w = np.asarray(sizes, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError(f"size weights must be numbers, got {sizes!r}") from None
        if w.shape != (n_parties,):
            raise ParameterError(f"need {n_parties} size weights, got shape {w.shape}")
        if not np.all(np.isfinite(w)) or not np.all(w > 0):
            raise ParameterError("size weights must be finite and positive")
    return w / w.sum()


def apportion(total: int, weights: ArrayLike) -> NDArray[np.int64]:
    """Split ``total`` users into len(weights) exact sizes ∝ weights, each at least 1.

    One user goes to each party first; the remaining ``total − M`` are apportioned by largest
    remainder (ties to the lower index).
    """
    w = np.asarray(weights, dtype=np.float64)
    n_parties = w.size
    total = _check_int("n_users", total, 1)
    if total < n_parties:
        raise ParameterError(
            f"n_users={total} is fewer than n_parties={n_parties}: every party needs a user"
        )
    extra = total - n_parties
    raw = extra * (w / w.sum())
    base = np.floor(raw).astype(np.int64)
    rest = extra - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rest]] += 1
    return base + 1


def _rank_permutation(n: int, permute: float, rng: np.random.Generator) -> NDArray[np.int64]:
    """σ (1-based local ranks of global ranks 1..n): shuffle ⌊permute·n⌋ random ranks."""
    sigma = np.arange(1, n + 1, dtype=np.int64)
    n_sel = math.floor(permute * n)
    if n_sel >= 2:
        sel = rng.choice(n, size=n_sel, replace=False)
        sigma[sel] = sel[rng.permutation(n_sel)] + 1
    return sigma


class SplitOptions(TypedDict, total=False):
    """The split keywords of every federation builder (:func:`partition`,
    :func:`~fedhh.datasets.synthetic_zipf`, :func:`~fedhh.datasets.synthetic_urls`,
    :func:`~fedhh.datasets.load_aol`), checked by :meth:`SplitRule.check`: ``split`` ("iid",
    "dirichlet" or "permutation"; default "dirichlet"), ``alpha`` (Dirichlet α, default 0.5; inf
    is IID), ``sizes`` (the party size profile, default "equal") and ``permute`` (the share of
    ranks each party shuffles for "permutation", default 0.5)."""

    split: str
    alpha: float
    sizes: Sizes
    permute: float


@dataclass(frozen=True, eq=False)
class SplitRule:
    """A checked split of users into ``n_parties`` parties (the rules of the module docstring):
    the rule ("iid" also for Dirichlet with α = inf), α, the shuffled share of the ranks
    ``permute``, the size profile as given and its weights w."""

    n_parties: int
    split: str
    alpha: float
    permute: float
    sizes: Sizes
    weights: NDArray[np.float64]

    @classmethod
    def check(
        cls,
        n_parties: int,
        *,
        split: str = "dirichlet",
        alpha: float = 0.5,
        sizes: Sizes = "equal",
        permute: float = 0.5,
    ) -> SplitRule:
        """The split of :class:`SplitOptions` (defaults there) over ``n_parties`` parties."""
        split, alpha, permute = _check_split(split, alpha, permute)
        return cls(n_parties, split, alpha, permute, sizes, size_weights(n_parties, sizes))

    def params(self) -> dict[str, object]:
        """What a dataset's ``params`` records of its split: the rule, its α ("dirichlet") or
        shuffled share ("permutation"), and the size profile."""
        params: dict[str, object] = {"split": self.split}
        if self.split == "dirichlet":
            params["alpha"] = self.alpha
        if self.split == "permutation":
            params["permute"] = self.permute
        params["sizes"] = self.sizes if isinstance(self.sizes, str) else "custom"
        return params


def _fill_empty(parties: list[Codes]) -> list[Codes]:
    """Give each empty party one (random, since parties are shuffled) user of the largest one."""
    for i in range(len(parties)):
        if parties[i].size == 0:
            j = int(np.argmax([p.size for p in parties]))
            parties[i] = parties[j][-1:].copy()
            parties[j] = parties[j][:-1]
    return parties


def _shuffled(parts: list[list[Codes]], rng: np.random.Generator) -> list[Codes]:
    out = []
    for pieces in parts:
        arr = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint64)
        rng.shuffle(arr)
        out.append(arr)
    return out


def _split_counts(
    labels: Codes, counts: NDArray[np.int64], rule: SplitRule, s: float, rng: np.random.Generator
) -> list[Codes]:
    """Split the users of distinct items ``labels`` (``counts`` users each) into parties (``s``:
    the Zipf exponent of the "permutation" affinity)."""
    n_parties, split, alpha, weights = rule.n_parties, rule.split, rule.alpha, rule.weights
    total = int(counts.sum())
    if total < n_parties:
        raise ParameterError(
            f"{total} users are fewer than n_parties={n_parties}: every party needs a user"
        )
    if split == "iid":
        users = np.repeat(labels, counts)
        rng.shuffle(users)
        bounds = np.cumsum(apportion(total, weights))[:-1]
        return [np.ascontiguousarray(p) for p in np.split(users, bounds)]
    if split == "dirichlet":
        conc = alpha * n_parties * weights
        pieces: list[list[Codes]] = [[] for _ in range(n_parties)]
        block = max(1, _MATRIX_CELLS // n_parties)
        for start in range(0, labels.size, block):
            lab = labels[start : start + block]
            q = rng.dirichlet(conc, size=lab.size)
            bad = ~np.all(np.isfinite(q), axis=1)
            if np.any(bad):  # guard against underflow of all Gamma draws (tiny alpha)
                q[bad] = np.eye(n_parties)[rng.choice(n_parties, size=int(bad.sum()), p=weights)]
            mat = rng.multinomial(counts[start : start + block], q)
            for i in range(n_parties):
                pieces[i].append(np.repeat(lab, mat[:, i]))
        return _fill_empty(_shuffled(pieces, rng))
    # permutation: per-party affinity (r / σ_i(r))^s on global ranks
    order = np.lexsort((labels, -counts))
    labels, counts = labels[order], counts[order]
    ranks = np.arange(1, labels.size + 1, dtype=np.float64)
    logw = np.empty((labels.size, n_parties))
    for i in range(n_parties):
        sigma = _rank_permutation(labels.size, rule.permute, rng)
        logw[:, i] = math.log(weights[i]) + s * (np.log(ranks) - np.log(sigma))
    logw -= logw.max(axis=1, keepdims=True)
    shares = np.exp(logw)
    shares /= shares.sum(axis=1, keepdims=True)
    mat = rng.multinomial(counts, shares)
    pieces = [[np.repeat(labels, mat[:, i])] for i in range(n_parties)]
    return _fill_empty(_shuffled(pieces, rng))


def partition(
    codes: ArrayLike,
    n_parties: int,
    *,
    s: float = 1.0,
    rng: RngLike = None,
    seed: int | None = None,
    **split: Unpack[SplitOptions],
) -> list[Codes]:
    """Split a population (one code per user) into ``n_parties`` shuffled code arrays.

    The multiset of codes is preserved exactly. Rules as in the module docstring (the keywords
    ``split``, ``alpha``, ``sizes``, ``permute``: :class:`SplitOptions`); ``s`` is the Zipf
    exponent of the "permutation" affinity (r / σ_i(r))^s.
    """
    arr = np.asarray(codes)
    if arr.ndim != 1:
        raise ParameterError(f"codes must be a 1-D array (one code per user), got {arr.shape}")
    try:
        pop = as_codes(arr, 64)
    except CodecError as exc:
        raise ParameterError(f"codes: {exc}") from None
    n_parties = _check_int("n_parties", n_parties, 1)
    if pop.size < n_parties:
        raise ParameterError(
            f"{pop.size} users are fewer than n_parties={n_parties}: every party needs a user"
        )
    rule = SplitRule.check(n_parties, **split)
    s = _check_s(s)
    gen = make_rng(rng, seed)
    labels, counts = np.unique(pop, return_counts=True)
    return _split_counts(labels, counts.astype(np.int64), rule, s, gen)
