"""The study's runs file and progress line (``experiments/study.py``).

``runs.csv`` has one row per finished run (columns ``FIELDS``); the runner appends and flushes a
row as soon as a run finishes, so an interrupted study loses nothing it finished, and reads the
file back to skip those runs on restart.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from fedhh.core.progress import StatusLine
from fedhh.mechanisms import MechanismParams

METRICS = ("f1", "precision", "recall", "ncr", "are")  # of the answer under the noise bar
# The same run answered with its plain top-k (answer_alpha = 0; post-processing of the same
# estimates, so one run gives both answers): every mechanism is compared under both rules.
TOPK_METRICS = tuple(f"topk_{m}" for m in METRICS)
COSTS = ("rounds", "bytes_to_parties", "bytes_to_coordinator", "hash_evaluations")
FIELDS = (
    "dataset",
    "label",
    "family",
    "eta",
    "epsilon",
    "k",
    "parties",
    "rep",
    "n_parties",
    "users",
    *METRICS,
    *TOPK_METRICS,
    *COSTS,
    "wall_seconds",
    "params",
    "finished",
    "epsilon0",  # the ε₀ the run perturbed at (a central target chooses it; else ε)
    "central_epsilon",  # the run's ε_c towards the coordinator (its privacy block)
)
OLD_FIELDS = FIELDS[:-2]  # runs files written before ε₀ and ε_c were recorded
REFERENCE = "reference"  # the label of the known-domain reference rows
DEFAULT_ETA = MechanismParams().eta  # what a baseline run without "eta" uses


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The rows of runs.csv (typed), [] if it does not exist yet."""
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"dataset", "label", "epsilon", "k", "rep", "f1"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"{path}: not a runs file of this runner (no {sorted(missing)})")
        return [_typed(r) for r in reader]


def _typed(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for key in ("epsilon", *METRICS, *TOPK_METRICS, *COSTS, "wall_seconds", *FIELDS[-2:]):
        v = row.get(key, "")
        out[key] = float(v) if v not in ("", "nan", None) else math.nan
    for key in ("k", "rep"):
        out[key] = int(row[key])
    out["parties"] = int(row.get("parties") or 8)
    out["eta"] = int(float(row["eta"])) if row.get("eta") not in ("", None) else None
    out.setdefault("family", row["label"])
    out["family"] = out["family"] or row["label"]
    out.setdefault("params", "")
    return out


def top_k_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as answered with the plain top-k (their ``topk_*`` scores as the metrics); []
    for a runs file written before both answers were recorded."""
    if not rows or all(math.isnan(r.get("topk_f1", math.nan)) for r in rows):
        return []
    return [{**r, **{m: r[f"topk_{m}"] for m in METRICS}} for r in rows]


class RunsFile:
    """runs.csv opened for appending: one flushed line per finished run."""

    def __init__(self, path: Path) -> None:
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            if tuple(header) not in (FIELDS, OLD_FIELDS):
                raise SystemExit(
                    f"{path} has other columns than this runner writes; move it away or use --out"
                )
        columns = FIELDS if new else tuple(header)  # an old file keeps its columns
        self.fh = path.open("a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=columns, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.fh.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class Progress:
    """``done/total runs, elapsed, ETA`` on the status line (:mod:`fedhh.core.progress`; off a
    terminal a line every ``every`` seconds, and the last)."""

    def __init__(self, total: int, every: float = 30.0) -> None:
        self.total, self.done = total, 0
        self.t0 = time.perf_counter()
        self.line = StatusLine(every=every)

    def step(self, row: dict[str, Any]) -> None:
        self.done += 1
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done)
        self.line.show(
            f"{self.done}/{self.total} runs ({100 * self.done / max(self.total, 1):.1f}%), "
            f"{_hms(el)} elapsed, ETA {_hms(eta)} · last: {row['dataset']} {row['label']} "
            f"ε={row['epsilon']:g} k={row['k']} rep {row['rep']} "
            f"({float(row.get('wall_seconds', 0.0)):.1f} s)",
            final=self.done >= self.total,
        )


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
