"""The contract every frequency oracle satisfies, as one abstract test class.

Each registered oracle has a subclass in tests/oracles/test_oracles_contract.py that sets ``make``
(and, if its reports cannot all be listed from its layout, ``output_space``); every test here then
runs for it. Besides the estimator's laws (shapes, merging, serialisation, determinism, accuracy at
a large ε) the contract checks what the oracle declares to the other layers against what ``perturb``
really makes (report layout, bytes and limits, as ingest checks them; needing the candidates; its
parameters and registry entry; vectorised variance) and audits ε-LDP from ``output_probability``:
over the whole output space (or a sample of it, for OLH's 2⁶⁴ seeds) P[y|x] ≤ e^ε·P[y|x'] for every
pair of values, the bound is attained, the probabilities sum to the space's mass, and the sampler
draws from exactly that distribution (empirical frequencies within 5 sigma).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedhh.clients.device_wire import ReportFields, report_to_pb
from fedhh.clients.ingest import ReportChecker, check_single_report
from fedhh.errors import ParameterError, ReportError
from fedhh.oracles import (
    GRR,
    ORACLES,
    OUE,
    FrequencyOracle,
    Reports,
    Tally,
    make_oracle,
    oracle_from,
)
from fedhh.wire.v1 import report_pb2

CANDIDATES = np.array([5, 17, 3, 2**40 + 7, 99, 1000], dtype=np.uint64)
AUDIT_CANDIDATES = np.array([5, 17, 3, 2**40 + 7, 99, 1000, 2**63 + 1], dtype=np.uint64)
OUTSIDE = np.array([12345, 2**50, 2**64 - 1], dtype=np.uint64)  # values outside C (⊥)
EPSILONS = [0.5, 1.0, 2.0, 4.0]
TOL = 1e-12


def values_of(rng: np.random.Generator, n: int) -> np.ndarray:
    """Users holding candidates (skewed) plus some values outside the candidate set."""
    pool = np.concatenate([CANDIDATES, np.array([12345, 2**50], dtype=np.uint64)])
    weights = np.array([8, 4, 2, 2, 1, 1, 1, 1], dtype=float)
    return rng.choice(pool, size=n, p=weights / weights.sum())


def report_rows(rep: Reports) -> np.ndarray:
    """Each report's bytes (all its fields) as one opaque value, for matching reports."""
    cols = [np.ascontiguousarray(a).reshape(rep.n, -1).view(np.uint8) for a in rep.arrays.values()]
    rows = np.ascontiguousarray(np.hstack(cols))
    return rows.view(f"V{rows.shape[1]}").ravel()


def assert_frequencies(counts: np.ndarray, probs: np.ndarray) -> None:
    n = counts.sum()
    sigma = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts - n * probs) <= 5 * sigma + 1e-9), (counts, n * probs)


