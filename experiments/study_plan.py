"""The study's config and plan: which runs make up a study (datasets × points × labels, the
tuned baselines' η sweeps, ablations, the reference) and how they are grouped for the workers
(one dataset instance a group). The runner is ``experiments/study.py``; its docstring describes
the config tables."""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study_io import DEFAULT_ETA, REFERENCE

# a dataset's kind: fedhh simulate's datasets, or party files (files = [...], one per party)
KINDS = ("zipf", "aol", "babynames", "urls", "files")
OWN_PARTIES = ("babynames", "files")  # kinds whose parties are their own (not the grid's)


@dataclass(frozen=True)
class Run:
    """One row of runs.csv to produce: a mechanism (or the reference) at one point."""

    label: str
    family: str
    epsilon: float
    k: int
    params: str  # JSON of the MechanismParams overrides ("" for the reference)
    eta: int | None = None


@dataclass
class Group:
    """The runs that share one dataset instance (a worker loads it once)."""

    dataset: str
    parties: int
    rep: int
    runs: list[Run] = field(default_factory=list)


def load_config(path: Path) -> dict[str, Any]:
    """The study config; a missing table or an unknown key stops with a clear message."""
    with path.open("rb") as fh:
        cfg = tomllib.load(fh)
    for key in ("study", "mechanisms", "datasets"):
        if key not in cfg:
            raise SystemExit(f"study config {path}: missing [{key}] table")
    if ("grid" in cfg) == ("sweeps" in cfg or "defaults" in cfg):
        raise SystemExit(f"study config {path}: give [grid], or [defaults] with [sweeps]")
    known = {"study", "grid", "defaults", "sweeps", "mechanisms", "tuning", "compare"}
    unknown = set(cfg) - known - {"reference", "ablations", "datasets", "params"}
    if unknown:
        raise SystemExit(f"study config {path}: unknown tables {sorted(unknown)}")
    for name, spec in cfg["datasets"].items():
        if spec.get("kind") not in KINDS:
            raise SystemExit(f"dataset {name!r}: kind must be one of {', '.join(KINDS)}")
        if (spec["kind"] == "files") != bool(spec.get("files")):
            raise SystemExit(f"dataset {name!r}: files = [...] goes with kind = 'files'")
    for label in cfg.get("tuning", {}).get("labels", []):
        if label not in cfg["mechanisms"]:
            raise SystemExit(f"[tuning] label {label!r} is not in [mechanisms]")
    return cfg


def points(cfg: dict[str, Any]) -> list[tuple[float, int, int]]:
    """Every (ε, k, M) point: the grid's product, or the default point and the sweeps."""
    if "grid" in cfg:
        g = cfg["grid"]
        return [
            (float(e), int(k), int(m))
            for e, k, m in itertools.product(g["epsilon"], g["k"], g.get("parties", [8]))
        ]
    d = cfg["defaults"]
    base = (float(d["epsilon"]), int(d["k"]), int(d["parties"]))
    out = [base]
    for var, values in cfg.get("sweeps", {}).items():
        if var not in ("epsilon", "k", "parties"):
            raise SystemExit(f"unknown sweep {var!r} (epsilon, k, parties)")
        for v in values:
            e, k, m = base
            pt = (float(v), k, m) if var == "epsilon" else (e, int(v), m)
            if var == "parties":
                pt = (e, k, int(v))
            if pt not in out:
                out.append(pt)
    return out


def _params_json(overrides: dict[str, Any]) -> str:
    return json.dumps(overrides, sort_keys=True)


