"""Generalised randomised response (GRR, a.k.a. direct encoding / k-RR).

A user holding v ∈ C ∪ {⊥} (values outside the candidate set C map to ⊥) reports v with
probability p = e^ε/(e^ε+d−1) and each other symbol with probability q = 1/(e^ε+d−1), where
d = |C| + 1. ε-LDP: P[y|x]/P[y|x'] ≤ p/q = e^ε. Variance of a count (c = 0):
Var* = n·(e^ε+d−2)/(e^ε−1)². Best for small domains (d < 3e^ε + 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core.variation import VariationRatio
from fedhh.oracles.base import (
    FrequencyOracle,
    ReportField,
    ReportLayout,
    Reports,
    Support,
    as_candidates,
    value_symbols,
)


def randomised_response(
    truth: NDArray[np.integer], d: int, p: float, rng: np.random.Generator
) -> NDArray[np.uint32]:
    """GRR over the symbols 0..d−1: each true symbol stays with probability p, else becomes a
    uniform *other* symbol (drawn from d−1 symbols, skipping over the true one)."""
    keep = rng.random(truth.size) < p
    other = rng.integers(0, d - 1, size=truth.size, dtype=np.int64)
    truth = truth.astype(np.int64)
    other += other >= truth
    return np.where(keep, truth, other).astype(np.uint32)


@dataclass(frozen=True)
class GRR(FrequencyOracle):
    """Generalised randomised response over C ∪ {⊥}; reports are uint32 symbol indices."""

    epsilon: float
    name: ClassVar[str] = "grr"

    def probabilities(self, domain_size: int) -> tuple[float, float]:
        e = math.exp(self.epsilon)
        return e / (e + domain_size - 1), 1.0 / (e + domain_size - 1)

    def variation_ratio(self, domain_size: int) -> VariationRatio:
        """Any two inputs' reports differ by β = (e^ε − 1)/(e^ε + d − 1) in total variation
        (their own two symbols); every user, whatever its input, sends each symbol with
        probability at least 1/(e^ε + d − 1), so its report is a sample of the two inputs'
        common part (uniform over the other d − 2 symbols) with probability γ = (d − 2)/
        (e^ε + d − 1), all of that part's weight, not only γ/e^ε."""
        e, d = math.exp(self.epsilon), int(domain_size)
        return VariationRatio(e, (e - 1) / (e + d - 1), e, (d - 2) / (e + d - 1))

    def perturb(
        self, values: ArrayLike, rng: np.random.Generator, candidates: ArrayLike | None = None
    ) -> Reports:
        d, truth = value_symbols(values, candidates)
        out = randomised_response(truth, d, self.probabilities(d)[0], rng)
        return Reports(self.name, d, {"symbol": out})

    def support(self, reports: Reports, candidates: ArrayLike) -> Support:
        cand = as_candidates(candidates)
        self.check_reports(reports, cand.size + 1)
        counts = np.bincount(reports["symbol"], minlength=cand.size + 1)[: cand.size]
        return Support(reports.n, counts.astype(np.int64))

    def report_layout(self, n_candidates: int) -> ReportLayout:
        """One uint32 symbol below d = |C| + 1 (the last one is ⊥)."""
        d = int(n_candidates) + 1
        return ReportLayout(self.name, d, {"symbol": ReportField("uint32", (), d)})

    def output_probability(
        self, reports: Reports, values: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """p where the report's symbol is the value's (⊥ outside C), q elsewhere."""
        d, truth = value_symbols(values, candidates)
        self.check_reports(reports, d)
        p, q = self.probabilities(d)
        same = reports["symbol"][None, :].astype(np.int64) == truth[:, None]
        return np.where(same, p, q)
