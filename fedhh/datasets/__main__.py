"""``python -m fedhh.datasets urls DIR``: write a synthetic URL federation as party files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fedhh.datasets.files import write_party_files
from fedhh.datasets.urls import synthetic_urls


def main(argv: Sequence[str] | None = None) -> None:
    """Write a URL federation (:func:`~fedhh.datasets.urls.synthetic_urls`) as party files, one
    item a line, and print their paths."""
    ap = argparse.ArgumentParser(prog="python -m fedhh.datasets", description=main.__doc__)
    ap.add_argument("kind", choices=["urls"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--parties", type=int, default=8)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--zipf-s", type=float, default=1.1)
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet α of the split")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ds = synthetic_urls(
        args.users,
        args.parties,
        n_items=args.items,
        s=args.zipf_s,
        alpha=args.alpha,
        seed=args.seed,
    )
    for path in write_party_files(ds, args.folder):
        print(path)


if __name__ == "__main__":
    main()
