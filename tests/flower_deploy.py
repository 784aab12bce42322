"""A Flower deployment on one machine: ``flower-superlink`` and one ``flower-supernode`` per party
on 127.0.0.1, and the app started on it with ``flwr run`` (integration tests, benchmarks).

Every process gets its own port and runs in its own session; :meth:`LocalDeployment.stop` kills
each process group by PID (children included: the SuperExec and app processes Flower spawns).
``FLWR_HOME`` is a private directory with a Flower config that names the SuperLink connection,
and telemetry is off. The run's outcome is read from the run's output file and its status from
``flwr ls`` (``flwr run --stream`` can exit 0 after a ServerApp crash).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedhh.errors import FedHHError
from fedhh.flower.run import (
    COMPLETED,
    CONNECTION,
    Flwr,
    config_args,
    free_port,
    tool,
    write_connection,
)
from fedhh.ops import procs


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    pids: set[int] = field(default_factory=set)  # every process of this tree ever seen

    def stop(self) -> None:
        """Stop the process, its process group and every descendant (by PID)."""
        self.pids.update(procs.stop([self.popen], grace=5.0))


@dataclass
class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 under ``root`` (FLWR_HOME is ``root/flwr-home``)."""

    root: Path
    procs: list[_Proc] = field(default_factory=list)
    superlink_port: int = 0
    stopped_pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.home = self.root / "flwr-home"
        self.home.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # --- processes -------------------------------------------------------------------------
    def _start(self, name: str, argv: Sequence[str]) -> _Proc:
        log = self.root / f"{name}.log"
        popen = procs.start(argv, log, env=self.env, cwd=self.root)
        proc = _Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_superlink(self) -> None:
        self.superlink_port = free_port()
        self._start(
            "superlink",
            [
                tool("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.superlink_port),
                "--disable-runtime-dependency-installation",
            ],
        )
        write_connection(self.home, self.superlink_port)
        self._wait_port(self.superlink_port, "superlink")

    def start_supernode(self, name: str, node_config: Mapping[str, Any]) -> None:
        self._start(
            name,
            [
                tool("flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.superlink_port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                " ".join(config_args(node_config)),
            ],
        )

    def _wait_port(self, port: int, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[-1]
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise FedHHError(f"{name} exited: {self.log_tail(name)}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise FedHHError(f"{name} did not listen on port {port} within {timeout:g} s")

    def stop(self) -> None:
        """Stop every process this deployment started, children included."""
        for proc in reversed(self.procs):
            proc.stop()
            self.stopped_pids.update(proc.pids)
        self.procs.clear()

    def leftovers(self, wait: float = 10.0) -> list[int]:
        """Processes of the stopped deployment still running (should be none)."""
        deadline = time.monotonic() + wait
        while True:
            alive = sorted(p for p in self.stopped_pids if procs.running(p))
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.1)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        for p in self.procs:
            if p.name == name and p.log.exists():
                return p.log.read_text(errors="replace")[-chars:]
        return ""

    def logs(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {p.name}\n{self.log_tail(p.name, chars)}" for p in self.procs)

    # --- runs ------------------------------------------------------------------------------
    def run_app(
        self, app_dir: Path, run_config: Mapping[str, Any], output: Path, timeout: float = 300.0
    ) -> dict[str, Any]:
        """Run the app, wait for it and return the result document from ``output``."""
        output.unlink(missing_ok=True)
        flwr = Flwr(CONNECTION, self.env, self.root)
        run_id = flwr.submit(app_dir, config_args({**run_config, "output": str(output)}))
        status, details = flwr.wait(run_id, timeout)
        if status != COMPLETED:
            log = flwr.stream(run_id, None, 30.0)  # the run's own log (the ServerApp's lines)
            raise FedHHError(
                f"run {run_id}: {status} {details} (timeout {timeout:g} s)\n--- run log\n"
                f"{log[-4000:]}\n{self.logs()}"
            )
        if not output.exists():
            raise FedHHError(f"run {run_id} completed but wrote no {output}\n{self.logs()}")
        doc: dict[str, Any] = json.loads(output.read_text())
        return doc


def start_local(
    root: Path, node_configs: Sequence[Mapping[str, Any]], timeout: float = 60.0
) -> LocalDeployment:
    """A SuperLink and one SuperNode per node config, all connected (or an error)."""
    dep = LocalDeployment(root)
    try:
        dep.start_superlink()
        for i, cfg in enumerate(node_configs):
            dep.start_supernode(f"supernode-{i}", cfg)
    except BaseException:
        dep.stop()
        raise
    return dep


__all__ = ["LocalDeployment", "start_local"]
