"""Optimised local hashing (OLH) and its seed-pool variant.

Plain OLH: each user draws a 64-bit seed (keys of the strongly universal family of
:mod:`fedhh.oracles.hashing`), hashes their value to H(v) ∈ [g] with g = round(e^ε) + 1 and
reports (seed, GRR over [g] of H(v)): the bucket stays with probability p = e^ε/(e^ε+g−1) and
moves to each other bucket with probability 1/(e^ε+g−1). ε-LDP: for every seed,
P[y|x]/P[y|x'] ≤ e^ε. A report supports v when its bucket equals H_seed(v): p for the user's own
value, q = Σ_y(|I_y|/2^32)² ≈ 1/g for any other value. Var* = n·q(1−q)/(p−q)² ≈ 4n·e^ε/(e^ε−1)².
Users need no candidate set. Decoding costs n·|C| hash evaluations (vectorised, threaded).

Seed-pool OLH [choice]: users draw their seed from a public pool of S seeds, so the server's
sufficient statistic is an S×g count matrix that merges by addition and decodes in O(n + S·|C|).
Same ε-LDP guarantee and the same mean; users sharing a seed and a value have correlated
collisions, which adds (p−q')²·q(1−q)·Σ_{x≠v} n_x(n_x−1)/S to the support variance
(q' = 1/(e^ε+g−1)); see :meth:`OLHPool.variance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core.variation import VariationRatio
from fedhh.errors import ParameterError, ReportError
from fedhh.oracles.base import (
    FrequencyOracle,
    ReportField,
    ReportLayout,
    Reports,
    Support,
    Tally,
    as_candidates,
    as_count,
    as_values,
    check_count,
)
from fedhh.oracles.grr import randomised_response
from fedhh.oracles.hashing import (
    HashKeys,
    bucket_of,
    collision_probability,
    count_matches,
    hash32,
    pool_support,
    splitmix64,
)

MAX_G = 1 << 31


def optimal_g(epsilon: float) -> int:
    """OLH's hash range g = round(e^ε) + 1 (capped at 2^31)."""
    return int(min(round(math.exp(epsilon)) + 1, MAX_G))


class _LocalHashing(FrequencyOracle):
    """What plain and seed-pool OLH share: the hash range g and the GRR over buckets."""

    needs_candidates: ClassVar[bool] = False
    g: int

    def __post_init__(self) -> None:
        super().__post_init__()
        g = optimal_g(self.epsilon) if self.g == 0 else check_count("g", self.g, 2)
        if g > MAX_G:
            raise ParameterError(f"g must be at most {MAX_G}, got {g}")
        object.__setattr__(self, "g", g)

    def probabilities(self, domain_size: int = 0) -> tuple[float, float]:
        e = math.exp(self.epsilon)
        return e / (e + self.g - 1), collision_probability(self.g)

    @property
    def keep_probability(self) -> float:
        return self.probabilities()[0]

    def _bucket_probability(
        self, keys: HashKeys, buckets: NDArray[np.integer], values: ArrayLike
    ) -> NDArray[np.float64]:
        """P[bucket | the report's hash key, value] for every value (rows) and report (columns):
        p where the bucket is the value's hash, (1 − p)/(g − 1) elsewhere."""
        vals = as_values(values)
        h = bucket_of(hash32(keys, vals[:, None]), self.g)
        p = self.keep_probability
        return np.where(h == buckets[None, :].astype(np.uint64), p, (1.0 - p) / (self.g - 1))


def seed_bucket_layout(name: str, g: int) -> ReportLayout:
    """The report of a hash with a fresh 64-bit seed per user (OLH, olh-affine): the seed
    (uint64, any value) and the perturbed bucket (uint32, below g)."""
    fields = {"seed": ReportField("uint64"), "bucket": ReportField("uint32", (), g)}
    return ReportLayout(name, g, fields)


