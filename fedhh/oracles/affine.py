"""Affine-hash OLH ("olh-affine"): local hashing with a GF(2)-affine hash, decoded by a
Walsh–Hadamard transform so that a level of millions of candidates decodes in O(n) per prefix.

User side. Each user draws a 64-bit seed; it expands (SplitMix64) into t rows a_1..a_t of 64
bits (the t×64 bit matrix A) and a t-bit offset b. The user hashes their 64-bit key v to
h(v) = A·v ⊕ b ∈ {0,1}^t (bit j: the parity of a_j ∧ v, ⊕ b_j), one of g = 2^t buckets, and
reports (seed, GRR over [g] of h(v)): the bucket stays with probability p = e^ε/(e^ε + g − 1)
and moves to each other bucket with probability (1 − p)/(g − 1).

ε-LDP: for every seed the report's bucket is GRR over g buckets, so
P[y | v]/P[y | v'] ≤ p/((1 − p)/(g − 1)) = e^ε; the seed is drawn whatever the value.

Variance. For v ≠ v', h(v) ⊕ h(v') = A·(v ⊕ v') is uniform over {0,1}^t when A is uniform (a
non-zero vector times a uniform matrix), so the family is pairwise independent and a report
supports a value the user does not hold with probability q = 1/g exactly (plain OLH's
interval buckets give 1/g only up to rounding). Hence, as for every oracle here,

    Var[ĉ(v)] = (c·p(1 − p) + (n − c)·q(1 − q)) / (p − q)²,
    Var* (c = 0) = n·(e^ε + g − 1)² / ((e^ε − 1)²·(g − 1)),

the same as plain OLH with that g. g is a power of two here: the one minimising Var*
(:func:`optimal_affine_g`; g = 8 at ε = 2, as plain OLH's round(e^ε) + 1).

Server side (:mod:`fedhh.oracles.affine_decode`). A prefix search's level estimates candidates
P × {0,1}^s; for such blocks the support is 2^−t·WHT(H_p) of a signed histogram of n·g entries
per prefix, O(|P|·(n·g + s·2^s)) instead of plain OLH's n·|P|·2^s hash tests; any other
candidates are tested directly (the same counts). Users need no candidate set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core.variation import VariationRatio
from fedhh.errors import ParameterError
from fedhh.oracles.affine_decode import parity_hash, support_counts
from fedhh.oracles.base import (
    FrequencyOracle,
    ReportLayout,
    Reports,
    Support,
    as_candidates,
    as_values,
    check_count,
)
from fedhh.oracles.grr import randomised_response
from fedhh.oracles.hashing import splitmix64
from fedhh.oracles.olh import seed_bucket_layout

MAX_ROWS = 31  # g ≤ 2^31, as plain OLH's MAX_G
_ROW_SALTS = splitmix64(np.arange(MAX_ROWS, dtype=np.uint64) + np.uint64(0xA5F1_52C3_0B7D_E911))
_OFFSET_SALT = np.uint64(0x3C6E_F372_FE94_F82B)


def affine_variance_per_user(epsilon: float, g: int) -> float:
    """Var*/n = (e^ε + g − 1)²/((e^ε − 1)²·(g − 1)) for g buckets (q = 1/g)."""
    e = math.exp(epsilon)
    return (e + g - 1) ** 2 / ((e - 1) ** 2 * (g - 1))


def optimal_affine_g(epsilon: float) -> int:
    """The power of two g = 2^t (1 ≤ t ≤ 31) with the smallest Var* (ties: the smaller g)."""
    return min(
        (1 << t for t in range(1, MAX_ROWS + 1)), key=lambda g: affine_variance_per_user(epsilon, g)
    )


def hash_rows(seeds: NDArray[np.uint64], t: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """The public hash of each seed: its t rows (a t×n array, row j of user u at [j, u]) and
    its t-bit offsets b (n values)."""
    s = np.asarray(seeds, dtype=np.uint64)
    rows = splitmix64(s[None, :] ^ _ROW_SALTS[:t, None])
    offsets = splitmix64(s ^ _OFFSET_SALT) & np.uint64((1 << t) - 1)
    return rows, offsets


@dataclass(frozen=True)
class OLHAffine(FrequencyOracle):
    """OLH with a GF(2)-affine hash into g = 2^t buckets; reports are (seed, bucket).

    ``g`` defaults to :func:`optimal_affine_g` (a given g must be a power of two);
    ``threads`` bounds the decode threads (default: all cores).
    """

    epsilon: float
    g: int = 0
    threads: int | None = None
    name: ClassVar[str] = "olh-affine"
    needs_candidates: ClassVar[bool] = False
    parameter_names: ClassVar[tuple[str, ...]] = ("g",)

    def __post_init__(self) -> None:
        super().__post_init__()
        g = optimal_affine_g(self.epsilon) if self.g == 0 else check_count("g", self.g, 2)
        if g & (g - 1) or g > 1 << MAX_ROWS:
            raise ParameterError(f"olh-affine's g must be a power of two ≤ 2^{MAX_ROWS}, got {g}")
        object.__setattr__(self, "g", g)

    @property
    def rows(self) -> int:
        """t = log2 g: the rows of a user's hash matrix."""
        return self.g.bit_length() - 1

    @property
    def keep_probability(self) -> float:
        return self.probabilities()[0]

    def probabilities(self, domain_size: int = 0) -> tuple[float, float]:
        """(p, q) = (e^ε/(e^ε + g − 1), 1/g), whatever the domain."""
        e = math.exp(self.epsilon)
        return e / (e + self.g - 1), 1.0 / self.g

    def _hash(self, seeds: NDArray[np.uint64], values: NDArray[np.uint64]) -> NDArray[np.uint64]:
        """h_seed(v) = A·v ⊕ b for each seed (last axis) and value (broadcast against it)."""
        rows, offsets = hash_rows(seeds, self.rows)
        return parity_hash(rows, values) ^ offsets

    def perturb(
        self, values: ArrayLike, rng: np.random.Generator, candidates: ArrayLike | None = None
    ) -> Reports:
        vals = as_values(values)
        seeds = rng.integers(0, 2**64, size=vals.size, dtype=np.uint64, endpoint=False)
        y = randomised_response(self._hash(seeds, vals), self.g, self.keep_probability, rng)
        return Reports(self.name, self.g, {"seed": seeds, "bucket": y})

    def variation_ratio(self, domain_size: int = 0) -> VariationRatio:
        """Two inputs' reports are the same where the seed hashes them to one bucket
        (probability exactly 1/g: A·(v ⊕ v') is uniform) and differ as GRR over g buckets
        elsewhere, so β = (1 − 1/g)·(e^ε − 1)/(e^ε + g − 1); the rest is the generic profile of
        an ε-LDP randomizer."""
        e = math.exp(self.epsilon)
        return VariationRatio.generic(self.epsilon, (1 - 1 / self.g) * (e - 1) / (e + self.g - 1))

    def decode_evaluations(self, n_reports: int, n_candidates: int) -> int:
        """n·|C| hash evaluations: the bound of the direct route (every report's hash of every
        candidate). A level's blocks P × {0,1}^s decode through the transform in far fewer
        steps, n·(g + t) + s·2^s a block (docs/mechanisms.md §2)."""
        return int(n_reports) * int(n_candidates)

    def support(self, reports: Reports, candidates: ArrayLike) -> Support:
        cand = as_candidates(candidates)
        self.check_reports(reports, self.g)
        rows, offsets = hash_rows(reports["seed"], self.rows)
        z = reports["bucket"].astype(np.uint64) ^ offsets
        return Support(reports.n, support_counts(rows, z, cand, self.threads))

    def report_layout(self, n_candidates: int) -> ReportLayout:
        """A uint64 seed (any) and a uint32 bucket below g, whatever the candidates."""
        return seed_bucket_layout(self.name, self.g)

    def output_probability(
        self, reports: Reports, values: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """2⁻⁶⁴ (the seed, drawn whatever the value) × P[bucket | seed, value]: p where the
        bucket is the value's hash, (1 − p)/(g − 1) elsewhere."""
        self.check_reports(reports, self.g)
        vals = as_values(values)
        h = self._hash(reports["seed"], vals[:, None])
        p = self.keep_probability
        hit = h == reports["bucket"].astype(np.uint64)[None, :]
        return np.where(hit, p, (1.0 - p) / (self.g - 1)) * 2.0**-64

    def describe(self) -> str:
        return f"olh-affine(ε={self.epsilon:g}, g={self.g})"
