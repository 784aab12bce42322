"""Every registered oracle inherits the contract of tests/oracle_contract.py (one subclass each),
plus what is particular to it, the registry and the ``auto`` choice."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_contract import (
    CANDIDATES,
    CandidateFreeContract,
    OracleContract,
    assert_frequencies,
    values_of,
)

from fedhh.errors import ParameterError, ReportError
from fedhh.oracles import (
    GRR,
    OLH,
    ORACLES,
    OUE,
    FrequencyOracle,
    OLHAffine,
    OLHPool,
    Reports,
    choose_oracle,
    make_oracle,
)
from fedhh.oracles.affine import hash_rows
from fedhh.oracles.affine_decode import parity_hash
from fedhh.oracles.hashing import HashKeys, bucket_of, hash32


class TestGRR(OracleContract):
    make = staticmethod(GRR)

    def test_report_domain_must_match(self) -> None:
        rep = GRR(1.0).perturb(np.array([5], dtype=np.uint64), np.random.default_rng(0), [5, 6])
        with pytest.raises(ReportError, match="domain"):
            GRR(1.0).support(rep, CANDIDATES)


class TestOUE(OracleContract):
    make = staticmethod(OUE)

    def output_space(self, o: FrequencyOracle, candidates: np.ndarray) -> tuple[Reports, float]:
        """Every bit vector of d = |C| + 1 bits, packed as perturb packs them."""
        d = candidates.size + 1
        bits = np.array(list(itertools.product([0, 1], repeat=d)), dtype=np.uint8)
        return Reports(o.name, d, {"bits": np.packbits(bits, axis=1)}), 1.0

    def test_reports_are_bit_packed(self) -> None:
        rep = OUE(1.0).perturb(np.arange(10, dtype=np.uint64), np.random.default_rng(0), CANDIDATES)
        assert rep["bits"].dtype == np.uint8 and rep["bits"].shape == (10, 1)

    def test_q_never_below_nominal(self) -> None:
        for eps in (0.1, 1.0, 4.0, 10.0):
            p, q = OUE(eps).probabilities(10)
            assert q >= 1 / (math.exp(eps) + 1) and (p * (1 - q)) / (q * (1 - p)) <= math.exp(eps)


class TestOLH(CandidateFreeContract):
    make = staticmethod(OLH)
    SEEDS = 500

    def output_space(self, o: FrequencyOracle, candidates: np.ndarray) -> tuple[Reports, float]:
        """Every bucket for each of 500 sampled seeds: the seed is drawn whatever the value
        (probability 2⁻⁶⁴ each), so the ratio bound over them is the bound for those seeds (and
        holds for every seed by construction: each factor is p or (1−p)/(g−1))."""
        assert isinstance(o, OLH)
        seeds = np.random.default_rng(11).integers(0, 2**64, size=self.SEEDS, dtype=np.uint64)
        arrays = {
            "seed": np.repeat(seeds, o.g),
            "bucket": np.tile(np.arange(o.g, dtype=np.uint32), self.SEEDS),
        }
        return Reports(o.name, o.g, arrays), self.SEEDS * 2.0**-64

    @pytest.mark.parametrize("eps", [1.0, 3.0])
    def test_sampler_draws_from_the_output_probability(self, eps: float) -> None:
        """Each report keeps its value's bucket with p and moves it uniformly otherwise: the
        probabilities it is sent with are p·2⁻⁶⁴ or (1−p)/(g−1)·2⁻⁶⁴, in those proportions."""
        o = OLH(eps)
        values = np.full(100_000, 2**47 + 12345, dtype=np.uint64)
        rep = o.perturb(values, np.random.default_rng(5))
        p = o.keep_probability
        probs = o.output_probability(rep, values[:1])[0] * 2.0**64
        kept = np.isclose(probs, p, rtol=1e-12)
        assert (kept | np.isclose(probs, (1 - p) / (o.g - 1), rtol=1e-12)).all()
        true_bucket = bucket_of(hash32(HashKeys.from_seeds(rep["seed"]), values), o.g)
        assert (kept == (rep["bucket"] == true_bucket)).all()
        shift = (rep["bucket"].astype(np.int64) - true_bucket.astype(np.int64)) % o.g
        spread = np.array([p] + [(1 - p) / (o.g - 1)] * (o.g - 1))
        assert_frequencies(np.bincount(shift, minlength=o.g), spread)

    def test_thread_count_does_not_change_result(self) -> None:
        rng = np.random.default_rng(0)
        vals = rng.integers(0, 2**45, size=30_000, dtype=np.uint64)
        cand = np.unique(np.concatenate([vals[:300], np.arange(50, dtype=np.uint64)]))
        rep = OLH(2.0).perturb(vals, rng)
        one = OLH(2.0, threads=1).support(rep, cand).counts
        two = OLH(2.0, threads=2).support(rep, cand).counts
        np.testing.assert_array_equal(one, two)


class TestOLHPool(CandidateFreeContract):
    make = staticmethod(OLHPool)

    def listed(self, epsilon: float) -> FrequencyOracle:
        return OLHPool(epsilon, pool_size=8, pool_seed=3)  # 8·g reports: each sampled often

    def test_sketch_merges_by_addition(self) -> None:
        o = OLHPool(2.0, pool_size=64)
        rng = np.random.default_rng(0)
        a = o.perturb(values_of(rng, 500), rng)
        b = o.perturb(values_of(rng, 400), rng)
        both = o.sketch(a.concat(b))
        merged = o.sketch(a) + o.sketch(b)
        np.testing.assert_array_equal(both.matrix, merged.matrix)
        assert merged.n == 900 and both.matrix.shape == (64, o.g)

    def test_sketch_support_equals_plain_decode_of_pool_seeds(self) -> None:
        """Decoding through the S×g sketch equals counting each report's bucket match."""
        o = OLHPool(1.5, pool_size=32, pool_seed=9)
        rng = np.random.default_rng(1)
        rep = o.perturb(values_of(rng, 2000), rng)
        keys = o.pool_keys.take(rep["seed_index"].astype(np.int64))
        direct = [
            int((bucket_of(hash32(keys, np.full(rep.n, c, np.uint64)), o.g) == rep["bucket"]).sum())
            for c in CANDIDATES
        ]
        np.testing.assert_array_equal(o.support(rep, CANDIDATES).counts, direct)


