"""The study's column at a central target beside its local-ε columns (docs/privacy.md, the
README): mean F1 over the study's datasets of TAPS, TAP, the better tuned baseline (the η with
the best mean F1, in hindsight), the held-out baseline and the known-domain reference, at each
local ε of the equal-terms study and at the central target of central-column.toml, with the ε₀
the target chose per dataset.

    python experiments/central_column.py [--local experiments/results/equal-terms]
        [--central experiments/results/central-column]

Reads both studies' runs.csv (``experiments/study.py`` writes them), prints markdown and writes
it to ``central_column.md`` in the central study's folder."""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_io import REFERENCE, read_runs
from study_plan import load_config
from study_report import HELD_OUT, summarise

CONFIGS = Path(__file__).resolve().parent / "configs"
COLUMNS = ("TAPS", "TAP", "better tuned baseline (hindsight)", HELD_OUT, REFERENCE)


def per_dataset(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[float, dict]:
    """ε → dataset → column → mean F1 (the better tuned baseline: the better of the tuned
    families at that dataset)."""
    out: dict[float, dict] = defaultdict(lambda: defaultdict(dict))
    tuned = [f"{f} tuned" for f in cfg.get("tuning", {}).get("labels", [])]
    for s in summarise(rows, cfg):
        cell = out[s["epsilon"]][s["dataset"]]
        if s["label"] in tuned:
            cell[COLUMNS[2]] = max(cell.get(COLUMNS[2], -math.inf), s["f1_mean"])
        elif s["label"] in COLUMNS:
            cell[s["label"]] = s["f1_mean"]
    return out


def mean_over(table: dict[str, dict[str, float]], col: str) -> float:
    return float(np.mean([cells[col] for cells in table.values()]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local", type=Path, default=Path("experiments/results/equal-terms"))
    ap.add_argument("--central", type=Path, default=Path("experiments/results/central-column"))
    args = ap.parse_args()
    local_cfg = load_config(CONFIGS / "equal-terms.toml")
    central_cfg = load_config(CONFIGS / "central-column.toml")
    local_rows = read_runs(args.local / "runs.csv")
    central_rows = read_runs(args.central / "runs.csv")
    target = central_cfg["params"]["central_epsilon"]
    delta = central_cfg["params"]["central_delta"]
    local = per_dataset(local_rows, local_cfg)
    central = next(iter(per_dataset(central_rows, central_cfg).values()))
    datasets = sorted(central)
    reps = sorted({r["rep"] for r in central_rows})
    head = [f"ε = {e:g}" for e in sorted(local)] + [f"ε_c ≤ {target:g}"]
    lines = [
        f"# The study at a central target ε_c ≤ {target:g} (δ = {delta:g}) beside its local ε",
        "",
        f"Mean F1 over {len(datasets)} datasets (k = 16, repeats {reps[0]}–{reps[-1]} at the "
        "central target, 0–4 at the local ε; every answer under the noise bar):",
        "",
        "| | " + " | ".join(head) + " |",
        "|---|" + "---|" * len(head),
    ]
    for col in COLUMNS:
        cells = [mean_over(local[e], col) for e in sorted(local)] + [mean_over(central, col)]
        lines.append(f"| {col} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    eps0: dict[tuple[str, str], list[float]] = defaultdict(list)
    eps_c: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in central_rows:
        eps0[(r["dataset"], r["label"])].append(r["epsilon0"])
        eps_c[(r["dataset"], r["label"])].append(r["central_epsilon"])
    lines += [
        "",
        "Per dataset at the target: F1 (mean over repeats), and the ε₀ the target chose (TAPS's "
        "and TAP's range over repeats; the reference's, whose group is a whole party) and "
        "TAPS's ε_c as its privacy block states it (the tighter bound of its groups):",
        "",
        "| dataset | TAPS | TAP | better tuned baseline | reference | ε₀ TAPS | ε₀ TAP | "
        "ε₀ reference | ε_c TAPS (max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in datasets:
        c = central[ds]

        def rng(label: str, ds: str = ds) -> str:
            v = eps0[(ds, label)]
            return f"{min(v):.2f}" if min(v) == max(v) else f"{min(v):.2f}–{max(v):.2f}"

        lines.append(
            f"| {ds} | {c['TAPS']:.2f} | {c['TAP']:.2f} | {c[COLUMNS[2]]:.2f} | "
            f"{c[REFERENCE]:.2f} | {rng('TAPS')} | {rng('TAP')} | {rng(REFERENCE)} | "
            f"{max(eps_c[(ds, 'TAPS')]):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (args.central / "central_column.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
