"""Federated datasets: synthetic non-IID Zipf populations, the AOL query log, user files (spec §9).

A :class:`FederatedDataset` holds one ``uint64`` code array per party (one entry per user, users
in random order), the codec that decodes codes back to items, and the exact global counts.

**Non-IID splits** (the same rules in :func:`synthetic_zipf`, :func:`partition`, :func:`load_aol`).
M is the number of parties, w the party size profile (below), D the number of distinct items.

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

  - :func:`synthetic_zipf`: party i draws its n_i users i.i.d. from Zipf(s) over *its* ranks
    (item of global rank r has probability ∝ σ_i(r)^−s): an exact per-party Zipf; party sizes
    are exact.
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

import csv
import gzip
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.codec import Codes, IntCodec, StringCodec, as_codes, check_bits
from fedhh.errors import CodecError, DataError, ParameterError
from fedhh.metrics import Scores, evaluate, true_top_k

__all__ = [
    "AOL_FILE",
    "SPLITS",
    "FederatedDataset",
    "apportion",
    "find_data_file",
    "load_aol",
    "load_csv_column",
    "load_party_files",
    "make_rng",
    "partition",
    "read_value_counts",
    "size_weights",
    "synthetic_zipf",
    "zipf_labels",
    "zipf_pmf",
]

AOL_FILE = "aol_queries_6bytes.txt.gz"
AOL_WIDTH = 6  # bytes per AOL item (m = 48)
SPLITS = ("iid", "dirichlet", "permutation")
SIZE_PROFILES = ("equal", "skewed")

RngLike = np.random.Generator | int | None
StrPath = str | os.PathLike[str]
Sizes = str | Sequence[float] | NDArray[np.floating[Any]]

_MATRIX_CELLS = 1 << 22  # items × parties per block of Dirichlet/multinomial draws


# ---------------------------------------------------------------------------------------------
# The dataset value
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """Users' item codes split over parties, with the exact global counts.

    ``parties[i]`` is a read-only ``uint64`` array with one m-bit code per user of party i.
    ``global_codes`` (sorted, unique) and ``global_counts`` (int64, aligned, all ≥ 1) are the
    exact counts over all parties, computed once at construction (or passed in as
    ``precomputed=(codes, counts)`` by the generators, which know them already; checked only
    cheaply: sorted, unique, aligned, summing to the number of users).
    """

    name: str
    m: int
    parties: list[Codes] = field(repr=False)
    codec: StringCodec | IntCodec
    params: Mapping[str, object] = field(default_factory=dict)
    precomputed: InitVar[tuple[ArrayLike, ArrayLike] | None] = None
    global_codes: Codes = field(init=False, repr=False)
    global_counts: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self, precomputed: tuple[ArrayLike, ArrayLike] | None) -> None:
        m = check_bits(self.m)
        if int(self.codec.m) != m:
            raise ParameterError(f"codec has m={self.codec.m} bits but the dataset has m={m}")
        if isinstance(self.parties, np.ndarray) or not isinstance(self.parties, Sequence):
            raise ParameterError("parties must be a list of code arrays, one per party")
        if len(self.parties) < 1:
            raise ParameterError("a dataset needs at least one party")
        parties: list[Codes] = []
        for i, p in enumerate(self.parties):
            try:
                arr = as_codes(p, m).view()
            except CodecError as exc:
                raise DataError(f"party {i}: {exc}") from None
            if arr.size == 0:
                raise DataError(f"party {i} has no users")
            arr.flags.writeable = False
            parties.append(arr)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "parties", parties)
        object.__setattr__(self, "params", dict(self.params))
        n = sum(p.size for p in parties)
        if precomputed is None:
            codes, counts = np.unique(np.concatenate(parties), return_counts=True)
        else:
            codes = as_codes(precomputed[0], m)
            counts = np.asarray(precomputed[1])
            if (
                counts.shape != codes.shape
                or (codes.size > 1 and not np.all(codes[1:] > codes[:-1]))
                or (counts.size and int(counts.min()) < 1)
                or int(counts.sum()) != n
            ):
                raise DataError("precomputed global counts do not match the parties")
        codes = np.ascontiguousarray(codes, dtype=np.uint64)
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        codes.flags.writeable = False
        counts.flags.writeable = False
        object.__setattr__(self, "global_codes", codes)
        object.__setattr__(self, "global_counts", counts)

    @property
    def n_parties(self) -> int:
        return len(self.parties)

    @property
    def party_sizes(self) -> NDArray[np.int64]:
        """Number of users of each party."""
        return np.array([p.size for p in self.parties], dtype=np.int64)

    @property
    def n_users(self) -> int:
        return int(sum(p.size for p in self.parties))

    @property
    def n_distinct(self) -> int:
        """Number of distinct items held by at least one user."""
        return int(self.global_codes.size)

    def top_k(self, k: int) -> Codes:
        """The true global top-k codes, most frequent first (ties: smaller code first)."""
        return true_top_k((self.global_codes, self.global_counts), k)

    def count_of(self, codes: ArrayLike) -> NDArray[np.int64]:
        """Exact global counts of ``codes`` (0 for codes nobody holds)."""
        q = as_codes(codes, self.m)
        out = np.zeros(q.size, dtype=np.int64)
        if self.global_codes.size == 0 or q.size == 0:
            return out
        pos = np.minimum(np.searchsorted(self.global_codes, q), self.global_codes.size - 1)
        hit = self.global_codes[pos] == q
        out[hit] = self.global_counts[pos[hit]]
        return out

    def party_counts(self, i: int) -> tuple[Codes, NDArray[np.int64]]:
        """Exact counts (sorted unique codes, counts) of party ``i``."""
        codes, counts = np.unique(self.parties[i], return_counts=True)
        return codes, counts.astype(np.int64)

    def decode(self, codes: ArrayLike) -> list[Any]:
        """Codes back to items with the dataset's codec."""
        return list(self.codec.decode(codes))

    def evaluate(self, returned: ArrayLike, estimates: ArrayLike | None, k: int) -> Scores:
        """All §8 metrics of a returned set (see :func:`fedhh.metrics.evaluate`)."""
        return evaluate(returned, estimates, self.global_codes, self.global_counts, k)

    def describe(self, top: int = 5) -> str:
        """A short human-readable summary: sizes, distinct items, parameters, top items."""
        sizes = self.party_sizes
        lines = [
            f"{self.name}: {self.n_users:,} users in {self.n_parties} parties "
            f"(sizes {int(sizes.min()):,}..{int(sizes.max()):,}), m={self.m} bits, "
            f"{self.n_distinct:,} distinct items"
        ]
        if self.params:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        if top > 0 and self.n_distinct:
            codes = self.top_k(top)
            items = self.decode(codes)
            counts = self.count_of(codes)
            lines.append(
                "  top: "
                + ", ".join(f"{it!r} ({int(c):,})" for it, c in zip(items, counts, strict=True))
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Parameter checks and helpers
# ---------------------------------------------------------------------------------------------


def make_rng(rng: RngLike = None, seed: int | None = None) -> np.random.Generator:
    """A Generator from ``rng`` (a Generator or an int seed) or ``seed``; not both."""
    if seed is not None:
        if rng is not None:
            raise ParameterError("give rng or seed, not both")
        rng = seed
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or int(rng) < 0:
        raise ParameterError(
            f"rng must be a numpy Generator or a non-negative int seed, got {rng!r}"
        )
    return np.random.default_rng(int(rng))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    return float(value)


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


def zipf_pmf(n_items: int, s: float) -> NDArray[np.float64]:
    """Zipf(s) probabilities of ranks 1..n_items: p_r ∝ r^−s."""
    n_items = _check_int("n_items", n_items, 1)
    s = _check_s(s)
    p = np.arange(1, n_items + 1, dtype=np.float64) ** -s
    return p / p.sum()


def zipf_labels(n_items: int, m: int, rng: RngLike = None) -> Codes:
    """``n_items`` distinct uniformly random m-bit labels, in random order (label i ↔ rank i+1).

    Raises ParameterError when 2^m < n_items. Dense cases (n_items > 2^m / 2) take a prefix of a
    random permutation of all 2^m codes; sparse ones draw, drop repeats and redraw the shortfall.
    """
    n_items = _check_int("n_items", n_items, 1)
    m = check_bits(m)
    gen = make_rng(rng)
    space = 1 << m
    if space < n_items:
        raise ParameterError(f"only 2^{m} = {space} distinct {m}-bit labels, need {n_items}")
    if 2 * n_items > space:
        return gen.permutation(space)[:n_items].astype(np.uint64)
    hi = np.uint64(space - 1)
    out = np.zeros(0, dtype=np.uint64)
    while out.size < n_items:
        need = n_items - out.size
        draw = gen.integers(0, hi, size=need + need // 8 + 16, dtype=np.uint64, endpoint=True)
        allc = np.concatenate([out, draw])
        _, first = np.unique(allc, return_index=True)
        out = allc[np.sort(first)][:n_items]  # keep first occurrences, in draw order
    return out


def _rank_permutation(n: int, permute: float, rng: np.random.Generator) -> NDArray[np.int64]:
    """σ (1-based local ranks of global ranks 1..n): shuffle ⌊permute·n⌋ random ranks."""
    sigma = np.arange(1, n + 1, dtype=np.int64)
    n_sel = math.floor(permute * n)
    if n_sel >= 2:
        sel = rng.choice(n, size=n_sel, replace=False)
        sigma[sel] = sel[rng.permutation(n_sel)] + 1
    return sigma


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
    labels: Codes,
    counts: NDArray[np.int64],
    n_parties: int,
    split: str,
    alpha: float,
    weights: NDArray[np.float64],
    permute: float,
    s: float,
    rng: np.random.Generator,
) -> list[Codes]:
    """Split the users of distinct items ``labels`` (``counts`` users each) into parties."""
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
        sigma = _rank_permutation(labels.size, permute, rng)
        logw[:, i] = math.log(weights[i]) + s * (np.log(ranks) - np.log(sigma))
    logw -= logw.max(axis=1, keepdims=True)
    shares = np.exp(logw)
    shares /= shares.sum(axis=1, keepdims=True)
    mat = rng.multinomial(counts, shares)
    pieces = [[np.repeat(labels, mat[:, i])] for i in range(n_parties)]
    return _fill_empty(_shuffled(pieces, rng))


# ---------------------------------------------------------------------------------------------
# Synthetic data and partitioning
# ---------------------------------------------------------------------------------------------


def synthetic_zipf(
    n_users: int,
    n_parties: int,
    *,
    m: int = 32,
    n_items: int = 10_000,
    s: float = 1.1,
    split: str = "dirichlet",
    alpha: float = 0.5,
    sizes: Sizes = "equal",
    permute: float = 0.5,
    rng: RngLike = None,
    seed: int | None = None,
    name: str | None = None,
) -> FederatedDataset:
    """Zipf(s) users over ``n_items`` random distinct m-bit labels, split non-IID over parties.

    The item of rank r is ``zipf_labels(n_items, m)[r − 1]``. ``split``: "iid", "dirichlet"
    (Dirichlet(α) per item; α = inf is IID) or "permutation" (per-party Zipf over a party-specific
    permutation of a fraction ``permute`` of the ranks); ``sizes``: "equal", "skewed" or weights
    (see the module docstring for the exact rules). Vectorised: 10^7 users take about a second.
    Items are decoded with ``IntCodec(m)``.
    """
    n_users = _check_int("n_users", n_users, 1)
    n_parties = _check_int("n_parties", n_parties, 1)
    if n_users < n_parties:
        raise ParameterError(
            f"n_users={n_users} is fewer than n_parties={n_parties}: every party needs a user"
        )
    m = check_bits(m)
    n_items = _check_int("n_items", n_items, 1)
    s = _check_s(s)
    split, alpha, permute = _check_split(split, alpha, permute)
    weights = size_weights(n_parties, sizes)
    gen = make_rng(rng, seed)

    labels = zipf_labels(n_items, m, gen)
    p = zipf_pmf(n_items, s)
    if split == "permutation":
        target = apportion(n_users, weights)
        glob = np.zeros(n_items, dtype=np.int64)
        parties: list[Codes] = []
        for i in range(n_parties):
            sigma = _rank_permutation(n_items, permute, gen)
            c = gen.multinomial(int(target[i]), p[sigma - 1])
            glob += c
            arr = np.repeat(labels, c)
            gen.shuffle(arr)
            parties.append(arr)
        counts = glob
    else:
        counts = gen.multinomial(n_users, p).astype(np.int64)
        nz = counts > 0
        parties = _split_counts(
            labels[nz], counts[nz], n_parties, split, alpha, weights, permute, s, gen
        )
    nz = counts > 0
    order = np.argsort(labels[nz])
    params: dict[str, object] = {"n_items": n_items, "s": s, "split": split}
    if split == "dirichlet":
        params["alpha"] = alpha
    if split == "permutation":
        params["permute"] = permute
    params["sizes"] = sizes if isinstance(sizes, str) else "custom"
    return FederatedDataset(
        name=name or f"zipf(s={s:g})",
        m=m,
        parties=parties,
        codec=IntCodec(m),
        params=params,
        precomputed=(labels[nz][order], counts[nz][order]),
    )


def partition(
    codes: ArrayLike,
    n_parties: int,
    *,
    split: str = "dirichlet",
    alpha: float = 0.5,
    sizes: Sizes = "equal",
    permute: float = 0.5,
    s: float = 1.0,
    rng: RngLike = None,
    seed: int | None = None,
) -> list[Codes]:
    """Split a population (one code per user) into ``n_parties`` shuffled code arrays.

    The multiset of codes is preserved exactly. Rules as in the module docstring; ``s`` is the
    Zipf exponent of the "permutation" affinity (r / σ_i(r))^s.
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
    split, alpha, permute = _check_split(split, alpha, permute)
    s = _check_s(s)
    weights = size_weights(n_parties, sizes)
    gen = make_rng(rng, seed)
    labels, counts = np.unique(pop, return_counts=True)
    return _split_counts(
        labels, counts.astype(np.int64), n_parties, split, alpha, weights, permute, s, gen
    )


# ---------------------------------------------------------------------------------------------
# The AOL query log
# ---------------------------------------------------------------------------------------------


def _project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def find_data_file(name: str = AOL_FILE, path: StrPath | None = None) -> Path:
    """Locate a shared data file; raise DataError listing every place looked.

    ``path`` (a file, or a directory holding ``name``) wins if given. Otherwise, in order:
    ``$FEDHH_DATA_DIR/name``, ``<project root>/../shared/data/name``, ``./../shared/data/name``.
    """
    if path is not None:
        p = Path(path)
        cands = [p / name] if p.is_dir() else [p]
    else:
        cands = []
        env = os.environ.get("FEDHH_DATA_DIR")
        if env:
            cands.append(Path(env) / name)
        cands.append(_project_root().parent / "shared" / "data" / name)
        cands.append(Path.cwd().parent / "shared" / "data" / name)
    for c in cands:
        if c.is_file():
            return c
    looked = "\n  ".join(str(c) for c in cands)
    if path is None and not os.environ.get("FEDHH_DATA_DIR"):
        looked += "\n  ($FEDHH_DATA_DIR is not set)"
    raise DataError(
        f"data file {name} not found; looked in:\n  {looked}\n"
        "pass its path, or set FEDHH_DATA_DIR to the directory holding it"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _split_lines(data: bytes) -> list[bytes]:
    """Lines without their newline ("\\n" or "\\r\\n"); no empty last line after a final newline."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def read_value_counts(
    path: StrPath, width: int = AOL_WIDTH, *, strip_trailing_spaces: bool = False
) -> tuple[Codes, NDArray[np.int64]]:
    """Read a ``value<TAB>count`` file (gzip if ``.gz``) as bytes: (sorted unique codes, counts).

    Values are raw bytes (any encoding, possibly with spaces) of at most ``width`` bytes,
    zero-padded to ``width`` and encoded with ``StringCodec(width)``; the value is everything
    before the last tab. Repeated values add up; zero counts are dropped. With
    ``strip_trailing_spaces`` the values' trailing spaces (the AOL file pads short queries with
    spaces) are dropped before padding, so e.g. ``b"-     "`` decodes as ``"-"``.
    """
    p = Path(path)
    codec = StringCodec(width)
    lines = _split_lines(_read_bytes(p))
    if not lines:
        raise DataError(f"{p} is empty: expected lines value<TAB>count")
    values: list[bytes] = []
    counts = np.empty(len(lines), dtype=np.int64)
    for no, line in enumerate(lines, start=1):
        value, tab, count = line.rpartition(b"\t")
        if not tab:
            raise DataError(f"{p}, line {no}: expected value<TAB>count, got {line[:40]!r}")
        if strip_trailing_spaces:
            value = value.rstrip(b" ")
        if len(value) > width:
            raise DataError(f"{p}, line {no}: value {value!r} is longer than {width} bytes")
        if b"\0" in value:
            raise DataError(f"{p}, line {no}: value {value!r} holds a zero byte")
        cnt = count.strip()
        if not cnt.isdigit():
            raise DataError(f"{p}, line {no}: count must be a non-negative integer, got {count!r}")
        values.append(value.ljust(width, b"\0"))
        counts[no - 1] = int(cnt)
    codes = codec.encode_fixed(b"".join(values))
    uniq, inv = np.unique(codes, return_inverse=True)
    total = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(total, inv, counts)
    keep = total > 0
    return uniq[keep], total[keep]