class OracleContract:
    """Subclasses set ``make`` to build the oracle under test for a given ε."""

    @staticmethod
    def make(epsilon: float) -> FrequencyOracle:
        raise NotImplementedError

    def listed(self, epsilon: float) -> FrequencyOracle:
        """The oracle of the output-space tests (by default ``make``; one with fewer outputs
        where ``make``'s are too many to sample every one often)."""
        return self.make(epsilon)

    def output_space(self, o: FrequencyOracle, candidates: np.ndarray) -> tuple[Reports, float]:
        """Every report the oracle can send over ``candidates`` and their total probability for
        any value (1). This default lists the product of the layout's bounded fields; an oracle
        with unbounded fields overrides it (a sample of its space and that sample's mass)."""
        layout = o.report_layout(candidates.size)
        limits = layout.limits
        assert set(limits) == set(layout.fields), "unbounded fields: override output_space"
        assert all(f.shape == () for f in layout.fields.values()), "override output_space"
        grid = np.indices([limits[k] for k in layout.fields]).reshape(len(limits), -1)
        arrays = {k: grid[i].astype(f.dtype) for i, (k, f) in enumerate(layout.fields.items())}
        return Reports(layout.kind, layout.size, arrays), 1.0

    # --- the estimator -----------------------------------------------------------------------
    def test_is_immutable_value_object(self) -> None:
        o = self.make(1.5)
        assert o == self.make(1.5)
        with pytest.raises(AttributeError):
            o.epsilon = 3.0  # type: ignore[misc]

    def test_shapes_and_dtypes(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(1)
        rep = o.perturb(values_of(rng, 1000), rng, CANDIDATES)
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
        a = o.perturb(values_of(rng, 700), rng, CANDIDATES)
        b = o.perturb(values_of(rng, 300), rng, CANDIDATES)
        whole = o.support(a.concat(b), CANDIDATES)
        merged = o.support(a, CANDIDATES) + o.support(b, CANDIDATES)
        assert merged.n == whole.n == 1000
        np.testing.assert_array_equal(merged.counts, whole.counts)
        np.testing.assert_allclose(o.debias(merged), o.estimate(a.concat(b), CANDIDATES))

    def test_tallies_fold_in_blocks_to_the_support_of_all(self) -> None:
        """A party folds reports into tallies as they arrive (clients/devices.py): the tallies
        of a split, added and sent through bytes, give exactly the support of the whole."""
        o = self.make(2.0)
        rng = np.random.default_rng(5)
        a = o.perturb(values_of(rng, 700), rng, CANDIDATES)
        b = o.perturb(values_of(rng, 300), rng, CANDIDATES)
        folded = Tally.from_bytes((o.tally(a, CANDIDATES) + o.tally(b, CANDIDATES)).to_bytes())
        assert (folded.n, folded.nbytes) == (1000, a.nbytes() + b.nbytes())
        whole = o.support(a.concat(b), CANDIDATES)
        np.testing.assert_array_equal(o.tally_support(folded, CANDIDATES).counts, whole.counts)

    def test_serialisation_round_trip(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(4)
        rep = o.perturb(values_of(rng, 257), rng, CANDIDATES)
        back = Reports.from_bytes(rep.to_bytes())
        assert (back.kind, back.size, back.n) == (rep.kind, rep.size, rep.n)
        for k, v in rep.arrays.items():
            np.testing.assert_array_equal(back[k], v)
            assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(o.estimate(back, CANDIDATES), o.estimate(rep, CANDIDATES))

    def test_malformed_bytes_rejected(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(5)
        data = o.perturb(values_of(rng, 10), rng, CANDIDATES).to_bytes()
        for bad in (b"", b"XXXX" + data[4:], data[:-1], data + b"\0", data[:12]):
            with pytest.raises(ReportError):
                Reports.from_bytes(bad)

    def test_deterministic_under_seed(self) -> None:
        o = self.make(1.0)
        vals = values_of(np.random.default_rng(6), 400)
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

    def test_variance_is_vectorised_with_the_same_arithmetic(self) -> None:
        o = self.make(2.0)
        counts = np.array([0.0, 0.5, 3.0, 777.25, 10_000.0])
        each = [o.variance(10_000, 7, float(c)) for c in counts]
        np.testing.assert_array_equal(o.variance(10_000, 7, counts), each)

    def test_large_epsilon_is_nearly_exact(self) -> None:
        o = self.make(12.0)
        rng = np.random.default_rng(7)
        vals = values_of(rng, 5000)
        est = o.estimate(o.perturb(vals, rng, CANDIDATES), CANDIDATES)
        truth = np.array([(vals == c).sum() for c in CANDIDATES])
        assert np.abs(est - truth).max() < 0.01 * vals.size

    def test_bad_candidates_and_values(self) -> None:
        o = self.make(1.0)
        rng = np.random.default_rng(0)
        rep = o.perturb(np.array([1, 2], dtype=np.uint64), rng, CANDIDATES)
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
        rep = other.perturb(np.array([5], dtype=np.uint64), np.random.default_rng(0), CANDIDATES)
        with pytest.raises(ReportError):
            o.support(rep, CANDIDATES)

    # --- what the oracle declares to the other layers ------------------------------------------
    def test_registered_and_rebuilt_from_its_parameters(self) -> None:
        o = self.make(1.5)
        assert ORACLES[o.name] is type(o)
        assert make_oracle(o.name, o.epsilon, **o.parameters()) == o
        assert oracle_from(o.name, o.epsilon, o.parameters() | {"not_a_parameter": 3}) == o
        assert set(o.parameters()) == set(o.parameter_names)

    def test_needs_candidates_is_what_perturb_does(self) -> None:
        o = self.make(2.0)
        vals = values_of(np.random.default_rng(8), 50)
        if o.needs_candidates:
            with pytest.raises(ParameterError, match="candidate set"):
                o.perturb(vals, np.random.default_rng(0))
        else:  # the report does not depend on the candidates at all
            free = o.perturb(vals, np.random.default_rng(0))
            given = o.perturb(vals, np.random.default_rng(0), CANDIDATES)
            assert free.to_bytes() == given.to_bytes()

    @pytest.mark.parametrize("n_candidates", [1, 6, 7, 8, 9, 300])
    def test_layout_is_what_perturb_makes(self, n_candidates: int) -> None:
        o = self.make(2.0)
        cand = np.arange(n_candidates, dtype=np.uint64) * 7 + 1
        rng = np.random.default_rng(n_candidates)
        rep = o.perturb(rng.choice(np.append(cand, np.uint64(0)), size=400), rng, cand)
        layout = o.report_layout(n_candidates)
        assert (rep.kind, rep.size) == (layout.kind, layout.size) and layout.kind == o.name
        assert list(rep.arrays) == list(layout.fields)  # the same fields in the same order
        for name, f in layout.fields.items():
            assert rep[name].dtype == np.dtype(f.dtype) and rep[name].shape == (400, *f.shape)
        for name, limit in layout.limits.items():
            assert int(rep[name].max()) < limit
        assert rep.nbytes() == rep.n * o.report_bytes(n_candidates) == rep.n * layout.nbytes
        one = rep.take(slice(0, 1)).to_bytes()
        template = layout.template().to_bytes()  # the same header: only the values differ
        assert len(template) == len(one) and template[: -layout.nbytes] == one[: -layout.nbytes]

    @pytest.mark.parametrize("n_candidates", [1, 7, 8, 300])
    def test_the_device_wire_carries_every_report(self, n_candidates: int) -> None:
        """Each report as a ``Report`` message (docs/device-wire.md) packs back into exactly its
        frame; each field left unset, and each value at its limit, is refused."""
        o = self.make(2.0)
        cand = np.arange(n_candidates, dtype=np.uint64) * 5 + 2
        rng = np.random.default_rng(n_candidates)
        rep = o.perturb(rng.choice(np.append(cand, np.uint64(1)), size=50), rng, cand)
        layout = o.report_layout(n_candidates)
        fields = ReportFields(layout)
        msgs = [report_to_pb(rep.take(slice(i, i + 1))) for i in range(rep.n)]
        for i, msg in enumerate(msgs):
            wire = report_pb2.Report.FromString(msg.SerializeToString())
            assert fields.frame(wire) == rep.take(slice(i, i + 1)).to_bytes()
        for name in layout.fields:
            bad = report_pb2.Report()
            bad.CopyFrom(msgs[0])
            getattr(bad, fields.case).ClearField(name)
            with pytest.raises(ReportError, match=f"{name} is missing"):
                fields.frame(bad)
        for name, limit in layout.limits.items():
            bad = report_pb2.Report()
            bad.CopyFrom(msgs[0])
            setattr(getattr(bad, fields.case), name, limit)
            with pytest.raises(ReportError, match="out of range"):
                fields.frame(bad)
        for name, f in layout.fields.items():
            if f.shape:  # packed bytes: exactly their length
                bad = report_pb2.Report()
                bad.CopyFrom(msgs[0])
                setattr(getattr(bad, fields.case), name, bytes(f.shape[0] + 1))
                with pytest.raises(ReportError, match=f"must be {f.shape[0]} bytes"):
                    fields.frame(bad)

    def test_ingest_takes_every_report_and_refuses_values_over_the_limits(self) -> None:
        o = self.make(2.0)
        rng = np.random.default_rng(9)
        rep = o.perturb(values_of(rng, 300), rng, CANDIDATES)
        checker = ReportChecker(o, CANDIDATES)
        singles = [rep.take(slice(i, i + 1)) for i in range(rep.n)]
        assert checker.check([r.to_bytes() for r in singles]) == [None] * rep.n
        assert checker.check([singles[0].to_bytes()]) == [None]
        for name, limit in o.report_layout(CANDIDATES.size).limits.items():
            arrays = dict(singles[0].arrays)
            arrays[name] = np.full_like(arrays[name], limit)
            bad = Reports(rep.kind, rep.size, arrays).to_bytes()
            assert checker.check([bad])[0] is not None
            assert checker.check([bad, singles[1].to_bytes()])[1] is None
            with pytest.raises(ReportError, match="out of range"):
                check_single_report(bad, o, CANDIDATES)

    def test_decode_evaluations_are_an_int(self) -> None:
        for o in (self.make(1.0), self.make(4.0)):
            assert isinstance(o.decode_evaluations(np.int64(5), 3), int)  # type: ignore[arg-type]
            assert o.decode_evaluations(0, 0) == 0
            assert 0 < o.decode_evaluations(100, 10) <= o.decode_evaluations(1000, 20)

    # --- ε-LDP: the audit every oracle inherits ------------------------------------------------
    @pytest.mark.parametrize("eps", EPSILONS)
    @pytest.mark.parametrize("n_candidates", range(1, 8))
    def test_epsilon_ldp_over_the_output_space(self, eps: float, n_candidates: int) -> None:
        o = self.listed(eps)
        cand = AUDIT_CANDIDATES[:n_candidates]
        space, mass = self.output_space(o, cand)
        values = np.concatenate([AUDIT_CANDIDATES, OUTSIDE])
        probs = o.output_probability(space, values, cand)
        assert probs.shape == (values.size, space.n) and (probs > 0).all()
        np.testing.assert_allclose(probs.sum(axis=1), mass, rtol=1e-9)
        ratio = float((probs.max(axis=0) / probs.min(axis=0)).max())
        assert ratio <= math.exp(eps) * (1 + TOL)
        assert ratio >= math.exp(eps) * (1 - 1e-6)  # the budget is used: the bound is attained

    @pytest.mark.parametrize("eps", [0.5, 2.0])
    def test_sampler_draws_from_the_output_probability(self, eps: float) -> None:
        o = self.listed(eps)
        cand = CANDIDATES[:3]
        space, mass = self.output_space(o, cand)
        assert mass == 1.0, "a sampled output space: override this test"
        rows = report_rows(space)
        order = np.argsort(rows)
        assert np.unique(rows).size == rows.size
        for i, value in enumerate([*cand, OUTSIDE[0]]):
            rng = np.random.default_rng(100 + i)
            rep = o.perturb(np.full(60_000, value, dtype=np.uint64), rng, cand)
            drawn = report_rows(rep)
            pos = np.searchsorted(rows[order], drawn)
            assert (rows[order][np.minimum(pos, rows.size - 1)] == drawn).all()  # all listed
            counts = np.bincount(order[pos], minlength=space.n)
            probs = o.output_probability(space, np.array([value], dtype=np.uint64), cand)[0]
            assert_frequencies(counts, probs)


class CandidateFreeContract(OracleContract):
    """Oracles whose users need no candidate set (OLH family)."""

    def test_estimates_follow_candidate_order(self) -> None:
        o = self.make(3.0)
        assert not o.needs_candidates
        rng = np.random.default_rng(2)
        rep = o.perturb(values_of(rng, 500), rng)
        perm = np.array([3, 0, 5, 1, 4, 2])
        np.testing.assert_allclose(
            o.estimate(rep, CANDIDATES)[perm], o.estimate(rep, CANDIDATES[perm])
        )
