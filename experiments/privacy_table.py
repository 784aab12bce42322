"""The central ε_c of one group of n users at ε₀, δ (docs/privacy.md): FMT's numerical bound
and the variation-ratio bound from each oracle's own profile (GRR over a level of 256
candidates and ⊥, OUE, OLH), as fedhh computes them for the privacy block.

    python experiments/privacy_table.py [--delta 1e-8]

Prints a markdown table; a cell's time is what computing it took (both bounds are cached per
process, so a run pays it once per group size)."""

from __future__ import annotations

import argparse
import time

from fedhh.core.privacy import shuffle_epsilon
from fedhh.core.variation import variation_epsilon
from fedhh.oracles import GRR, OLH, OUE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delta", type=float, default=1e-8, help="δ of the central guarantee")
    ap.add_argument("--domain", type=int, default=257, help="GRR's domain: candidates and ⊥")
    args = ap.parse_args()
    print(f"| n | ε₀ | FMT | GRR (d = {args.domain}) | OUE | OLH | seconds |")
    print("|---|---|---|---|---|---|---|")
    for n in (10**4, 10**5, 10**6):
        for eps0 in (2.0, 4.0, 8.0):
            t = time.perf_counter()
            fmt = shuffle_epsilon(n, eps0, args.delta)
            cells = [
                variation_epsilon(n, o.variation_ratio(args.domain), args.delta, fmt)
                for o in (GRR(eps0), OUE(eps0), OLH(eps0))
            ]
            took = time.perf_counter() - t
            row = " | ".join(f"{v:.3g}" for v in (fmt, *cells))
            print(f"| {n:.0e} | {eps0:g} | {row} | {took:.1f} |", flush=True)


if __name__ == "__main__":
    main()
