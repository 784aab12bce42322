"""The study: PEM-Local, PEM-Global, TAP, TAPS and ablations over datasets and sweeps.

Config (TOML) in, CSV tables and PNG plots out. Every run is seeded: repeat r uses data seed r
and run seed r, so a point is reproducible on its own.

Reproduce:
    .venv/bin/python experiments/study.py experiments/configs/study.toml --jobs 2
    .venv/bin/python experiments/study.py experiments/configs/quick.toml   # a small check

Outputs in the config's ``out`` folder: ``runs.csv`` (one row per run), ``summary.csv`` (mean
and standard deviation per point), ``summary.md`` (the tables quoted in the README) and
``<dataset>_<sweep>.png`` plots (F1 and NCR against the swept value, one line per mechanism).
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import sys
import time
import tomllib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("f1", "precision", "recall", "ncr", "are")
COSTS = ("rounds", "bytes_to_parties", "bytes_to_coordinator", "hash_evaluations", "wall_seconds")


@dataclass(frozen=True)
class Job:
    dataset: str
    sweep: str
    x: float
    label: str
    rep: int
    epsilon: float
    k: int
    parties: int


def load_config(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        cfg = tomllib.load(fh)
    for key in ("study", "defaults", "mechanisms", "datasets"):
        if key not in cfg:
            raise SystemExit(f"study config {path}: missing [{key}] table")
    return cfg


def plan_jobs(cfg: dict[str, Any]) -> list[Job]:
    """Every (dataset, sweep point, mechanism, repeat), the default point shared by the sweeps;
    ablations run at the default point only."""
    d = cfg["defaults"]
    reps = int(cfg["study"]["repeats"])
    jobs: dict[tuple, Job] = {}
    for ds in cfg["datasets"]:
        points = [("default", 0.0, d["epsilon"], d["k"], d["parties"])]
        for var, values in cfg.get("sweeps", {}).items():
            for v in values:
                eps, k, m = d["epsilon"], d["k"], d["parties"]
                if var == "epsilon":
                    eps = float(v)
                elif var == "k":
                    k = int(v)
                elif var == "parties":
                    m = int(v)
                else:
                    raise SystemExit(f"unknown sweep {var!r} (epsilon, k, parties)")
                points.append((var, float(v), eps, k, m))
        labels = list(cfg["mechanisms"])
        for sweep, x, eps, k, m in points:
            for label in labels + (list(cfg.get("ablations", {})) if sweep == "default" else []):
                for rep in range(reps):
                    job = Job(ds, sweep, x, label, rep, float(eps), int(k), int(m))
                    jobs[(ds, sweep, x, label, rep)] = job
    return sorted(jobs.values(), key=lambda j: (j.dataset, j.parties, j.rep, j.sweep, j.x, j.label))


@functools.lru_cache(maxsize=4)
def _dataset(name: str, spec_items: tuple, parties: int, rep: int, users: int) -> Any:
    from fedhh.datasets import load_aol, synthetic_zipf

    spec = dict(spec_items)
    kind = spec.pop("kind")
    if kind == "aol":
        return load_aol(
            spec.get("path"),
            n_parties=parties,
            split=spec.get("split", "dirichlet"),
            alpha=spec.get("alpha", 0.5),
            sizes=spec.get("sizes", "equal"),
            seed=rep,
            max_users=spec.get("max_users"),
        )
    return synthetic_zipf(
        int(spec.get("users", users)),
        parties,
        m=int(spec.get("m", 32)),
        n_items=int(spec.get("items", 10_000)),
        s=float(spec.get("s", 1.1)),
        split=spec.get("split", "dirichlet"),
        alpha=float(spec.get("alpha", 0.5)),
        sizes=spec.get("sizes", "equal"),
        seed=rep,
    )


def run_job(job: Job, cfg: dict[str, Any]) -> dict[str, Any]:
    from fedhh.engine import simulate
    from fedhh.mechanisms import MechanismParams

    ds_spec = cfg["datasets"][job.dataset]
    ds = _dataset(
        job.dataset,
        tuple(sorted(ds_spec.items())),
        job.parties,
        job.rep,
        int(cfg["study"]["users"]),
    )
    overrides = dict(cfg["mechanisms"].get(job.label) or cfg["ablations"][job.label])
    params = MechanismParams(
        epsilon=job.epsilon, k=job.k, m=ds.m, seed=job.rep, **{**cfg.get("params", {}), **overrides}
    )
    t0 = time.perf_counter()
    res = simulate(ds.parties, ds.codec, params)
    wall = time.perf_counter() - t0
    sc = ds.evaluate(res.items, res.estimates, job.k)
    row: dict[str, Any] = {**job.__dict__}
    row.update({m: getattr(sc, m) for m in METRICS})
    row.update({c: res.cost[c] for c in COSTS if c != "wall_seconds"})
    row["wall_seconds"] = wall
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["sweep"], float(r["x"]), r["label"])].append(r)
    out = []
    for (ds, sweep, x, label), rs in sorted(groups.items()):
        s: dict[str, Any] = {"dataset": ds, "sweep": sweep, "x": x, "label": label, "n": len(rs)}
        for key in METRICS + COSTS:
            vals = np.array([float(r[key]) for r in rs], dtype=float)
            s[f"{key}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            s[f"{key}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else math.nan
        out.append(s)
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(summary: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    d = cfg["defaults"]
    lines = [
        f"# Study results ({cfg['study'].get('title', cfg['study']['name'])})",
        "",
        f"Default point: ε = {d['epsilon']}, k = {d['k']}, M = {d['parties']} parties, "
        f"{cfg['study']['repeats']} seeded repeats per point (mean ± std).",
        "",
    ]
    by_ds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by_ds[s["dataset"]].append(s)
    for ds, rows in by_ds.items():
        lines += [
            f"## {ds}",
            "",
            "| mechanism | F1 | NCR | ARE | rounds | KB to parties | KB to coordinator | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in [r for r in rows if r["sweep"] == "default"]:
            lines.append(
                f"| {s['label']} | {_fmt(s['f1_mean'], s['f1_std'])} | "
                f"{_fmt(s['ncr_mean'], s['ncr_std'])} | {_fmt(s['are_mean'], s['are_std'])} | "
                f"{s['rounds_mean']:.0f} | {s['bytes_to_parties_mean'] / 1e3:.1f} | "
                f"{s['bytes_to_coordinator_mean'] / 1e3:.1f} | {s['wall_seconds_mean']:.2f} |"
            )
        for sweep in sorted({r["sweep"] for r in rows} - {"default"}):
            pts = sorted({r["x"] for r in rows if r["sweep"] == sweep})
            labels = list(cfg["mechanisms"])
            lines += [
                "",
                f"F1 against {sweep}:",
                "",
                f"| {sweep} | " + " | ".join(labels) + " |",
                "|---|" + "---|" * len(labels),
            ]
            for x in pts:
                cells = []
                for lab in labels:
                    hit = [
                        r for r in rows if r["sweep"] == sweep and r["x"] == x and r["label"] == lab
                    ]
                    cells.append(_fmt(hit[0]["f1_mean"], hit[0]["f1_std"], 2) if hit else "")
                lines.append(f"| {x:g} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(standing(summary, cfg))
    return "\n".join(lines) + "\n"


def standing(summary: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    """Where TAP and TAPS stand against the better baseline at every point (F1 difference)."""
    ours = [lab for lab in cfg["mechanisms"] if lab in ("TAP", "TAPS")]
    base = [lab for lab in cfg["mechanisms"] if lab.startswith("PEM")]
    if not ours or not base:
        return ""
    idx = {(s["dataset"], s["sweep"], s["x"], s["label"]): s for s in summary}
    points = sorted({(s["dataset"], s["sweep"], s["x"]) for s in summary})
    lines = [
        "## TAP and TAPS against the better baseline",
        "",
        "F1 difference to the better of PEM-Local and PEM-Global at each point; a point counts as "
        "a win or a loss when the difference exceeds twice its standard error over the repeats.",
        "",
        "| mechanism | points | wins | ties | losses | mean ΔF1 | worst ΔF1 (where) |",
        "|---|---|---|---|---|---|---|",
    ]
    for lab in ours:
        diffs = []
        for p in points:
            rows_b = [idx[(*p, b)] for b in base if (*p, b) in idx]
            if (*p, lab) not in idx or not rows_b:
                continue
            best = max(rows_b, key=lambda r: r["f1_mean"])
            me = idx[(*p, lab)]
            se = math.sqrt((me["f1_std"] ** 2 + best["f1_std"] ** 2) / max(me["n"], 1))
            diffs.append((me["f1_mean"] - best["f1_mean"], se, p))
        if not diffs:
            continue
        wins = sum(d > 2 * se for d, se, _ in diffs)
        losses = sum(d < -2 * se for d, se, _ in diffs)
        worst = min(diffs, key=lambda t: t[0])
        where = f"{worst[2][0]}, {worst[2][1]} = {worst[2][2]:g}"
        lines.append(
            f"| {lab} | {len(diffs)} | {wins} | {len(diffs) - wins - losses} | {losses} | "
            f"{np.mean([d for d, _, _ in diffs]):+.3f} | {worst[0]:+.3f} ({where}) |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    labels = list(cfg["mechanisms"])
    for ds in sorted({s["dataset"] for s in summary}):
        for sweep in sorted({s["sweep"] for s in summary if s["dataset"] == ds} - {"default"}):
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
            for ax, metric in zip(axes, ("f1", "ncr"), strict=True):
                for lab in labels:
                    pts = sorted(
                        (s["x"], s[f"{metric}_mean"], s[f"{metric}_std"])
                        for s in summary
                        if s["dataset"] == ds and s["sweep"] == sweep and s["label"] == lab
                    )
                    if pts:
                        xs, ys, es = zip(*pts, strict=True)
                        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=lab)
                ax.set_xlabel(sweep)
                ax.set_ylabel(metric.upper())
                ax.set_ylim(-0.02, 1.02)
                if sweep in ("parties", "k"):
                    ax.set_xscale("log", base=2)
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=8)
            fig.suptitle(f"{ds}: F1 and NCR against {sweep}")
            fig.tight_layout()
            path = out / f"{ds}_{sweep}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            made.append(path)
    return made


def _worker_init() -> None:
    os.environ["FEDHH_THREADS"] = "1"


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the fedhh study from a config file.")
    ap.add_argument("config", type=Path)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, help="override the config's repeats")
    ap.add_argument("--out", type=Path, help="override the config's output folder")
    ap.add_argument(
        "--summarise-only", action="store_true", help="rebuild tables and plots from runs.csv"
    )
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.repeats is not None:
        cfg["study"]["repeats"] = args.repeats
    out = args.out or Path(cfg["study"].get("out", f"experiments/results/{cfg['study']['name']}"))
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        with (out / "runs.csv").open() as fh:
            rows = [_typed(r) for r in csv.DictReader(fh)]
        summary = summarise(rows)
        write_csv(out / "summary.csv", summary)
        (out / "summary.md").write_text(markdown(summary, cfg))
        print(f"rebuilt summary and {len(plot(summary, cfg, out))} plots in {out}")
        return
    planned = plan_jobs(cfg)
    # A sweep's default value is the default point: run each distinct configuration once.
    unique: dict[tuple, Job] = {}
    for j in planned:
        unique.setdefault(_config_key(j), j)
    jobs = list(unique.values())
    print(f"{len(jobs)} runs, {args.jobs} worker(s) → {out}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if args.jobs <= 1:
        _worker_init()
        for i, job in enumerate(jobs):
            rows.append(run_job(job, cfg))
            _progress(i + 1, len(jobs), t0)
    else:
        with ProcessPoolExecutor(args.jobs, initializer=_worker_init) as ex:
            # Chunks of consecutive jobs share a dataset (the worker's cache) and report progress.
            chunks = [jobs[i : i + 24] for i in range(0, len(jobs), 24)]
            futs = [ex.submit(_run_many, chunk, cfg) for chunk in chunks]
            for fut in as_completed(futs):
                rows.extend(fut.result())
                _progress(len(rows), len(jobs), t0)
    by_key = {_config_key(Job(**{f: r[f] for f in Job.__dataclass_fields__})): r for r in rows}
    rows = [{**by_key[_config_key(j)], **j.__dict__} for j in planned]
    rows.sort(key=lambda r: (r["dataset"], r["sweep"], r["x"], r["label"], r["rep"]))
    summary = summarise(rows)
    write_csv(out / "runs.csv", rows)
    write_csv(out / "summary.csv", summary)
    (out / "summary.md").write_text(markdown(summary, cfg))
    plots = plot(summary, cfg, out)
    print(
        f"\nwrote {out / 'runs.csv'}, summary.csv, summary.md and {len(plots)} plots "
        f"in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    print(f"reproduce: .venv/bin/python experiments/study.py {args.config}", file=sys.stderr)


def _typed(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for key in ("x", "epsilon", *METRICS, *COSTS):
        out[key] = float(row[key]) if row[key] not in ("", "nan") else math.nan
    for key in ("rep", "k", "parties"):
        out[key] = int(row[key])
    return out


def _config_key(j: Job) -> tuple:
    return (j.dataset, j.epsilon, j.k, j.parties, j.label, j.rep)


def _run_many(jobs: list[Job], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [run_job(j, cfg) for j in jobs]


def _progress(done: int, total: int, t0: float) -> None:
    el = time.perf_counter() - t0
    eta = el / done * (total - done) if done else 0
    print(f"\r{done}/{total} runs, {el:.0f} s elapsed, ~{eta:.0f} s left", end="", file=sys.stderr)


if __name__ == "__main__":
    main()
