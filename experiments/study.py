"""The study: TAP, TAPS, the baselines at their defaults and at their best η, ablations and the
known-domain reference, over datasets × ε × k (× M), with seeded repeats.

Config (TOML) in; ``runs.csv``, ``summary.csv``, ``summary.md`` and PNG plots out. Repeat r uses
data seed r and run seed r, so every run is reproducible on its own.

Reproduce (from the project root):
    .venv/bin/python experiments/study.py experiments/configs/study.toml --jobs 2
    .venv/bin/python experiments/study.py experiments/configs/quick.toml --jobs 2  # minutes
    .venv/bin/python experiments/study.py CONFIG --summarise-only    # tables and plots again
    .venv/bin/python experiments/study.py CONFIG --epsilon 0.5,1,2 --k 16   # part of the grid
    .venv/bin/python experiments/study.py CONFIG --labels reference,PEM-Local  # some runs only

The runner is **resumable**: every finished run is appended to ``runs.csv`` at once, and a
restart skips the runs already there (same dataset, label, ε, k, M, repeat and parameters), so
an interrupted study continues where it stopped. Jobs are grouped by (dataset, M, repeat): a
worker loads each dataset once and runs every point and mechanism on it. ``--jobs N`` runs N
worker processes with ``FEDHH_THREADS=1`` each. A progress line with the ETA goes to stderr.
Which runs make up the study is ``study_plan.py``; runs.csv is ``study_io.py``; the tables and
plots are ``study_report.py``.

Config tables (see ``experiments/configs/study.toml``):

* ``[study]``: ``name``, ``title``, ``repeats``, ``users`` (synthetic users), ``out``;
* ``[grid]``: ``epsilon``, ``k``, ``parties`` lists; every combination is a point. (Or the older
  ``[defaults]`` + ``[sweeps]``: a default point and one-at-a-time sweeps around it.)
* ``[mechanisms]``: label → ``MechanismParams`` fields, run at every point;
* ``[tuning]``: ``labels`` (baselines of ``[mechanisms]``) and ``eta`` (the sweep): each baseline
  also runs as ``"<label> η=<e>"`` for every e other than its own η (its own run counts as
  that η), and the summary's ``"<label> tuned"`` is the η with the best mean F1 at each point
  (which η won is recorded); with ``k`` (a list) the whole sweep runs at those k only and
  ``eta_other`` (a shorter list) at the other k;
* ``[compare]``: ``ours`` (default ``["TAPS", "TAP"]``): compared with the better tuned baseline;
* ``[reference]``: ``draws`` (default 20): the known-domain reference's draws per repeat
  (0: none);
* ``[ablations]``: ``points`` (``epsilon`` and ``k`` lists: where ablations run) and ``runs``
  (label → ``MechanismParams`` fields);
* ``[datasets.<name>]``: ``kind`` = ``zipf`` (``users``, ``items``, ``s``, ``m``, ``split``,
  ``alpha``, ``sizes``), ``aol`` (``split``, ``alpha``, ``sizes``, ``max_users``, ``path``) or
  ``babynames`` (``party_by``, ``years``, ``max_users``, ``item_bytes`` and ``truncate``: whole
  names by default, ``path``; its parties are its own: the grid's M does not apply), ``urls``
  (``users``, ``items``, ``s``, ``split``, ``alpha``, ``sizes``) or ``files`` (``files``: one
  party file each, paths from the working directory, with ``item_bytes`` or ``item_bits`` and
  ``truncate``; its parties are its own). Any other key is a ``DatasetParams`` field: a dataset
  is loaded exactly as ``fedhh simulate`` loads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing as mp
import os
import queue
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_io import (
    COSTS,
    METRICS,
    REFERENCE,
    TOPK_METRICS,
    Progress,
    RunsFile,
    read_runs,
    top_k_rows,
)
from study_plan import Group, load_config, only_labels, pending, plan, row_key
from study_report import summarise, write_outputs

# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


# a study dataset's keys that name a DatasetParams field differently (the rest are the same)
STUDY_KEYS = {"kind": "dataset", "path": "data_path", "m": "bits", "s": "zipf_s"}


@functools.lru_cache(maxsize=1)
def _dataset(name: str, spec_json: str, parties: int, rep: int, users: int) -> Any:
    """The federation of a study dataset, loaded as ``fedhh simulate`` loads it
    (:func:`fedhh.run.settings.load_dataset`): ``kind`` is any of its datasets (zipf, aol,
    babynames, urls) or ``files`` (``files = [...]``: one party file each, with ``item_bytes``
    or ``item_bits``; paths relative to the working directory)."""
    from fedhh.run.settings import DatasetParams, coerce, load_dataset

    spec = json.loads(spec_json)
    files = [Path(f).expanduser() for f in spec.pop("files", [])]
    if spec.get("kind") == "files":
        spec.pop("kind")
        if not files:
            raise SystemExit(f"dataset {name}: kind = 'files' needs files = [...]")
    fields = {STUDY_KEYS.get(k, k): v for k, v in spec.items()}
    if isinstance(fields.get("years"), list):  # [first, last]
        fields["years"] = "-".join(str(y) for y in fields["years"])
    if fields.get("dataset", "zipf") != "babynames" and not files:
        fields["parties"] = parties  # babynames and party files bring their own parties
    fields.setdefault("users", users)
    fields["data_seed"] = rep
    d = DatasetParams(**{k: coerce(DatasetParams, k, v) for k, v in fields.items()})
    return load_dataset(d, files or None)


def dataset_for(cfg: dict[str, Any], name: str, parties: int, rep: int) -> Any:
    """The config's dataset ``name`` split over ``parties`` with data seed ``rep`` (the last one
    loaded is cached: a worker runs a group's runs on one instance)."""
    spec = json.dumps(cfg["datasets"][name], sort_keys=True)
    return _dataset(name, spec, parties, rep, int(cfg["study"].get("users", 200_000)))


