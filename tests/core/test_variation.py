"""The variation-ratio bound (fedhh.core.variation, docs/privacy.md): against a brute-force sum
of its pair, against the exact δ of shuffled GRR over every kind of dataset at small n, against
the pair as Wang et al. publish it (which reproduces the figures quoted from the paper, and
which the exact computation shows is not always an upper bound), and the oracles' profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from fedhh.core.privacy import shuffle_epsilon
from fedhh.core.variation import VariationRatio, variation_delta, variation_epsilon
from fedhh.oracles import GRR, OLH, OUE, OLHPool


def _brute_pair(n: int, v: VariationRatio, eps: float) -> float:
    """Σ over every (a, b, d) of max(0, P − e^ε·Q), the multinomial written out."""
    p, al, ga, r, r2 = v.p, v.alpha, v.common, v.clone, v.blanket
    rest = 1 - 2 * r - r2

    def mult(a: int, b: int, d: int) -> float:
        k = n - 1 - a - b - d
        if min(a, b, d, k) < 0:
            return 0.0
        lg = special.gammaln(n) - sum(special.gammaln(x + 1) for x in (a, b, d, k))
        return math.exp(lg) * r ** (a + b) * r2**d * rest**k

    total = 0.0
    for a in range(n + 1):
        for b in range(n + 1 - a):
            for d in range(n + 1 - a - b):
                m0, m1, m2 = mult(a - 1, b, d), mult(a, b - 1, d), mult(a, b, d - 1)
                big_p = p * al * m0 + al * m1 + ga * m2
                big_q = al * m0 + p * al * m1 + ga * m2
                total += max(0.0, big_p - math.exp(eps) * big_q)
    return total


def _grr_profile(e0: float, d: int) -> VariationRatio:
    return GRR(e0).variation_ratio(d)


@pytest.mark.parametrize("d", [3, 5])
@pytest.mark.parametrize("generic", [False, True])
def test_agrees_with_the_brute_force_sum_of_its_pair(d: int, generic: bool) -> None:
    v = _grr_profile(2.0, d)
    if generic:
        v = VariationRatio.generic(2.0, v.beta)
    for n in (2, 7, 12):
        for eps in (0.3, 1.0, 1.7):
            brute = _brute_pair(n, v, eps)  # ours adds the (tiny) mass of the tails it leaves out
            assert brute - 1e-13 <= variation_delta(n, v, eps) <= brute + 1e-10


def _grr_exact(n: int, e0: float, d: int, others: np.ndarray, eps: float) -> float:
    """The exact δ(ε) of n users' shuffled GRR over d ≤ 3 values (the histogram), the victim
    holding 0 or 1, the other users holding ``others``."""
    e = math.exp(e0)

    def row(x: int) -> np.ndarray:
        out = np.full(d, 1 / (e + d - 1))
        out[x] = e / (e + d - 1)
        return out

    # the others' histogram law over (count of 0, count of 1), the rest implied
    dist = np.zeros((n + 1, n + 1))
    dist[0, 0] = 1.0
    for x in others:
        r = row(int(x))
        new = dist * (r[2] if d == 3 else 0.0)
        new[1:, :] += dist[:-1, :] * r[0]
        new[:, 1:] += dist[:, :-1] * r[1]
        dist = new

    def victim(x: int) -> np.ndarray:
        r = row(x)
        out = dist * (r[2] if d == 3 else 0.0)
        out[1:, :] += dist[:-1, :] * r[0]
        out[:, 1:] += dist[:, :-1] * r[1]
        return out

    p0, p1 = victim(0), victim(1)
    ee = math.exp(eps)
    return max(float(np.maximum(0, p0 - ee * p1).sum()), float(np.maximum(0, p1 - ee * p0).sum()))


def _datasets(n: int, d: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    fixed = [np.full(n - 1, x) for x in range(d)]
    return [*fixed, np.arange(n - 1) % d, rng.integers(0, d, n - 1)]


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("n, e0", [(6, 2.0), (25, 2.0), (40, 4.0)])
def test_bounds_the_exact_delta_of_shuffled_grr(d: int, n: int, e0: float) -> None:
    v = _grr_profile(e0, d)
    for eps in np.linspace(0.05, e0, 8)[:-1]:
        bound = variation_delta(n, v, float(eps))
        for others in _datasets(n, d):
            assert _grr_exact(n, e0, d, others, float(eps)) <= bound + 1e-12


def _published_pair_delta(n: int, v: VariationRatio, eps: float) -> float:
    """The pair as Wang et al. state it: the victim's common part is counted with nothing
    (observed: the two clone counts only), the others' clones C ~ Bin(n − 1, 2r). Summed per
    observed total t, where P − e^ε·Q is linear in a."""
    p, al, ga, r = v.p, v.alpha, v.common, v.clone
    t = np.arange(1, n + 1)
    w = stats.binom.pmf(t - 1, n - 1, 2 * r)
    u, z = 2 * w / t, stats.binom.pmf(t, n - 1, 2 * r)
    ee = math.exp(eps)
    c1 = u * al * (p - 1) * (1 + ee)
    c0 = al * u * t + ga * z - ee * (p * al * u * t + ga * z)
    start = np.clip(np.floor(-c0 / np.maximum(c1, 1e-300)) + 1, 0, t + 1)

    def at_least(k: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.where(
            k <= 0, 1.0, np.where(k > m, 0.0, special.bdtrc(np.maximum(k - 1, 0), m, 0.5))
        )

    return float(
        np.maximum(0, c1 * t / 2 * at_least(start - 1, t - 1) + c0 * at_least(start, t)).sum()
    )


def _least_eps(f: object, delta: float, hi: float) -> float:
    lo = 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if f(mid) <= delta:  # type: ignore[operator]
            hi = mid
        else:
            lo = mid
    return hi


def test_the_published_pair_gives_the_papers_figures_but_is_not_always_a_bound() -> None:
    olh8 = OLH(8.0).variation_ratio()
    generic8 = VariationRatio.generic(8.0, (math.exp(8) - 1) / (math.exp(8) + 1))
    pub = {
        (n, name): _least_eps(lambda e, n=n, v=v: _published_pair_delta(n, v, e), 1e-8, 8.0)
        for n in (10**4, 10**5)
        for name, v in (("olh", olh8), ("generic", generic8))
    }
    # the figures quoted from the paper at ε₀ = 8, δ = 10⁻⁸ (issue 23): ≈ 2 at n = 10⁴ for OLH,
    # ≈ 0.9–1.6 at n = 10⁵
    assert round(pub[10**4, "olh"], 0) == 2
    assert round(pub[10**5, "olh"], 1) == 0.9 and round(pub[10**5, "generic"], 1) == 1.5
    # and where it is exact (the others hold a third value) it equals the exact δ, but the
    # others holding the victim's own value need more: n = 200, ε₀ = 4, δ = 10⁻⁶, GRR over 3
    n, v = 200, _grr_profile(4.0, 3)
    third = np.full(n - 1, 2)
    assert _published_pair_delta(n, v, 3.0) == pytest.approx(
        _grr_exact(n, 4.0, 3, third, 3.0), rel=1e-9
    )
    published = _least_eps(lambda e: _published_pair_delta(n, v, e), 1e-6, 4.0)
    exact = _least_eps(lambda e: _grr_exact(n, 4.0, 3, np.zeros(n - 1, int), e), 1e-6, 4.0)
    assert round(published, 2) == 3.73 and round(exact, 2) == 4.0
    # ours bounds both
    assert variation_epsilon(n, v, 1e-6) >= exact - 1e-4


def test_never_above_fmt_where_used_and_better_at_large_eps0() -> None:
    olh = OLH(8.0).variation_ratio()
    fmt = shuffle_epsilon(10**5, 8.0, 1e-8)
    ours = variation_epsilon(10**5, olh, 1e-8, fmt)
    assert ours <= fmt and round(fmt, 2) == 7.79 and round(ours, 2) == 1.12
    # `below`: a bound that cannot beat it returns it unchanged
    assert variation_epsilon(10**4, olh, 1e-8, 0.5) == 0.5


def test_the_oracles_profiles() -> None:
    e = math.exp(2.0)
    # GRR: the total variation of two inputs' rows, from the oracle's own probabilities
    for d in (3, 9):
        rows = np.array([[e if y == x else 1.0 for y in range(d)] for x in (0, 1)]) / (e + d - 1)
        v = GRR(2.0).variation_ratio(d)
        assert v.beta == pytest.approx(0.5 * np.abs(rows[0] - rows[1]).sum())
        assert v.blanket == pytest.approx((d - 2) / (e + d - 1)) and v.p == v.q == e
    # OUE: the two bits, (1, 0) has ½(1 − q̃) for one input and ½q̃ for the other
    oue = OUE(2.0)
    q = oue.probabilities(5)[1]
    assert oue.variation_ratio(5).beta == pytest.approx(0.5 - q)
    assert oue.variation_ratio(5).blanket == pytest.approx(oue.variation_ratio(5).common / e)
    # OLH: GRR over g buckets where the hashes differ; the seed pool claims no profile
    olh = OLH(2.0)
    assert olh.variation_ratio().beta < (e - 1) / (e + olh.g - 1)
    assert OLHPool(2.0).variation_ratio(5) is None


def test_the_affine_hash_profile_is_its_total_variation() -> None:
    """olh-affine's β, from the oracle's own report probabilities: the total variation of two
    inputs' reports averaged over 20,000 seeds, within 5 standard errors of the seeds' mean
    (a seed's variation is (e^ε − 1)/(e^ε + g − 1) or 0, as the two keys' buckets differ)."""
    from fedhh.oracles import Reports
    from fedhh.oracles.affine import OLHAffine

    o, n = OLHAffine(2.0), 20_000
    e, g = math.exp(2.0), OLHAffine(2.0).g
    seeds = np.random.default_rng(7).integers(0, 2**64, n, dtype=np.uint64)
    tv = np.zeros(n)
    for b in range(g):  # ½ Σ over the buckets of |P(seed, b | v) − P(seed, b | v')|, per seed
        reports = Reports(o.name, g, {"seed": seeds, "bucket": np.full(n, b, dtype=np.uint32)})
        probs = o.output_probability(reports, np.array([12345, 2**40 + 3], dtype=np.uint64))
        tv += 0.5 * np.abs(probs[0] - probs[1]) * 2.0**64  # the seed's own 2^−64 taken out
    gap = (e - 1) / (e + g - 1)
    se = gap * math.sqrt((1 / g) * (1 - 1 / g) / n)
    assert abs(tv.mean() - o.variation_ratio().beta) < 5 * se