def load_aol(
    path: StrPath | None = None,
    *,
    n_parties: int = 8,
    split: str = "dirichlet",
    alpha: float = 0.5,
    sizes: Sizes = "equal",
    permute: float = 0.5,
    rng: RngLike = None,
    seed: int | None = None,
    max_users: int | None = None,
    strip_trailing_spaces: bool = False,
) -> FederatedDataset:
    """The AOL query log (6-byte prefixes, m = 48), split into parties.

    ``path`` is the file (or its directory); by default it is found by :func:`find_data_file`
    (``$FEDHH_DATA_DIR``, then ``../shared/data/`` beside the project root, then beside the
    working directory). The full file has 657,427 users over 120,978 distinct values. Values are
    read as bytes (3 are not valid UTF-8: they decode with U+FFFD). ``max_users`` keeps a random
    subset of that many users (without replacement) for quick runs. The split rules are those of
    :func:`partition` (module docstring).
    """
    n_parties = _check_int("n_parties", n_parties, 1)
    split, alpha, permute = _check_split(split, alpha, permute)
    weights = size_weights(n_parties, sizes)
    if max_users is not None:
        max_users = _check_int("max_users", max_users, 1)
        if max_users < n_parties:
            raise ParameterError(
                f"max_users={max_users} is fewer than n_parties={n_parties}: "
                "every party needs a user"
            )
    gen = make_rng(rng, seed)
    file = find_data_file(AOL_FILE, path)
    codes, counts = read_value_counts(file, AOL_WIDTH, strip_trailing_spaces=strip_trailing_spaces)
    if max_users is not None and max_users < int(counts.sum()):
        counts = gen.multivariate_hypergeometric(counts, max_users, method="marginals")
        keep = counts > 0
        codes, counts = codes[keep], counts[keep].astype(np.int64)
    parties = _split_counts(codes, counts, n_parties, split, alpha, weights, permute, 1.0, gen)
    params: dict[str, object] = {"split": split}
    if split == "dirichlet":
        params["alpha"] = alpha
    if split == "permutation":
        params["permute"] = permute
    params["sizes"] = sizes if isinstance(sizes, str) else "custom"
    if max_users is not None:
        params["max_users"] = max_users
    return FederatedDataset(
        name="aol",
        m=8 * AOL_WIDTH,
        parties=parties,
        codec=StringCodec(AOL_WIDTH),
        params=params,
        precomputed=(codes, counts),
    )