def _resolved(params_json: str) -> str:
    """The run's parameters with every default filled in (runs with equal ones are one run)."""
    from fedhh.mechanisms import MechanismParams

    fields = {f.name: f.default for f in dataclasses.fields(MechanismParams)}
    fields.update(json.loads(params_json))
    for f in ("epsilon", "k", "m", "seed"):
        fields.pop(f, None)
    return json.dumps(fields, sort_keys=True, default=str)


def reference_epsilon(cfg: dict[str, Any], ds: Any, epsilon: float) -> tuple[float, float]:
    """The reference's ε₀ and its ε_c (FMT's bound at the smallest party: a party sums all its
    users at once). With a central target in ``[params]`` (``central_epsilon``), ε₀ is the
    largest up to ``epsilon`` that meets it, as admission chooses a mechanism's; else
    ``epsilon``."""
    from fedhh.core.privacy import DEFAULT_DELTA, shuffle_epsilon
    from fedhh.protocol.admission import largest_epsilon

    over = cfg.get("params", {})
    delta = float(over.get("central_delta", DEFAULT_DELTA))
    floor = int(min(ds.party_sizes))
    eps0 = float(epsilon)
    if over.get("central_epsilon") is not None:
        target = float(over["central_epsilon"])
        chosen = largest_epsilon(floor, target, delta, eps0)
        if chosen is None:
            raise ValueError(f"no ε₀ meets ε_c ≤ {target:g} at a party of {floor:,} users")
        eps0 = chosen
    return eps0, shuffle_epsilon(floor, eps0, delta)


