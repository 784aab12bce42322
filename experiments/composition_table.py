"""What k runs of (ε_c, δ) each are together, towards the coordinator (docs/privacy.md,
"Composition across a user's runs"): basic composition, the advanced composition theorem,
Kairouz, Oh and Viswanath's optimal homogeneous composition (closed form) and the PLD
composition fedhh uses with the ``accounting`` extra, all stated at δ_total = k·δ + δ'.

    python experiments/composition_table.py [--delta 1e-8] [--slack 1e-8]

Prints a markdown table (the PLD's time in the last column; the first also imports dp_accounting)
and one row of different ε_c."""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from fedhh.core.accounting import PLD, compose, homogeneous_epsilon


def advanced(eps: list[float], slack: float) -> float:
    """The advanced composition theorem (heterogeneous form): √(2·ln(1/δ')·Σ εᵢ²) +
    Σ εᵢ·(e^εᵢ − 1)/(e^εᵢ + 1), at δ_total = Σ δᵢ + δ'."""
    return math.sqrt(2 * math.log(1 / slack) * sum(e * e for e in eps)) + sum(
        e * math.tanh(e / 2) for e in eps
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delta", type=float, default=1e-8, help="δ of each run")
    ap.add_argument("--slack", type=float, default=1e-8, help="δ' added to Σ δ")
    args = ap.parse_args()
    print("| ε_c of a run | runs k | basic | advanced | optimal (closed form) | PLD | PLD s |")
    print("|---|---|---|---|---|---|---|")
    for eps in (0.1, 0.5, 1.0):
        for k in (10, 40, 100):
            t = time.perf_counter()
            pld = compose([(eps, args.delta)] * k, args.slack, method=PLD).epsilon
            took = time.perf_counter() - t
            opt = homogeneous_epsilon(k, eps, args.delta, k * args.delta + args.slack)
            adv = advanced([eps] * k, args.slack)
            print(
                f"| {eps:g} | {k} | {k * eps:.3g} | {adv:.3g} | {opt:.4g} | {pld:.4g} | "
                f"{took:.2f} |"
            )
    mixed = [float(e) for e in np.random.default_rng(0).uniform(0.1, 1.0, 30)]
    t = time.perf_counter()
    pld = compose([(e, args.delta) for e in mixed], args.slack, method=PLD).epsilon
    took = time.perf_counter() - t
    opt = homogeneous_epsilon(len(mixed), max(mixed), args.delta, 30 * args.delta + args.slack)
    print(
        f"| 30 runs, ε_c uniform in [0.1, 1] (seed 0) | 30 | {sum(mixed):.3g} | "
        f"{advanced(mixed, args.slack):.3g} | {opt:.4g} (at the largest ε_c) | {pld:.4g} | "
        f"{took:.2f} |"
    )


if __name__ == "__main__":
    main()