# ---------------------------------------------------------------------------------------------
# User files: one file per party
# ---------------------------------------------------------------------------------------------


def _check_codec(codec: object) -> StringCodec | IntCodec:
    if not isinstance(codec, (StringCodec, IntCodec)):
        raise ParameterError(f"codec must be a StringCodec or an IntCodec, got {codec!r}")
    return codec


def _path_list(paths: StrPath | Iterable[StrPath]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        out = [Path(paths)]
    else:
        out = [Path(p) for p in paths]
    if not out:
        raise ParameterError("need at least one file (one per party)")
    return out


class _ItemEncoder:
    """Per-file item checks with file/line context, then one vectorised encode per file."""

    def __init__(self, codec: StringCodec | IntCodec, path: Path) -> None:
        self.codec = codec
        self.path = path
        self.items: list[object] = []

    def add(self, raw: bytes, no: int) -> None:
        if raw == b"":
            raise DataError(f"{self.path}, line {no}: empty item")
        if isinstance(self.codec, StringCodec):
            if b"\0" in raw:
                raise DataError(f"{self.path}, line {no}: item holds a zero byte")
            self.items.append(raw)
            return
        text = raw.strip()
        if not text.isdigit() or len(text) > 30:
            raise DataError(
                f"{self.path}, line {no}: expected a non-negative integer, got {raw[:40]!r}"
            )
        value = int(text)
        if value >> self.codec.m:
            raise DataError(
                f"{self.path}, line {no}: integer {value} does not fit in {self.codec.m} bits"
            )
        self.items.append(value)

    def codes(self) -> Codes:
        if not self.items:
            raise DataError(f"{self.path} holds no items")
        try:
            return self.codec.encode(self.items)
        except CodecError as exc:  # pragma: no cover - items are checked in add()
            raise DataError(f"{self.path}: {exc}") from None


def load_party_files(
    paths: StrPath | Iterable[StrPath],
    *,
    codec: StringCodec | IntCodec,
    name: str | None = None,
) -> FederatedDataset:
    """One file per party, one item per line (gzip if ``.gz``).

    Only the trailing newline (``\\n`` or ``\\r\\n``) is stripped. With a StringCodec lines are
    read as bytes (longer ones are truncated to the codec width, as the codec does); with an
    IntCodec each line is a non-negative integer (surrounding ASCII whitespace allowed) below
    2^m. An unreadable or empty file, an empty line, a zero byte or a bad integer raises
    DataError naming the file and line.
    """
    codec = _check_codec(codec)
    files = _path_list(paths)
    parties = []
    for path in files:
        enc = _ItemEncoder(codec, path)
        for no, line in enumerate(_split_lines(_read_bytes(path)), start=1):
            enc.add(line, no)
        parties.append(enc.codes())
    return FederatedDataset(
        name=name or "files",
        m=codec.m,
        parties=parties,
        codec=codec,
        params={"files": ", ".join(str(p) for p in files)},
    )


def load_csv_column(
    paths: StrPath | Iterable[StrPath],
    column: str | int,
    *,
    codec: StringCodec | IntCodec,
    header: bool = True,
    delimiter: str = ",",
    name: str | None = None,
) -> FederatedDataset:
    """One CSV file per party (UTF-8), the items in one column, chosen by name or 0-based index.

    With ``header`` the first row names the columns (and is skipped); without it ``column`` must
    be an index. Strings are UTF-8 encoded for a StringCodec; an IntCodec parses integers.
    A missing column, a short row, an empty cell or a bad integer raises DataError naming the file
    and line.
    """
    codec = _check_codec(codec)
    files = _path_list(paths)
    if isinstance(column, bool) or not isinstance(column, (str, int)):
        raise ParameterError(f"column must be a name or a 0-based index, got {column!r}")
    if isinstance(column, str) and not header:
        raise ParameterError("a column given by name needs header=True")
    if isinstance(column, int) and column < 0:
        raise ParameterError(f"column index must be non-negative, got {column}")
    parties = []
    for path in files:
        enc = _ItemEncoder(codec, path)
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh, delimiter=delimiter)
                col = column
                if header:
                    head = next(reader, None)
                    if head is None:
                        raise DataError(f"{path} is empty (no header row)")
                    if isinstance(column, str):
                        if column not in head:
                            raise DataError(f"{path}: no column {column!r} in header {head}")
                        col = head.index(column)
                assert isinstance(col, int)
                for row in reader:
                    if not row:
                        continue  # blank line
                    if col >= len(row):
                        raise DataError(
                            f"{path}, line {reader.line_num}: row has {len(row)} fields, "
                            f"no column {column!r}"
                        )
                    enc.add(row[col].encode("utf-8"), reader.line_num)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        parties.append(enc.codes())
    return FederatedDataset(
        name=name or "csv",
        m=codec.m,
        parties=parties,
        codec=codec,
        params={"files": ", ".join(str(p) for p in files), "column": column},
    )
