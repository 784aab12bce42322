"""Flower simulation of a run (``fedhh simulate --engine flower``): the ServerApp and one ClientApp
per party in Flower's Simulation Engine with the Ray backend (one CPU per client).

``flwr.simulation.run_simulation`` passes no run config to the apps, so the apps are built with
the run config bound in (:func:`make_server_app` / :func:`make_client_app` factories). Each
virtual SuperNode gets Flower's ``partition-id`` / ``num-partitions`` node config and builds its
party's data from them and the run config's dataset keys (:mod:`fedhh.clients.flower_data`), so
the parties hold exactly the data ``fedhh simulate`` gives them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhh.clients.flower_app import make_client_app
from fedhh.server.flower_app import FlowerRunSettings, make_server_app

from fedhh.errors import FedHHError, ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import RunResult


def run_config_for(
    params: MechanismParams,
    *,
    n_parties: int,
    dataset: str = "zipf",
    users: int = 200_000,
    items: int = 10_000,
    zipf_s: float = 1.1,
    bits: int = 32,
    split: str = "dirichlet",
    alpha: float = 0.5,
    sizes: str = "equal",
    data_seed: int = 0,
    data_path: str | os.PathLike[str] | None = None,
    max_users: int | None = None,
    party_files: Sequence[str | os.PathLike[str]] | None = None,
    item_bytes: int | None = None,
    item_bits: int | None = None,
    run_id: str = "run-1",
    policy: str = "continue",
    round_timeout: float = 600.0,
) -> dict[str, Any]:
    """The Flower run config of a run (the keys of ``[tool.flwr.app.config]``)."""
    p = params
    cfg: dict[str, Any] = {
        "mechanism": p.mechanism,
        "epsilon": float(p.epsilon),
        "k": p.k,
        "oracle": p.oracle,
        "eta": p.eta,
        "step-rule": p.step_rule,
        "prune-z": -1.0 if p.prune_z is None else float(p.prune_z),
        "completion": float(p.completion),
        "pool-size": p.pool_size,
        "seed": p.seed,
        "run-id": run_id,
        "policy": policy,
        "parties": n_parties,
        "node-wait": 120.0,
        "round-timeout": float(round_timeout),
        "output": "",
    }
    if party_files:
        if any("," in str(f) for f in party_files):
            raise ParameterError("party file paths must not contain commas")
        cfg["party-files"] = ",".join(str(Path(f).resolve()) for f in party_files)
        cfg["item-bytes"] = item_bytes or 0
        cfg["item-bits"] = item_bits or 0
        return cfg
    cfg.update(
        {
            "dataset": dataset,
            "users": users,
            "items": items,
            "zipf-s": float(zipf_s),
            "bits": bits,
            "split": split,
            "alpha": float(alpha),
            "sizes": sizes,
            "data-seed": data_seed,
            "data-path": str(Path(data_path).resolve()) if data_path else "",
            "max-users": max_users or 0,
        }
    )
    return cfg


def simulate_flower(
    run_config: Mapping[str, Any],
    n_parties: int,
    *,
    cpus_per_client: float = 1.0,
    total_cpus: int | None = None,
    verbose: bool = False,
) -> RunResult:
    """Run the apps in Flower's Simulation Engine (Ray backend) and return the run's result."""
    try:
        from flwr.simulation import run_simulation
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FedHHError(
            "Flower simulation needs Ray: pip install 'flwr[simulation]==1.42.0'"
        ) from exc
    cfg = {**run_config, "parties": n_parties, "output": ""}
    FlowerRunSettings.from_config(cfg)  # bad settings fail here, before Ray starts
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    results: list[RunResult] = []
    backend: dict[str, Any] = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
        "init_args": {"logging_level": "INFO" if verbose else "ERROR", "log_to_driver": verbose},
    }
    if total_cpus is not None:
        backend["init_args"]["num_cpus"] = total_cpus
    run_simulation(
        server_app=make_server_app(cfg, on_result=results.append),
        client_app=make_client_app(cfg),
        num_supernodes=n_parties,
        backend_name="ray",
        backend_config=backend,
        verbose_logging=verbose,
    )
    if not results:
        raise FedHHError("the Flower simulation ended without a result (see the log above)")
    return results[0]


def simulate_flower_args(
    args: argparse.Namespace, params: MechanismParams, n_parties: int
) -> RunResult:
    """``fedhh simulate --engine flower``: the CLI's data and run options as a Flower run."""
    cfg = run_config_for(
        params,
        n_parties=n_parties,
        dataset=args.dataset,
        users=args.users,
        items=args.items,
        zipf_s=args.zipf_s,
        bits=args.bits,
        split=args.split,
        alpha=args.alpha,
        sizes=args.sizes,
        data_seed=args.data_seed,
        data_path=args.data_path,
        max_users=args.max_users,
        party_files=args.party_file,
        item_bytes=args.item_bytes,
        item_bits=args.item_bits,
    )
    return simulate_flower(cfg, n_parties)


__all__ = ["run_config_for", "simulate_flower", "simulate_flower_args"]
