"""Optimised unary encoding (OUE).

A user holding v ∈ C ∪ {⊥} (values outside C map to ⊥) sends a bit vector of length d = |C| + 1:
the bit of v is 1 with probability p = ½, every other bit is 1 with probability q. Here q is
q̃ = ⌈2³²/(e^ε+1)⌉ / 2³² (the uint32 threshold the sampler uses, never below 1/(e^ε+1)), so
ε-LDP holds exactly: P[B|x]/P[B|x'] ≤ p(1−q̃)/(q̃(1−p)) = (1−q̃)/q̃ ≤ e^ε, and the debiasing
uses q̃, so estimates are exactly unbiased. Var* = n·q̃(1−q̃)/(½−q̃)² ≈ 4n·e^ε/(e^ε−1)².
Reports are bit-packed (⌈d/8⌉ bytes per user).
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

_BLOCK_ELEMENTS = 1 << 22  # users × bits handled per block (bounded memory)


@dataclass(frozen=True)
class OUE(FrequencyOracle):
    """Optimised unary encoding over C ∪ {⊥}; reports are packed bits, one row per user."""

    epsilon: float
    name: ClassVar[str] = "oue"

    @property
    def threshold(self) -> int:
        """The uint32 threshold T: a zero bit flips to 1 when a uniform uint32 is < T."""
        return math.ceil(2.0**32 / (math.exp(self.epsilon) + 1.0))

    def probabilities(self, domain_size: int) -> tuple[float, float]:
        return 0.5, self.threshold / 2.0**32

    def variation_ratio(self, domain_size: int) -> VariationRatio:
        """Two inputs' reports differ only in their two bits: (1, 0) has probability
        ½(1 − q̃) for one and ½q̃ for the other, so β = ½ − q̃ for every pair; the rest is
        the generic profile of an ε-LDP randomizer."""
        return VariationRatio.generic(self.epsilon, 0.5 - self.probabilities(domain_size)[1])

    def perturb(
        self, values: ArrayLike, rng: np.random.Generator, candidates: ArrayLike | None = None
    ) -> Reports:
        d, truth = value_symbols(values, candidates)
        n_bytes = (d + 7) // 8
        out = np.empty((truth.size, n_bytes), dtype=np.uint8)
        thr = np.uint32(self.threshold)
        block = max(1, _BLOCK_ELEMENTS // d)
        for lo in range(0, truth.size, block):
            hi = min(lo + block, truth.size)
            bits = rng.integers(0, 1 << 32, size=(hi - lo, d), dtype=np.uint32) < thr
            rows = np.arange(hi - lo)
            bits[rows, truth[lo:hi]] = rng.integers(0, 2, size=hi - lo, dtype=np.uint8) == 1
            out[lo:hi] = np.packbits(bits, axis=1)
        return Reports(self.name, d, {"bits": out})

    def decode_evaluations(self, n_reports: int, n_candidates: int) -> int:
        """n·(|C| + 1): every bit of every report is summed."""
        return int(n_reports) * (int(n_candidates) + 1)

    def support(self, reports: Reports, candidates: ArrayLike) -> Support:
        cand = as_candidates(candidates)
        d = cand.size + 1
        self.check_reports(reports, d)
        packed = reports["bits"]
        counts = np.zeros(d, dtype=np.int64)
        block = max(1, _BLOCK_ELEMENTS // d)
        for lo in range(0, packed.shape[0], block):
            bits = np.unpackbits(packed[lo : lo + block], axis=1, count=d)
            counts += bits.sum(axis=0, dtype=np.int64)
        return Support(reports.n, counts[: cand.size])

    def report_layout(self, n_candidates: int) -> ReportLayout:
        """⌈d/8⌉ bytes of packed bits, d = |C| + 1 (any byte values: the bits past d are
        ignored)."""
        d = int(n_candidates) + 1
        return ReportLayout(self.name, d, {"bits": ReportField("uint8", ((d + 7) // 8,))})

    def output_probability(
        self, reports: Reports, values: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Π over the d bits of P[bit]: ½ for the value's own bit, q̃ / 1 − q̃ for the others'
        ones / zeros."""
        d, truth = value_symbols(values, candidates)
        self.check_reports(reports, d)
        p, q = self.probabilities(d)
        bits = np.unpackbits(reports["bits"], axis=1, count=d)[None, :, :] == 1
        ones = np.where(np.arange(d)[None, :] == truth[:, None], p, q)[:, None, :]
        return np.prod(np.where(bits, ones, 1.0 - ones), axis=2)
