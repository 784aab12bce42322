"""Flower simulation of a run (``fedhh simulate --engine flower``): the ServerApp and one ClientApp
per party in Flower's Simulation Engine with the Ray backend (docs/flower.md).

``flwr.simulation.run_simulation`` passes no run config to the apps, so the apps are built with
the run config bound in (the ``make_server_app`` / ``make_client_app`` factories). Each virtual
SuperNode gets Flower's ``partition-id`` / ``num-partitions`` node config and builds its party's
data from them and the run config's dataset keys, so the parties hold exactly the data
``fedhh simulate`` gives them. This module joins the two sides, so it sits above both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhh import settings
from fedhh.errors import FedHHError, ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import RunResult


def run_config_for(
    params: MechanismParams,
    data: settings.DatasetParams | None = None,
    *,
    n_parties: int | None = None,
    party_files: Sequence[str | os.PathLike[str]] | None = None,
    **run: Any,
) -> dict[str, Any]:
    """The Flower run config of a run (the keys of ``[tool.flwr.app.config]``); ``run`` sets
    the ServerApp's own keys (``run_id``, ``policy``, ``round_timeout``, ...)."""
    from fedhh.server.flower_app import FlowerRun

    d = data or settings.DatasetParams()
    if n_parties is not None:
        d = settings.DatasetParams(**{**d.__dict__, "parties": n_parties})
    cfg = {
        **settings.to_config(params),
        **settings.to_config(d),
        **settings.to_config(FlowerRun(**run)),
    }
    if party_files:
        if any("," in str(f) for f in party_files):
            raise ParameterError("party file paths must not contain commas")
        cfg["party-files"] = ",".join(str(Path(f).resolve()) for f in party_files)
    elif cfg["data-path"]:
        cfg["data-path"] = str(Path(cfg["data-path"]).resolve())
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
    from fedhh.clients.flower_app import make_client_app
    from fedhh.server.flower_app import FlowerSettings, make_server_app

    cfg = {**run_config, "parties": n_parties, "output": ""}
    FlowerSettings.from_config(cfg)  # bad settings fail here, before Ray starts
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
