"""The shared contract every frequency oracle satisfies (one suite, inherited per oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.errors import ParameterError, ReportError
from fedhh.oracles import (
    GRR,
    OLH,
    OUE,
    FrequencyOracle,
    OLHPool,
    Reports,
    choose_oracle,
    make_oracle,
)

CANDIDATES = np.array([5, 17, 3, 2**40 + 7, 99, 1000], dtype=np.uint64)


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Users holding candidates (skewed) plus some values outside the candidate set."""
    pool = np.concatenate([CANDIDATES, np.array([12345, 2**50], dtype=np.uint64)])
    weights = np.array([8, 4, 2, 2, 1, 1, 1, 1], dtype=float)
    return rng.choice(pool, size=n, p=weights / weights.sum())


class OracleContract:
    """Subclasses set ``make`` to build the oracle under test for a given ε."""

    @staticmethod
    def make(epsilon: float) -> FrequencyOracle:
        raise NotImplementedError

    def test_is_immutable_value_object(self) -> None:
        o = self.make(1.5)
        assert o == self.make(1.5)
        with pytest.raises(AttributeError):
            o.epsilon = 3.0  # type: ignore[misc]

    def test_shapes_and_dtypes(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(1)
        vals = _values(rng, 1000)
        rep = o.perturb(vals, rng, CANDIDATES)
        assert isinstance(rep, Reports) and rep.n == 1000 and rep.kind == o.name
        for arr in rep.arrays.values():
            assert arr.shape[0] == 1000 and arr.dtype.kind == "u"
        est = o.estimate(rep, CANDIDATES)
        assert est.shape == CANDIDATES.shape and est.dtype == np.float64
        sup = o.support(rep, CANDIDATES)
        assert sup.n == 1000 and sup.counts.shape == CANDIDATES.shape
        assert sup.counts.dtype == np.int64 and (sup.counts >= 0).all()

    def test_merge_law(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(3)
        a = o.perturb(_values(rng, 700), rng, CANDIDATES)
        b = o.perturb(_values(rng, 300), rng, CANDIDATES)
        whole = o.support(a.concat(b), CANDIDATES)
        merged = o.support(a, CANDIDATES) + o.support(b, CANDIDATES)
        assert merged.n == whole.n == 1000
        np.testing.assert_array_equal(merged.counts, whole.counts)
        np.testing.assert_allclose(o.debias(merged), o.estimate(a.concat(b), CANDIDATES))

    def test_serialisation_round_trip(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(4)
        rep = o.perturb(_values(rng, 257), rng, CANDIDATES)
        back = Reports.from_bytes(rep.to_bytes())
        assert (back.kind, back.size, back.n) == (rep.kind, rep.size, rep.n)
        for k, v in rep.arrays.items():
            np.testing.assert_array_equal(back[k], v)
            assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(o.estimate(back, CANDIDATES), o.estimate(rep, CANDIDATES))

    def test_malformed_bytes_rejected(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(5)
        data = o.perturb(_values(rng, 10), rng, CANDIDATES).to_bytes()
        for bad in (b"", b"XXXX" + data[4:], data[:-1], data + b"\0", data[:12]):
            with pytest.raises(ReportError):
                Reports.from_bytes(bad)

    def test_deterministic_under_seed(self) -> None:
        o = self.make(1.0)
        vals = _values(np.random.default_rng(6), 400)
        r1 = o.perturb(vals, np.random.default_rng(42), CANDIDATES)
        r2 = o.perturb(vals, np.random.default_rng(42), CANDIDATES)
        r3 = o.perturb(vals, np.random.default_rng(43), CANDIDATES)
        assert r1.to_bytes() == r2.to_bytes()
        assert r1.to_bytes() != r3.to_bytes()

    def test_empty_batch(self) -> None:
        o = self.make(1.0)
        rep = o.perturb(np.zeros(0, dtype=np.uint64), np.random.default_rng(0), CANDIDATES)
        assert rep.n == 0
        np.testing.assert_array_equal(o.support(rep, CANDIDATES).counts, np.zeros(6))

    def test_variance_formula(self) -> None:
        o = self.make(2.0)
        p, q = o.probabilities(CANDIDATES.size + 1)
        assert 0 < q < p < 1
        n = 10_000
        assert math.isclose(o.variance(n, 7), n * q * (1 - q) / (p - q) ** 2)
        assert o.variance(n, 7, true_count=500) != o.variance(n, 7)

    def test_large_epsilon_is_nearly_exact(self) -> None:
        o = self.make(12.0)
        rng = np.random.default_rng(7)
        vals = _values(rng, 5000)
        est = o.estimate(o.perturb(vals, rng, CANDIDATES), CANDIDATES)
        truth = np.array([(vals == c).sum() for c in CANDIDATES])
        assert np.abs(est - truth).max() < 0.01 * vals.size

    def test_bad_candidates_and_values(self) -> None:
        o = self.make(1.0)
        rng = np.random.default_rng(0)
        vals = np.array([1, 2], dtype=np.uint64)
        rep = o.perturb(vals, rng, CANDIDATES)
        with pytest.raises(ParameterError, match="empty"):
            o.estimate(rep, np.zeros(0, dtype=np.uint64))
        with pytest.raises(ParameterError, match="distinct"):
            o.estimate(rep, np.array([1, 1], dtype=np.uint64))
        with pytest.raises(ParameterError, match="non-negative"):
            o.perturb(np.array([-1, 2]), rng, CANDIDATES)
        with pytest.raises(ParameterError, match="integer"):
            o.perturb(np.array([0.5]), rng, CANDIDATES)

    def test_rejects_other_oracles_reports(self) -> None:
        o = self.make(1.0)
        other = GRR(1.0) if o.name != "grr" else OUE(1.0)
        rng = np.random.default_rng(0)
        rep = other.perturb(np.array([5], dtype=np.uint64), rng, CANDIDATES)
        with pytest.raises(ReportError):
            o.support(rep, CANDIDATES)


class TestGRR(OracleContract):
    make = staticmethod(GRR)

    def test_needs_candidates(self) -> None:
        with pytest.raises(ParameterError, match="candidate set"):
            GRR(1.0).perturb(np.array([1], dtype=np.uint64), np.random.default_rng(0))

    def test_report_domain_must_match(self) -> None:
        rep = GRR(1.0).perturb(np.array([5], dtype=np.uint64), np.random.default_rng(0), [5, 6])
        with pytest.raises(ReportError, match="domain"):
            GRR(1.0).support(rep, CANDIDATES)


class TestOUE(OracleContract):
    make = staticmethod(OUE)

    def test_reports_are_bit_packed(self) -> None:
        rep = OUE(1.0).perturb(np.arange(10, dtype=np.uint64), np.random.default_rng(0), CANDIDATES)
        assert rep["bits"].dtype == np.uint8 and rep["bits"].shape == (10, 1)

    def test_q_never_below_nominal(self) -> None:
        for eps in (0.1, 1.0, 4.0, 10.0):
            p, q = OUE(eps).probabilities(10)
            assert q >= 1 / (math.exp(eps) + 1) and (p * (1 - q)) / (q * (1 - p)) <= math.exp(eps)


class CandidateFreeContract(OracleContract):
    """Oracles whose users need no candidate set (OLH family)."""

    def test_estimates_follow_candidate_order(self) -> None:
        o = self.make(3.0)
        rng = np.random.default_rng(2)
        rep = o.perturb(_values(rng, 500), rng)
        perm = np.array([3, 0, 5, 1, 4, 2])
        np.testing.assert_allclose(
            o.estimate(rep, CANDIDATES)[perm], o.estimate(rep, CANDIDATES[perm])
        )


class TestOLH(CandidateFreeContract):
    make = staticmethod(OLH)

    def test_needs_no_candidates(self) -> None:
        rng = np.random.default_rng(0)
        rep = OLH(2.0).perturb(np.array([5, 6], dtype=np.uint64), rng)
        assert rep.n == 2 and rep.size == OLH(2.0).g

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

    def test_sketch_merges_by_addition(self) -> None:
        o = OLHPool(2.0, pool_size=64)
        rng = np.random.default_rng(0)
        a = o.perturb(_values(rng, 500), rng)
        b = o.perturb(_values(rng, 400), rng)
        both = o.sketch(a.concat(b))
        merged = o.sketch(a) + o.sketch(b)
        np.testing.assert_array_equal(both.matrix, merged.matrix)
        assert merged.n == 900 and both.matrix.shape == (64, o.g)

    def test_sketch_support_equals_plain_decode_of_pool_seeds(self) -> None:
        """Decoding through the S×g sketch equals counting each report's bucket match."""
        o = OLHPool(1.5, pool_size=32, pool_seed=9)
        rng = np.random.default_rng(1)
        rep = o.perturb(_values(rng, 2000), rng)
        from fedhh.oracles.hashing import bucket_of, hash32

        keys = o.pool_keys.take(rep["seed_index"].astype(np.int64))
        direct = [
            int((bucket_of(hash32(keys, np.full(rep.n, c, np.uint64)), o.g) == rep["bucket"]).sum())
            for c in CANDIDATES
        ]
        np.testing.assert_array_equal(o.support(rep, CANDIDATES).counts, direct)


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
    factory=st.sampled_from([GRR, OUE, OLH, OLHPool]),
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
    for o in (GRR(1.0), OUE(1.0), OLH(1.0), OLHPool(1.0)):
        assert isinstance(o.decode_evaluations(np.int64(5), 3), int)  # type: ignore[arg-type]
        assert o.decode_evaluations(0, 0) == 0
