"""Tests of fedhh.core.metrics (docs/mechanisms.md §8) on hand-computed examples, edge cases and
properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.core.metrics import (
    Scores,
    are,
    evaluate,
    f1,
    known_domain_estimates,
    known_domain_reference,
    mean_scores,
    ncr,
    precision,
    recall,
    reference_oracle,
    true_top_k,
)
from fedhh.errors import ParameterError
from fedhh.oracles import choose_oracle, noise_z

# --- true_top_k -------------------------------------------------------------------------------


def test_true_top_k_from_mapping_and_arrays() -> None:
    counts = {7: 5, 3: 9, 11: 1, 4: 7}
    assert true_top_k(counts, 2).tolist() == [3, 4]
    codes = np.array([7, 3, 11, 4], dtype=np.uint64)
    cnt = np.array([5, 9, 1, 7])
    top = true_top_k((codes, cnt), 3)
    assert top.dtype == np.uint64
    assert top.tolist() == [3, 4, 7]


def test_true_top_k_ties_broken_by_code_ascending() -> None:
    counts = {50: 4, 10: 4, 30: 4, 20: 9, 40: 1}
    assert true_top_k(counts, 1).tolist() == [20]
    assert true_top_k(counts, 2).tolist() == [20, 10]
    assert true_top_k(counts, 3).tolist() == [20, 10, 30]
    assert true_top_k(counts, 4).tolist() == [20, 10, 30, 50]


def test_true_top_k_fewer_items_than_k_and_zero_counts() -> None:
    counts = {1: 3, 2: 0, 3: 1}
    assert true_top_k(counts, 10).tolist() == [1, 3]  # zero-count item 2 never returned
    assert true_top_k({}, 3).size == 0


def test_true_top_k_large_codes() -> None:
    big = (1 << 64) - 1
    assert true_top_k({big: 2, 0: 1}, 1).tolist() == [big]


@pytest.mark.parametrize(
    ("counts", "k"),
    [
        ({1: 1}, 0),
        ({1: 1}, -2),
        ({1: 1}, True),
        ({1: 1}, 1.5),
        ({1: -1}, 1),
        ({1: 1.5}, 1),
        ((np.array([1, 2]), np.array([1])), 1),
        ((np.array([1, 1]), np.array([1, 2])), 1),
        ((np.array([1.0, 2.0]), np.array([1, 2])), 1),
        ((np.array([-1, 2]), np.array([1, 2])), 1),
        ([1, 2], 1),
    ],
)
def test_true_top_k_rejects_bad_input(counts: object, k: object) -> None:
    with pytest.raises(ParameterError):
        true_top_k(counts, k)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.integers(0, 2**64 - 1), st.integers(0, 20), max_size=40),
    st.integers(1, 12),
)
def test_true_top_k_matches_sorting(counts: dict[int, int], k: int) -> None:
    expected = sorted((c for c in counts if counts[c] > 0), key=lambda c: (-counts[c], c))[:k]
    assert true_top_k(counts, k).tolist() == expected


# --- precision, recall, F1, NCR, ARE on hand-computed examples --------------------------------

TRUTH = [10, 20, 30, 40]  # ranks 1..4, k = 4
K = 4


def test_precision_recall_f1_example() -> None:
    returned = [10, 20, 99]
    assert precision(returned, TRUTH) == pytest.approx(2 / 3)
    assert recall(returned, TRUTH, K) == pytest.approx(1 / 2)
    # F1 = 2·(2/3)(1/2)/(2/3 + 1/2) = 4/7
    assert f1(returned, TRUTH, K) == pytest.approx(4 / 7)


def test_perfect_and_disjoint() -> None:
    assert precision(TRUTH, TRUTH) == 1.0
    assert recall(TRUTH[::-1], TRUTH, K) == 1.0
    assert f1(TRUTH, TRUTH, K) == 1.0
    assert precision([1, 2], TRUTH) == 0.0
    assert recall([1, 2], TRUTH, K) == 0.0
    assert f1([1, 2], TRUTH, K) == 0.0


def test_recall_uses_k_as_denominator() -> None:
    # only 2 items exist, k = 4: returning both gives recall 2/4 (spec: |Ĥ∩T| / k)
    assert recall([1, 2], [1, 2], 4) == pytest.approx(0.5)


def test_ncr_example() -> None:
    # k = 4: scores 4, 3, 2, 1 for ranks 1..4; returned 20 (rank 2 → 3) and 40 (rank 4 → 1)
    assert ncr([20, 40, 99], TRUTH, K) == pytest.approx(4 / 10)
    assert ncr([40, 30, 20, 10], TRUTH, K) == pytest.approx(1.0)
    assert ncr([10], TRUTH, K) == pytest.approx(4 / 10)
    assert ncr([40], TRUTH, K) == pytest.approx(1 / 10)
    assert ncr([1, 2, 3], TRUTH, K) == 0.0


def test_ncr_with_short_truth() -> None:
    # fewer than k true items: ranks still score k − r + 1
    assert ncr([5], [5], 3) == pytest.approx(3 / 6)


def test_are_example() -> None:
    # Ĥ∩T = {1, 2}: |110 − 100|/100 = 0.1, |45 − 50|/50 = 0.1 → 0.1; item 9 is not in T
    value = are([1, 2, 9], [110.0, 45.0, 7.0], [1, 2, 3], [100, 50, 30])
    assert value == pytest.approx(0.1)
    assert are([2], [0.0], [1, 2, 3], [100, 50, 30]) == pytest.approx(1.0)
    assert are([3, 1], [30, 100], [1, 2, 3], [100, 50, 30]) == 0.0


def test_are_empty_intersection_is_nan() -> None:
    assert math.isnan(are([9], [1.0], [1, 2], [5, 5]))
    assert math.isnan(are([], [], [1, 2], [5, 5]))


def test_empty_returned_set() -> None:
    assert precision([], TRUTH) == 0.0  # convention
    assert recall([], TRUTH, K) == 0.0
    assert f1([], TRUTH, K) == 0.0
    assert ncr([], TRUTH, K) == 0.0
    assert precision(np.array([], dtype=np.uint64), TRUTH) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: precision([1, 1], TRUTH),  # duplicates
        lambda: recall([1, 2, 3, 4, 5], TRUTH, K),  # more than k
        lambda: f1([1, 2, 3, 4, 5], TRUTH, K),
        lambda: ncr([1, 2, 3, 4, 5], TRUTH, K),
        lambda: ncr([1, 1], TRUTH, K),
        lambda: recall([1], TRUTH, 0),  # k < 1
        lambda: recall([1], [1, 2, 3, 4, 5], K),  # truth longer than k
        lambda: precision([1.5], TRUTH),  # not integer codes
        lambda: precision([-1], TRUTH),
        lambda: precision([[1, 2]], TRUTH),  # not 1-D
        lambda: are([1, 2], [1.0], [1], [1]),  # estimates misaligned
        lambda: are([1], [1.0], [1, 2], [1]),  # truth counts misaligned
        lambda: are([1], [1.0], [1], [0]),  # zero true count
    ],
)
def test_bad_arguments_raise(call: object) -> None:
    with pytest.raises(ParameterError):
        call()  # type: ignore[operator]


def test_error_message_names_the_problem() -> None:
    with pytest.raises(ParameterError, match="more than k=2"):
        recall([1, 2, 3], [1, 2], 2)
    with pytest.raises(ParameterError, match="duplicate"):
        recall([1, 1], [1, 2], 2)


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_example() -> None:
    codes = np.array([5, 1, 3, 2, 4], dtype=np.uint64)
    counts = np.array([10, 50, 30, 40, 20])
    # T (k=3) = [1, 2, 3] with counts 50, 40, 30
    scores = evaluate([2, 1, 4], [44.0, 45.0, 1.0], codes, counts, 3)
    assert isinstance(scores, Scores)
    assert scores.hits == 2
    assert scores.n_returned == 3
    assert scores.k == 3
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 / 3)
    assert scores.ncr == pytest.approx((3 + 2) / 6)
    assert scores.are == pytest.approx((4 / 40 + 5 / 50) / 2)
    d = scores.as_dict()
    assert set(d) == {"precision", "recall", "f1", "ncr", "are", "k", "n_returned", "hits"}


def test_evaluate_without_estimates_and_empty() -> None:
    codes, counts = np.array([1, 2]), np.array([3, 4])
    scores = evaluate([2], None, codes, counts, 2)
    assert scores.precision == 1.0
    assert scores.recall == 0.5
    assert math.isnan(scores.are)
    empty = evaluate([], [], codes, counts, 2)
    assert (empty.precision, empty.recall, empty.f1, empty.ncr) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(empty.are)
    with pytest.raises(ParameterError):
        evaluate([1, 2, 3], None, codes, counts, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 30), min_size=1, max_size=25),
    st.integers(1, 8),
    st.data(),
)
def test_metric_properties(counts_list: list[int], k: int, data: st.DataObject) -> None:
    codes = np.arange(len(counts_list), dtype=np.uint64) * np.uint64(7919)
    counts = np.array(counts_list)
    truth = true_top_k((codes, counts), k)
    pool = codes.tolist()
    returned = data.draw(st.lists(st.sampled_from(pool), unique=True, max_size=k))
    est = data.draw(st.lists(st.floats(0, 100), min_size=len(returned), max_size=len(returned)))
    s = evaluate(returned, est, codes, counts, k)
    for v in (s.precision, s.recall, s.f1, s.ncr):
        assert 0.0 <= v <= 1.0
    assert s.precision * len(returned) == pytest.approx(s.hits)
    assert s.recall * k == pytest.approx(s.hits)
    assert s.f1 <= max(s.precision, s.recall) + 1e-12
    # returning T itself with exact counts is perfect (up to |T| < k when few items exist)
    exact = counts[np.searchsorted(codes, truth)]
    best = evaluate(truth, exact, codes, counts, k)
    assert best.precision == 1.0
    assert best.recall == pytest.approx(truth.size / k)
    assert best.are == 0.0
    if truth.size == k:
        assert best.ncr == pytest.approx(1.0)
        assert best.f1 == pytest.approx(1.0)


# --- the known-domain reference (docs/mechanisms.md §8) ----------------------------------


def zipf_counts(n_items: int, n_users: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(n_items, dtype=np.uint64) * np.uint64(7919) + np.uint64(3)
    p = np.arange(1, n_items + 1, dtype=np.float64) ** -s
    cnt = np.maximum(1, np.round(n_users * p / p.sum())).astype(np.int64)
    return codes, cnt


def direct_reference(
    codes: np.ndarray, cnt: np.ndarray, eps: float, k: int, rng: np.random.Generator
) -> Scores:
    """The reference by brute force: every user perturbs with the real oracle over the domain."""
    oracle = choose_oracle(eps, codes.size + 1)
    users = np.repeat(codes, cnt)
    est = oracle.estimate(oracle.perturb(users, rng, candidates=codes), codes)
    top = np.argsort(-est, kind="stable")[:k]
    return evaluate(codes[top], est[top], codes, cnt, k)


@pytest.mark.parametrize(
    ("eps", "n_users", "oracle"), [(0.9, 20_000, "oue"), (2.0, 4_000, "olh"), (3.0, 2_000, "grr")]
)
def test_reference_matches_a_direct_simulation(eps: float, n_users: int, oracle: str) -> None:
    codes, cnt = zipf_counts(40, n_users, 0.6)
    assert reference_oracle(eps, codes.size).name == oracle  # each oracle family is exercised
    reps, k = 200, 8
    rng = np.random.default_rng(1)
    ref = np.array([s.f1 for s in known_domain_reference(codes, cnt, eps, k, rng, repeats=reps)])
    sim = np.array([direct_reference(codes, cnt, eps, k, rng).f1 for _ in range(reps)])
    # F1 is neither 0 nor 1 here (the test is not vacuous), and the means agree within 5 SE
    assert 0.3 < sim.mean() < 0.9
    se = math.sqrt(ref.var(ddof=1) / reps + sim.var(ddof=1) / reps)
    assert abs(ref.mean() - sim.mean()) < 5 * se
    assert 5 * se < 0.08


@pytest.mark.parametrize("eps", [0.9, 2.0, 3.0])
def test_reference_estimates_are_unbiased_with_the_oracles_variance(eps: float) -> None:
    _, cnt = zipf_counts(40, 5_000, 0.8)
    reps = 4000
    rng = np.random.default_rng(2)
    est = np.stack([known_domain_estimates(cnt, eps, rng) for _ in range(reps)])
    oracle = reference_oracle(eps, cnt.size)
    var = np.array([oracle.variance(int(cnt.sum()), cnt.size + 1, c) for c in cnt])
    z_mean = (est.mean(axis=0) - cnt) / np.sqrt(var / reps)
    assert np.all(np.abs(z_mean) < 5)
    # sample variance / true variance ≈ 1 ± sqrt(2 / (reps − 1)) (normal approximation)
    ratio = est.var(axis=0, ddof=1) / var
    assert np.all(np.abs(ratio - 1) < 5 * math.sqrt(2 / (reps - 1)))


def test_reference_rises_with_epsilon_and_is_reproducible() -> None:
    codes, cnt = zipf_counts(2000, 100_000, 1.1)
    means, ses = [], []
    for eps in (0.5, 1.0, 2.0, 4.0):
        f = [
            s.f1
            for s in known_domain_reference(
                codes, cnt, eps, 16, np.random.default_rng(0), repeats=100
            )
        ]
        means.append(np.mean(f))
        ses.append(np.std(f, ddof=1) / 10)
    for i in range(3):
        assert means[i + 1] - means[i] > 3 * math.hypot(ses[i], ses[i + 1])
    a = known_domain_reference(codes, cnt, 2.0, 16, np.random.default_rng(5), repeats=3)
    b = known_domain_reference(codes, cnt, 2.0, 16, np.random.default_rng(5), repeats=3)
    assert a == b


def test_reference_answers_under_the_mechanisms_noise_bar() -> None:
    """With ``answer_alpha`` the reference answers as a mechanism does (§5): its top-k rows whose
    estimate exceeds Φ̄⁻¹(α/D)·SE, D the items, SE the oracle's zero-count error; the same draws
    as its top-k (same generator state), so only the cut differs."""
    codes, cnt = zipf_counts(2000, 100_000, 1.1)
    got = known_domain_reference(
        codes, cnt, 0.5, 16, np.random.default_rng(9), repeats=5, answer_alpha=0.25
    )
    rng = np.random.default_rng(9)
    oracle = reference_oracle(0.5, cnt.size)
    bar = noise_z(cnt.size, 0.25) * math.sqrt(oracle.variance(int(cnt.sum()), cnt.size + 1))
    truth = true_top_k((codes, cnt), 16)
    kept = []
    for scores in got:
        est = known_domain_estimates(cnt, 0.5, rng)
        top = np.argsort(-est, kind="stable")[:16]
        top = top[est[top] > bar]
        kept.append(top.size)
        assert scores == evaluate(codes[top], est[top], codes, cnt, 16)
        assert scores.precision == np.isin(codes[top], truth).mean()
    assert 0 < min(kept) and max(kept) < 16  # ε = 0.5: the bar cuts the noise rows, not all


def test_reference_perfect_when_the_noise_is_negligible_and_mean_scores() -> None:
    codes, cnt = zipf_counts(50, 10**7, 1.0)
    draws = known_domain_reference(codes, cnt, 10.0, 5, np.random.default_rng(0), repeats=4)
    m = mean_scores(draws)
    assert m["f1"] == 1.0 and m["ncr"] == 1.0 and m["f1_std"] == 0.0 and m["runs"] == 4
    assert 0 < m["are"] < 0.01


@pytest.mark.parametrize(
    "call",
    [
        lambda: known_domain_reference([1, 2], [3, 4], 1.0, 0, np.random.default_rng(0)),
        lambda: known_domain_reference([1, 2], [3, 4], 1.0, 1, np.random.default_rng(0), repeats=0),
        lambda: known_domain_reference([1, 2], [3, 4], -1.0, 1, np.random.default_rng(0)),
        lambda: known_domain_estimates(np.array([1.5]), 1.0, np.random.default_rng(0)),
        lambda: mean_scores([]),
    ],
)
def test_reference_bad_arguments(call: object) -> None:
    with pytest.raises(ParameterError):
        call()  # type: ignore[operator]