class TestOLHAffine(CandidateFreeContract):
    make = staticmethod(OLHAffine)
    SEEDS = 500

    def output_space(self, o: FrequencyOracle, candidates: np.ndarray) -> tuple[Reports, float]:
        """Every bucket for each of 500 sampled seeds, as for plain OLH (each seed has
        probability 2⁻⁶⁴ whatever the value)."""
        assert isinstance(o, OLHAffine)
        seeds = np.random.default_rng(12).integers(0, 2**64, size=self.SEEDS, dtype=np.uint64)
        arrays = {
            "seed": np.repeat(seeds, o.g),
            "bucket": np.tile(np.arange(o.g, dtype=np.uint32), self.SEEDS),
        }
        return Reports(o.name, o.g, arrays), self.SEEDS * 2.0**-64

    @pytest.mark.parametrize("eps", [1.0, 3.0])
    def test_sampler_draws_from_the_output_probability(self, eps: float) -> None:
        """The bucket is the value's affine hash with probability p, each other one with
        (1 − p)/(g − 1): the report's probabilities are those two, in those proportions."""
        o = OLHAffine(eps)
        values = np.full(100_000, 2**47 + 12345, dtype=np.uint64)
        rep = o.perturb(values, np.random.default_rng(5))
        p = o.keep_probability
        probs = o.output_probability(rep, values[:1])[0] * 2.0**64
        kept = np.isclose(probs, p, rtol=1e-12)
        assert (kept | np.isclose(probs, (1 - p) / (o.g - 1), rtol=1e-12)).all()
        rows, offsets = hash_rows(rep["seed"], o.rows)
        true_bucket = parity_hash(rows, values) ^ offsets
        assert (kept == (rep["bucket"] == true_bucket)).all()
        shift = rep["bucket"].astype(np.int64) ^ true_bucket.astype(np.int64)
        spread = np.array([p] + [(1 - p) / (o.g - 1)] * (o.g - 1))
        assert_frequencies(np.bincount(shift, minlength=o.g), spread)

    def test_g_is_the_least_variance_power_of_two(self) -> None:
        for eps in (0.5, 1.0, 2.0, 4.0, 8.0):
            o = OLHAffine(eps)
            assert o.g & (o.g - 1) == 0 and o.g == 1 << o.rows
            best = min(OLHAffine(eps, g=1 << t).variance(1, 2) for t in range(1, 20))
            assert o.variance(1, 2) == best
        assert OLHAffine(2.0).g == OLH(2.0).g == 8
        with pytest.raises(ParameterError, match="power of two"):
            OLHAffine(2.0, g=6)