def run_group(group: Group, cfg: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> int:
    """Run every run of a group on one dataset instance; emit one message per run."""
    from fedhh.mechanisms import MechanismParams
    from fedhh.run.engine import simulate
    from fedhh.run.result import answer_at

    ds = dataset_for(cfg, group.dataset, group.parties, group.rep)
    draws = int(cfg.get("reference", {}).get("draws", 20))
    # the reference answers under the same noise bar as the mechanisms (their default α)
    alpha = float(MechanismParams(**cfg.get("params", {})).resolved().answer_alpha or 0.0)
    base = {"dataset": group.dataset, "parties": group.parties, "rep": group.rep}
    shared: dict[tuple, dict[str, Any]] = {}
    sent = 0
    for run in group.runs:
        row: dict[str, Any] = {
            **base,
            "label": run.label,
            "family": run.family,
            "eta": run.eta if run.eta is not None else "",
            "epsilon": run.epsilon,
            "k": run.k,
            "n_parties": ds.n_parties,
            "users": ds.n_users,
            "params": run.params,
        }
        t0 = time.perf_counter()
        try:
            if run.label == REFERENCE:
                seed = [group.rep, round(run.epsilon * 1000), run.k]
                eps0, eps_c = reference_epsilon(cfg, ds, run.epsilon)
                row.update(epsilon0=eps0, central_epsilon=eps_c)
                for answer_alpha, names in ((alpha, METRICS), (0.0, TOPK_METRICS)):
                    ref = ds.reference(
                        eps0,
                        run.k,
                        np.random.default_rng(seed),  # the same draws for both answers
                        repeats=draws,
                        answer_alpha=answer_alpha,
                    )
                    row.update({n: ref[m] for n, m in zip(names, METRICS, strict=True)})
                row["params"] = ""
            else:
                over = json.loads(run.params)
                same = (run.epsilon, run.k, _resolved(run.params))
                if same in shared:  # e.g. a baseline's default η is also in its η sweep
                    result = shared[same]
                else:
                    params = MechanismParams(
                        epsilon=run.epsilon,
                        k=run.k,
                        m=ds.m,
                        seed=group.rep,
                        **{**cfg.get("params", {}), **over},
                    )
                    # run with the top-k answer and cut it at the run's bar afterwards: the
                    # same estimates give both answers (answer_at)
                    top_k_params = dataclasses.replace(params, answer_alpha=0.0)
                    top = simulate(ds.parties, ds.codec, top_k_params)
                    res = answer_at(top, float(params.resolved().answer_alpha or 0.0))
                    result = {}
                    for names, answer in ((METRICS, res), (TOPK_METRICS, top)):
                        sc = ds.evaluate(answer.items, answer.estimates, run.k)
                        result.update(
                            {n: getattr(sc, m) for n, m in zip(names, METRICS, strict=True)}
                        )
                    result.update({c: res.cost[c] for c in COSTS})
                    result["epsilon0"] = res.params["epsilon"]  # a central target's choice
                    result["central_epsilon"] = res.privacy["central"]["epsilon"]
                    result["wall_seconds"] = time.perf_counter() - t0
                    result["eta"] = params.eta
                    shared[same] = result
                row.update(result)
            row.setdefault("wall_seconds", time.perf_counter() - t0)
            row["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            emit({"kind": "row", "row": row})
        except Exception as exc:  # one failing rule must not end a study of hours
            emit({"kind": "error", "row": row, "error": f"{type(exc).__name__}: {exc}"})
        sent += 1
    return sent


_QUEUE: Any = None


def _init_worker(q: Any) -> None:
    global _QUEUE
    _QUEUE = q
    os.environ["FEDHH_THREADS"] = "1"


def _run_group_in_worker(group: Group, cfg: dict[str, Any]) -> int:
    return run_group(group, cfg, _QUEUE.put)


def execute(groups: list[Group], cfg: dict[str, Any], out: Path, jobs: int) -> int:
    """Run the groups (in ``jobs`` processes), appending each finished run to runs.csv.
    Returns the number of failed runs (they are not written, so a restart retries them)."""
    total = sum(len(g.runs) for g in groups)
    runs = RunsFile(out / "runs.csv")
    progress = Progress(total)
    failures = 0

    def handle(msg: dict[str, Any]) -> None:
        nonlocal failures
        if msg["kind"] == "row":
            runs.write(msg["row"])
        else:
            failures += 1
            r = msg["row"]
            text = (
                f"{r['dataset']} {r['label']} ε={r['epsilon']:g} k={r['k']} M={r['parties']} "
                f"rep {r['rep']}: {msg['error']}"
            )
            with (out / "errors.log").open("a") as fh:
                fh.write(text + "\n")
            sys.stderr.write(f"\nrun failed: {text}\n")
        progress.step(msg["row"])

    try:
        if jobs <= 1:
            os.environ["FEDHH_THREADS"] = "1"
            for g in groups:
                run_group(g, cfg, handle)
        else:
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            expected = 0
            received = 0
            with ProcessPoolExecutor(
                jobs, mp_context=ctx, initializer=_init_worker, initargs=(q,)
            ) as ex:
                futs: list[Future[int]] = [ex.submit(_run_group_in_worker, g, cfg) for g in groups]
                live = set(futs)
                while live or received < expected:
                    try:
                        handle(q.get(timeout=0.5))
                        received += 1
                    except queue.Empty:
                        pass
                    for f in [f for f in live if f.done()]:
                        live.discard(f)
                        exc = f.exception()
                        if exc is not None:  # a worker died: what it finished is written
                            raise SystemExit(f"\na worker failed: {exc!r}; rerun to resume")
                        expected += f.result()
    finally:
        runs.close()
        progress.line.keep()
    return failures


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run the fedhh study from a config file (resumable; see the module doc)."
    )
    ap.add_argument("config", type=Path)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--repeats", type=int, help="override the config's repeats")
    ap.add_argument("--out", type=Path, help="override the config's output folder")
    ap.add_argument("--datasets", help="only these datasets (comma-separated names)")
    ap.add_argument("--epsilon", help="only these ε of the grid (comma-separated), e.g. 0.5,1,2")
    ap.add_argument("--k", help="only these k of the grid (comma-separated), e.g. 16")
    ap.add_argument(
        "--labels",
        help="only the runs of these labels or families (comma-separated), e.g. "
        "reference,PEM-Local,PEM-Global (a family takes its η sweep along)",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    ap.add_argument(
        "--summarise-only", action="store_true", help="rebuild tables and plots from runs.csv"
    )
    argv = list(sys.argv[1:] if argv is None else argv)  # for the reproduce line, flags and all
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.repeats is not None:
        cfg["study"]["repeats"] = args.repeats
    for key, conv in (("epsilon", float), ("k", int)):
        wanted = getattr(args, key)
        if wanted and "grid" in cfg:  # run part of the grid first (the rest later: resumable)
            subset = [conv(v) for v in wanted.split(",")]
            extra = set(subset) - {conv(v) for v in cfg["grid"][key]}
            if extra:
                raise SystemExit(f"--{key} {sorted(extra)} is not in the config's grid")
            cfg["grid"][key] = subset
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {args.jobs}")
    out = args.out or Path(cfg["study"].get("out", f"experiments/results/{cfg['study']['name']}"))
    t0 = time.perf_counter()
    if not args.summarise_only:
        only = [s.strip() for s in args.datasets.split(",")] if args.datasets else []
        unknown = set(only) - set(cfg["datasets"])
        if unknown:
            raise SystemExit(
                f"unknown datasets {sorted(unknown)}; the config has {list(cfg['datasets'])}"
            )
        groups = plan(cfg, only)
        if args.labels:
            groups = only_labels(groups, [s.strip() for s in args.labels.split(",")])
        done = {row_key(r) for r in read_runs(out / "runs.csv")}
        todo = pending(groups, done)
        n_all = sum(len(g.runs) for g in groups)
        n_todo = sum(len(g.runs) for g in todo)
        print(
            f"{n_all} runs planned, {n_all - n_todo} already in {out / 'runs.csv'}, "
            f"{n_todo} to run in {len(todo)} groups with {args.jobs} worker(s)",
            file=sys.stderr,
        )
        if args.dry_run:
            for g in todo:
                print(
                    f"  {g.dataset} M={g.parties} rep {g.rep}: {len(g.runs)} runs", file=sys.stderr
                )
            return 0
        out.mkdir(parents=True, exist_ok=True)
        failures = execute(todo, cfg, out, args.jobs)
        if failures:
            print(
                f"{failures} runs failed (see {out / 'errors.log'}); rerun to retry them",
                file=sys.stderr,
            )
    rows = read_runs(out / "runs.csv")
    if not rows:
        raise SystemExit(f"no runs in {out / 'runs.csv'}")
    made = write_outputs(summarise(rows, cfg), rows, cfg, out)
    top_k = top_k_rows(rows)  # the same runs answered with their plain top-k
    if top_k:
        write_outputs(summarise(top_k, cfg), top_k, cfg, out, answer="top-k")
    print(
        f"wrote summary.csv, summary.md{', summary_topk.*' if top_k else ''} and {len(made)} "
        f"plots to {out} "
        f"({time.perf_counter() - t0:.0f} s)",
        file=sys.stderr,
    )
    print(f"reproduce: .venv/bin/python experiments/study.py {shlex.join(argv)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