@dataclass(frozen=True)
class OLH(_LocalHashing):
    """Optimised local hashing with a fresh 64-bit seed per user; reports are (seed, bucket).

    ``g`` defaults to round(e^ε) + 1; ``threads`` bounds the decode threads (default: all cores).
    """

    epsilon: float
    g: int = 0
    threads: int | None = None
    name: ClassVar[str] = "olh"
    parameter_names: ClassVar[tuple[str, ...]] = ("g",)

    def perturb(
        self, values: ArrayLike, rng: np.random.Generator, candidates: ArrayLike | None = None
    ) -> Reports:
        vals = as_values(values)
        seeds = rng.integers(0, 2**64, size=vals.size, dtype=np.uint64, endpoint=False)
        h = bucket_of(hash32(HashKeys.from_seeds(seeds), vals), self.g)
        y = randomised_response(h, self.g, self.keep_probability, rng)
        return Reports(self.name, self.g, {"seed": seeds, "bucket": y})

    def variation_ratio(self, domain_size: int = 0) -> VariationRatio:
        """Two inputs' reports are the same where the seed hashes them to one bucket
        (probability π = Σ_y(|I_y|/2^32)², the same for every pair: the family is strongly
        universal) and differ as GRR over g buckets elsewhere, so β = (1 − π)·(e^ε − 1)/
        (e^ε + g − 1); the rest is the generic profile of an ε-LDP randomizer."""
        e = math.exp(self.epsilon)
        beta = (1 - collision_probability(self.g)) * (e - 1) / (e + self.g - 1)
        return VariationRatio.generic(self.epsilon, beta)

    def decode_evaluations(self, n_reports: int, n_candidates: int) -> int:
        """n·|C| hash evaluations: every report's hash of every candidate."""
        return int(n_reports) * int(n_candidates)

    def support(self, reports: Reports, candidates: ArrayLike) -> Support:
        cand = as_candidates(candidates)
        self.check_reports(reports, self.g)
        keys = HashKeys.from_seeds(reports["seed"])
        counts = count_matches(keys, reports["bucket"], self.g, cand, self.threads)
        return Support(reports.n, counts)

    def report_layout(self, n_candidates: int) -> ReportLayout:
        """A uint64 seed (any) and a uint32 bucket below g, whatever the candidates."""
        return seed_bucket_layout(self.name, self.g)

    def output_probability(
        self, reports: Reports, values: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """2⁻⁶⁴ (the seed, drawn whatever the value) × P[bucket | seed, value]."""
        self.check_reports(reports, self.g)
        keys = HashKeys.from_seeds(reports["seed"])
        return self._bucket_probability(keys, reports["bucket"], values) * 2.0**-64

    def describe(self) -> str:
        return f"olh(ε={self.epsilon:g}, g={self.g})"


@dataclass(frozen=True, eq=False)
class PoolSketch:
    """Seed-pool OLH server state: n reports and the S×g matrix of (seed index, bucket) counts."""

    n: int
    matrix: NDArray[np.int64]

    def __add__(self, other: PoolSketch) -> PoolSketch:
        if self.matrix.shape != other.matrix.shape:
            raise ReportError(
                f"cannot merge pool sketches of shapes {self.matrix.shape} and {other.matrix.shape}"
            )
        return PoolSketch(self.n + other.n, self.matrix + other.matrix)


@dataclass(frozen=True)
class OLHPool(_LocalHashing):
    """Seed-pool OLH [choice]: seeds come from a public pool of ``pool_size`` seeds.

    The pool is derived from ``pool_seed`` (public, per run). Reports are (seed index, bucket).
    """

    epsilon: float
    pool_size: int = 4096
    pool_seed: int = 0
    g: int = 0
    threads: int | None = None
    name: ClassVar[str] = "olh-pool"
    parameter_names: ClassVar[tuple[str, ...]] = ("pool_size", "pool_seed", "g")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("pool_size", self.pool_size, 1)
        if self.pool_size > 1 << 24:
            raise ParameterError(f"pool_size must be at most 2^24, got {self.pool_size}")
        check_count("pool_seed", self.pool_seed, 0)

    @property
    def pool_keys(self) -> HashKeys:
        """The public pool: keys of seeds splitmix64(pool_seed ⊕ index), index = 0..S−1."""
        base = splitmix64(np.array([self.pool_seed % 2**64], dtype=np.uint64))[0]
        return HashKeys.from_seeds(np.arange(self.pool_size, dtype=np.uint64) ^ base)

    @overload
    def variance(
        self, n: int, domain_size: int, true_count: float = 0.0, collision_mass: float = 0.0
    ) -> float: ...
    @overload
    def variance(
        self,
        n: int,
        domain_size: int,
        true_count: NDArray[np.float64],
        collision_mass: float = 0.0,
    ) -> NDArray[np.float64]: ...
    def variance(
        self,
        n: int,
        domain_size: int,
        true_count: float | NDArray[np.float64] = 0.0,
        collision_mass: float = 0.0,
    ) -> float | NDArray[np.float64]:
        """Variance of a debiased count (elementwise over an array of true counts).
        ``collision_mass`` = Σ_{x≠v} n_x(n_x−1) over the other values' counts n_x (0 gives
        plain OLH's variance, the limit S → ∞):

            [c·p(1−p) + (n−c)·q(1−q) + (p−q')²·q(1−q)·collision_mass/S] / (p−q)².
        """
        p, q = self.probabilities()
        q_other = (1.0 - p) / (self.g - 1)
        c = as_count(true_count)
        extra = (p - q_other) ** 2 * q * (1 - q) * float(collision_mass) / self.pool_size
        return (c * p * (1 - p) + (n - c) * q * (1 - q) + extra) / (p - q) ** 2

    def perturb(
        self, values: ArrayLike, rng: np.random.Generator, candidates: ArrayLike | None = None
    ) -> Reports:
        vals = as_values(values)
        idx = rng.integers(0, self.pool_size, size=vals.size, dtype=np.uint32)
        h = bucket_of(hash32(self.pool_keys.take(idx), vals), self.g)
        y = randomised_response(h, self.g, self.keep_probability, rng)
        return Reports(self.name, self.g, {"seed_index": idx, "bucket": y})

    def decode_evaluations(self, n_reports: int, n_candidates: int) -> int:
        """S·|C| hash evaluations, whatever n: every pool seed's hash of every candidate (the
        sketch's O(n) counting is not included). With the compiled kernel one such evaluation
        costs a few plain-OLH ones (it ends in a table look-up), see docs/performance.md."""
        return self.pool_size * int(n_candidates)

    def report_layout(self, n_candidates: int) -> ReportLayout:
        """A uint32 seed index below S and a uint32 bucket below g, whatever the candidates."""
        fields = {
            "seed_index": ReportField("uint32", (), self.pool_size),
            "bucket": ReportField("uint32", (), self.g),
        }
        return ReportLayout(self.name, self.g, fields)

    def output_probability(
        self, reports: Reports, values: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """1/S (the seed index, drawn whatever the value) × P[bucket | pool seed, value]."""
        idx = self._seed_indices(reports)
        probs = self._bucket_probability(self.pool_keys.take(idx), reports["bucket"], values)
        return probs / self.pool_size

    def _seed_indices(self, reports: Reports) -> NDArray[np.int64]:
        self.check_reports(reports, self.g)
        idx = reports["seed_index"].astype(np.int64)
        if idx.size and int(idx.max()) >= self.pool_size:
            raise ReportError(f"seed index {int(idx.max())} outside the pool of {self.pool_size}")
        return idx

    def sketch(self, reports: Reports) -> PoolSketch:
        """The mergeable S×g count matrix of a report batch (O(n))."""
        idx = self._seed_indices(reports)
        flat = idx * self.g + reports["bucket"].astype(np.int64)
        counts = np.bincount(flat, minlength=self.pool_size * self.g)  # S·g can be 10^7: no copy
        return PoolSketch(
            reports.n, counts.reshape(self.pool_size, self.g).astype(np.int64, copy=False)
        )

    def support_from_sketch(self, sketch: PoolSketch, candidates: ArrayLike) -> Support:
        """Support counts Σ_s M[s, H_s(v)] for each candidate v (O(S·|C|), in blocks)."""
        cand = as_candidates(candidates)
        if sketch.matrix.shape != (self.pool_size, self.g):
            raise ReportError(
                f"pool sketch of shape {sketch.matrix.shape} does not fit pool "
                f"{self.pool_size}×{self.g}"
            )
        counts = pool_support(self.pool_keys, sketch.matrix, self.g, cand, self.threads)
        return Support(sketch.n, counts)

    def support(self, reports: Reports, candidates: ArrayLike) -> Support:
        return self.support_from_sketch(self.sketch(reports), candidates)

    def tally(self, reports: Reports, candidates: ArrayLike) -> Tally:
        """The pool's S×g count matrix (O(n), whatever the candidates): decoded once."""
        sketch = self.sketch(reports)
        return Tally(sketch.n, sketch.matrix, reports.nbytes())

    def tally_support(self, tally: Tally, candidates: ArrayLike) -> Support:
        return self.support_from_sketch(PoolSketch(tally.n, tally.state), candidates)

    def describe(self) -> str:
        return f"olh-pool(ε={self.epsilon:g}, g={self.g}, S={self.pool_size})"
