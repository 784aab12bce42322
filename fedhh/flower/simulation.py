"""Flower simulation of a run (``fedhh simulate --engine flower``): the ServerApp and one ClientApp
per party in Flower's Simulation Engine with the Ray backend (docs/flower.md).

It runs the way Flower 1.42 asks for (its ``run_simulation()`` is deprecated in favour of
``flwr run``): ``flwr run`` submits the installed fedhh apps to a private SuperLink in simulation
mode (:class:`fedhh.flower.run.SimulationLink`, free 127.0.0.1 ports, its own ``FLWR_HOME``),
with one virtual SuperNode per party (``--federation-config num-supernodes=N``). The run config
is the generated app's ``[tool.flwr.app.config]``. Each virtual SuperNode gets Flower's
``partition-id`` / ``num-partitions`` node config and builds its party's data from them and the
run config's dataset keys, so the parties hold exactly the data ``fedhh simulate`` gives them.
The ServerApp writes the result document, from which the result is read back; the SuperLink and
every process it started are stopped at the end. This module joins the two sides, so it sits
above both.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhh.errors import FedHHError, ParameterError
from fedhh.extras import require
from fedhh.flower.run import COMPLETED, Flwr, SimulationLink, config_args, write_app
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import RunResult
from fedhh.run import settings
from fedhh.run.result import result_from_document


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
    cpus_per_client: int = 1,
    total_cpus: int | None = None,
    verbose: bool = False,
    timeout: float | None = None,
    link: Flwr | None = None,
) -> RunResult:
    """Run the apps in Flower's Simulation Engine (Ray backend) and return the run's result;
    ``verbose`` prints the run's log (Flower's and the ServerApp's) to stderr; ``link``: a
    started :class:`SimulationLink`'s ``flwr`` to submit to (several runs share its SuperLink),
    else one is started and stopped for this run."""
    require("simulation", "Flower's simulation engine")
    from fedhh.server.flower_app import FlowerSettings

    cfg = {**run_config, "parties": n_parties}
    FlowerSettings.from_config(cfg)  # bad settings fail here, before anything starts
    federation: dict[str, Any] = {
        "num-supernodes": n_parties,
        "client-resources-num-cpus": cpus_per_client,
        "init-args-logging-level": "INFO" if verbose else "ERROR",
        "init-args-log-to-driver": verbose,
    }
    if total_cpus is not None:
        federation["init-args-num-cpus"] = total_cpus
    with tempfile.TemporaryDirectory(prefix="fedhh-flower-") as tmp:
        root = Path(tmp)
        out = root / "result.json"
        app = write_app(root / "app", {**cfg, "output": str(out)})
        with contextlib.ExitStack() as stack:
            flwr = link if link is not None else stack.enter_context(SimulationLink(root))
            run_id = flwr.submit(app, federation_config=config_args(federation))
            log = flwr.stream(run_id, sys.stderr if verbose else None, timeout)
            status, details = flwr.wait(run_id)
        if status != COMPLETED or not out.exists():
            raise FedHHError(
                f"the Flower simulation ended {status}: {details}\n--- its log (end)\n"
                + log[-4000:]
            )
        return result_from_document(json.loads(out.read_text()))