def runs_at(cfg: dict[str, Any], epsilon: float, k: int) -> list[Run]:
    """The runs of one point: reference, mechanisms, tuned-baseline sweeps, ablations."""
    out: list[Run] = []
    if int(cfg.get("reference", {}).get("draws", 20)) > 0:
        out.append(Run(REFERENCE, REFERENCE, epsilon, k, ""))
    for label, over in cfg["mechanisms"].items():
        out.append(Run(label, label, epsilon, k, _params_json(over), over.get("eta")))
    tuning = cfg.get("tuning", {})
    full_at = tuning.get("k")  # the whole sweep at these k only (all k when absent)
    etas = tuning.get("eta", []) if full_at is None or k in full_at else tuning.get("eta_other", [])
    for label in tuning.get("labels", []):
        default_eta = cfg["mechanisms"][label].get("eta", DEFAULT_ETA)
        for eta in etas:
            if int(eta) == int(default_eta):
                continue  # the baseline's own run is this η (the summary counts it)
            over = {**cfg["mechanisms"][label], "eta": int(eta)}
            out.append(Run(f"{label} η={eta}", label, epsilon, k, _params_json(over), int(eta)))
    abl = cfg.get("ablations", {})
    where = abl.get("points", {})
    if epsilon in [float(e) for e in where.get("epsilon", [])] and k in where.get("k", []):
        for label, over in abl.get("runs", {}).items():
            out.append(Run(label, label, epsilon, k, _params_json(over), over.get("eta")))
    return out


def _size(spec: dict[str, Any], cfg: dict[str, Any]) -> int:
    """Users of a dataset, roughly: the cost of its runs grows with it."""
    full = {"babynames": 8_969_719, "aol": 657_427}.get(spec["kind"])
    if full is None:
        return int(spec.get("users", cfg["study"].get("users", 200_000)))
    return int(spec.get("max_users") or full)


def plan(cfg: dict[str, Any], only: Sequence[str] = ()) -> list[Group]:
    """All groups, repeat-major (a partial study covers every dataset); within a repeat the
    largest datasets first (their groups take longest: the small ones then fill the other
    workers); runs ordered by point."""
    groups = []
    by_size = sorted(cfg["datasets"].items(), key=lambda kv: -_size(kv[1], cfg))
    for rep in range(int(cfg["study"]["repeats"])):
        for name, spec in by_size:
            if only and name not in only:
                continue
            pts = points(cfg)
            ms = sorted({m for _, _, m in pts})
            if spec["kind"] in OWN_PARTIES:
                ms = ms[:1]  # its parties are its own
            for m in ms:
                g = Group(name, m, rep)
                for e, k, mm in pts:
                    if mm == m or spec["kind"] in OWN_PARTIES:
                        g.runs.extend(r for r in runs_at(cfg, e, k) if r not in g.runs)
                groups.append(g)
    return groups


def only_labels(groups: list[Group], labels: Sequence[str]) -> list[Group]:
    """The groups with only the runs whose label or family is one of ``labels`` (empty groups
    dropped); an unknown label is an error, so a typo does not silently run nothing."""
    known = {x for g in groups for r in g.runs for x in (r.label, r.family)}
    unknown = [x for x in labels if x not in known]
    if unknown:
        raise SystemExit(f"unknown labels {unknown}; the plan has {sorted(known)}")
    want = set(labels)
    out = []
    for g in groups:
        runs = [r for r in g.runs if r.label in want or r.family in want]
        if runs:
            out.append(Group(g.dataset, g.parties, g.rep, runs))
    return out


def row_key(row: dict[str, Any]) -> tuple:
    return (
        row["dataset"],
        row["label"],
        float(row["epsilon"]),
        int(row["k"]),
        int(row["parties"]),
        int(row["rep"]),
        row.get("params", "") or "",
    )


def pending(groups: list[Group], done: set[tuple]) -> list[Group]:
    """The groups with their runs not yet in runs.csv (empty groups dropped)."""
    out = []
    for g in groups:
        todo = [
            r
            for r in g.runs
            if (g.dataset, r.label, r.epsilon, r.k, g.parties, g.rep, r.params) not in done
        ]
        if todo:
            out.append(Group(g.dataset, g.parties, g.rep, todo))
    return out