def _contracts(cls: type) -> list[type]:
    return [c for s in cls.__subclasses__() for c in [s, *_contracts(s)]]


def test_every_registered_oracle_inherits_the_contract() -> None:
    tested = {c.make(1.0).name for c in _contracts(OracleContract) if c.__name__.startswith("Test")}
    assert tested == set(ORACLES)


def test_auto_picks_grr_for_small_domains_and_olh_for_large() -> None:
    eps = 2.0
    threshold = 3 * math.exp(eps) + 2
    assert isinstance(choose_oracle(eps, int(threshold) - 2), GRR)
    assert isinstance(choose_oracle(eps, int(threshold) + 3), OLH)
    for d in (2, 10, 30, 1000):
        best = choose_oracle(eps, d)
        assert best.variance(1, d) <= 1.01 * min(
            o.variance(1, d) for o in (GRR(eps), OUE(eps), OLH(eps))
        )


def test_make_oracle() -> None:
    assert make_oracle("olh-pool", 1.0, pool_size=8) == OLHPool(1.0, pool_size=8)
    with pytest.raises(ParameterError, match="unknown oracle"):
        make_oracle("rappor", 1.0)


@given(
    eps=st.one_of(st.floats(max_value=0.0), st.just(float("nan")), st.just(float("inf"))),
    factory=st.sampled_from(list(ORACLES.values())),
)
@settings(max_examples=60, deadline=None)
def test_bad_epsilon(eps: float, factory: type[FrequencyOracle]) -> None:
    with pytest.raises(ParameterError, match="epsilon"):
        factory(eps)  # type: ignore[call-arg]


def test_decode_evaluations() -> None:
    """The decode cost a level planner compares: hash evaluations for the OLH family (reports or
    pool seeds × candidates), one step per report and candidate for GRR, per report bit for OUE."""
    n, c = 10_000, 300
    assert OLH(2.0).decode_evaluations(n, c) == n * c
    assert OLHPool(2.0, pool_size=512).decode_evaluations(n, c) == 512 * c
    assert GRR(2.0).decode_evaluations(n, c) == n + c
    assert OUE(2.0).decode_evaluations(n, c) == n * (c + 1)


def test_report_bytes() -> None:
    """A symbol (GRR), ⌈(|C|+1)/8⌉ packed bits (OUE), seed and bucket (OLH: 8 + 4 bytes; the
    pool's seed index: 4 + 4)."""
    assert [GRR(1.0).report_bytes(c) for c in (1, 300)] == [4, 4]
    assert [OUE(1.0).report_bytes(c) for c in (1, 7, 8, 300)] == [1, 1, 2, 38]
    assert OLH(1.0).report_bytes(300) == 12 and OLHPool(1.0).report_bytes(300) == 8
