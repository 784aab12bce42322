"""Flower runs through Flower's own command line (``flwr``, Flower 1.42; docs/flower.md).

* :class:`Flwr` submits a run (``flwr run --format json``), follows its log (``flwr log
  --stream``) and reads its status (``flwr ls --run-id``). ``flwr run`` exits 0 once the run is
  submitted, whatever becomes of it, so the run's status is what tells success from failure.
* ``fedhh flower run``: ``flwr run`` + its log + an exit status that is the run's
  (0: ``finished:completed``, 1: anything else).
* :class:`SimulationLink`: a private ``flower-superlink --simulation`` on free 127.0.0.1 ports with
  its own ``FLWR_HOME`` (what ``fedhh simulate --engine flower`` runs on), stopped with every
  process it started.
* :func:`write_app`: a Flower app directory (``pyproject.toml``) for the installed fedhh apps
  with a given run config as its defaults.

No flwr import here: everything goes through the ``flwr`` commands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fedhh import __version__
from fedhh.core.declare import config_value
from fedhh.errors import FedHHError, ParameterError
from fedhh.extras import require
from fedhh.ops import procs

COMPLETED = "finished:completed"
CONNECTION = "fedhh-local"
# Ray (Flower's simulation engine) binds its servers to the node's address, which on Linux is the
# primary interface's unless Ray believes it runs a single-machine cluster; this setting of Ray's
# makes the node 127.0.0.1, so that every Ray process of a simulation listens on loopback only.
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# one --run-config argument: space-separated key=value, a value quoted or without spaces (flwr's)
RUN_CONFIG_LINE = re.compile(r"\s*(\S+?=('[^']*'|\"[^\"]*\"|\S+)\s*)*")


def tool(name: str) -> str:
    """A Flower command installed beside this interpreter (else from PATH)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FedHHError(f"{name} not found: install flwr==1.42.0")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_connection(home: Path, port: int) -> None:
    """``home/config.toml`` (``FLWR_HOME``): the SuperLink on 127.0.0.1:``port`` (insecure) as
    flwr's default connection, named :data:`CONNECTION`."""
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )


def config_args(cfg: Mapping[str, Any]) -> list[str]:
    """``key=value`` strings (``--run-config``, ``--federation-config``) of a config."""
    return [f"{k}={config_value(v)}" for k, v in cfg.items()]


def write_app(directory: Path, run_config: Mapping[str, Any]) -> Path:
    """A Flower app directory whose ``pyproject.toml`` names the installed fedhh apps and has
    ``run_config`` as its ``[tool.flwr.app.config]``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[project]",
        'name = "fedhh"',
        f'version = "{__version__}"',
        'description = "fedhh as a Flower app"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "fedhh"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "fedhh.server.flower_app:app"',
        'clientapp = "fedhh.clients.flower_app:app"',
        "",
        "[tool.flwr.app.config]",
        *(f"{k} = {config_value(v)}" for k, v in run_config.items()),
    ]
    (directory / "pyproject.toml").write_text("\n".join(lines) + "\n")
    (directory / "README.md").write_text("fedhh as a Flower app (generated).\n")
    return directory


@dataclass
class Flwr:
    """The ``flwr`` command with an environment and a SuperLink connection (None: the default
    one of ``$FLWR_HOME/config.toml``)."""

    connection: str | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None

    def __call__(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    @property
    def _conn(self) -> list[str]:
        return [self.connection] if self.connection else []

    def submit(
        self,
        app: Path,
        run_config: Sequence[str] = (),
        federation_config: Sequence[str] = (),
    ) -> int:
        """Start the app; returns the run id. ``run_config``/``federation_config``: ``key=value``
        strings as ``flwr run`` takes them."""
        args = ["run", str(app), *self._conn, "--format", "json"]
        for item in run_config:
            args += ["--run-config", item]
        for item in federation_config:
            args += ["--federation-config", item]
        out = self(*args)
        try:
            payload = json.loads(out.stdout[out.stdout.index("{") :])
            return int(payload["run-id"])
        except (ValueError, KeyError, TypeError):
            text = (out.stdout + out.stderr).strip()
            raise FedHHError(f"flwr run failed (exit {out.returncode}): {text}") from None

    def stream(self, run_id: int, sink: TextIO | None = None, timeout: float | None = None) -> str:
        """Follow the run's log until the run ends (or ``timeout`` seconds pass); every line
        goes to ``sink``. Returns the log's last 20,000 characters."""
        cmd = [tool("flwr"), "log", str(run_id), *self._conn, "--stream"]
        kept: list[str] = []
        size = 0
        with subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        ) as proc:
            timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
            if timer is not None:
                timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if sink is not None:
                        sink.write(line)
                        sink.flush()
                    kept.append(line)
                    size += len(line)
                    while size > 20_000 and len(kept) > 1:
                        size -= len(kept.pop(0))
            finally:
                if timer is not None:
                    timer.cancel()
                procs.stop([proc], grace=2.0)
        return "".join(kept)

    def status(self, run_id: int) -> tuple[str, str]:
        """The run's status (``pending``, ``running``, ``finished:completed``,
        ``finished:failed``, ...) and its details."""
        out = self("ls", *self._conn, "--run-id", str(run_id), "--format", "json")
        try:
            row = json.loads(out.stdout)["runs"][0]
            return str(row["status"]), str(row.get("status-details", ""))
        except (ValueError, KeyError, IndexError, TypeError):
            text = (out.stdout + out.stderr).strip()
            raise FedHHError(f"flwr ls failed (exit {out.returncode}): {text}") from None

    def wait(self, run_id: int, timeout: float = 60.0) -> tuple[str, str]:
        """Poll the status until the run has finished (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            status, details = self.status(run_id)
            if status.startswith("finished") or time.monotonic() >= deadline:
                return status, details
            time.sleep(1.0)


@dataclass
class SimulationLink:
    """A private SuperLink in simulation mode on 127.0.0.1 (``FLWR_HOME`` is ``root/flwr-home``,
    logs in ``root``); a context manager that stops it and every process it started."""

    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 60.0) -> Flwr:
        home = self.root / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_DEDUP_LOGS": "0",
            **LOOPBACK_RAY,
            # the SuperLink starts flower-superexec (and it flwr-simulation) from PATH
            "PATH": os.pathsep.join([str(Path(tool("flwr")).parent), os.environ.get("PATH", "")]),
        }
        self.port = free_port()
        control = free_port()
        self.proc = procs.start(
            [
                tool("flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--control-api-address",
                f"127.0.0.1:{control}",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",  # fedhh is installed already
            ],
            self.root / "superlink.log",
            env=self.env,
            cwd=self.root,
        )
        write_connection(home, self.port)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "superlink.log").read_text(errors="replace")[-3000:]
                self.stop()
                raise FedHHError(f"the Flower SuperLink did not start:\n{log}")
            time.sleep(0.2)
        return Flwr(CONNECTION, self.env, self.root)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> list[int]:
        stopped = procs.stop([self.proc], grace=10.0) if self.proc is not None else []
        self.proc = None
        return stopped

    def __enter__(self) -> Flwr:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- fedhh flower run ---------------------------------------------------------------------------
def add_flower_parser(sub: Any) -> None:
    p = sub.add_parser("flower", help="Flower runs with the run's outcome as exit status")
    fsub = p.add_subparsers(dest="flower_command", required=True)
    run = fsub.add_parser(
        "run",
        help="flwr run, follow the log, exit with the run's status",
        description="Start the Flower app with `flwr run`, print its log (with the result "
        "table) as it comes, and exit 0 if the run finished:completed, 1 if not (`flwr run` "
        "itself exits 0 once the run is submitted).",
    )
    run.add_argument("app", nargs="?", default=".", help="the Flower app directory (default .)")
    run.add_argument(
        "superlink",
        nargs="?",
        help="name of a SuperLink connection in flwr's config.toml (default: its default one)",
    )
    run.add_argument(
        "--run-config",
        "-c",
        action="append",
        default=[],
        help="run-config overrides, key=value ... (as flwr run: the keys of "
        "[tool.flwr.app.config]); repeatable",
    )
    run.add_argument(
        "--federation-config",
        action="append",
        default=[],
        help="federation settings, key=value ... (as flwr run); repeatable",
    )
    run.add_argument(
        "--timeout",
        type=float,
        help="give up following the run after this many seconds (default: until it ends)",
    )
    run.set_defaults(func=cmd_flower_run)


def check_run_config(app: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The run config ``flwr run app --run-config overrides`` would start with, validated as the
    ServerApp validates it (:class:`~fedhh.server.flower_app.FlowerSettings`): a bad one raises
    :class:`~fedhh.errors.ParameterError` here, before anything is submitted."""
    from click import ClickException
    from flwr.common.config import get_fused_config_from_dir, parse_config_args

    from fedhh.server.flower_app import FlowerSettings

    if not (app / "pyproject.toml").is_file():
        raise ParameterError(f"{app} is not a Flower app directory (no pyproject.toml)")
    for line in overrides:  # flwr skips what is not key=value; a typo should not pass unseen
        if not line.endswith(".toml") and not RUN_CONFIG_LINE.fullmatch(line):
            raise ParameterError(f"--run-config: {line!r} is not key=value pairs")
    try:
        cfg = get_fused_config_from_dir(app, parse_config_args(list(overrides)))
    except (ValueError, KeyError, OSError) as exc:  # an unknown key, no [tool.flwr.app]
        raise ParameterError(f"--run-config: {exc}") from None
    except ClickException as exc:  # not TOML values
        raise ParameterError(f"--run-config: {exc.message}") from None
    FlowerSettings.from_config(cfg)
    return dict(cfg)


def cmd_flower_run(args: argparse.Namespace) -> int:
    require("flower", "fedhh flower run")
    check_run_config(Path(args.app), args.run_config)
    flwr = Flwr(args.superlink)
    run_id = flwr.submit(Path(args.app), args.run_config, args.federation_config)
    print(f"fedhh: Flower run {run_id} started", file=sys.stderr, flush=True)
    try:
        flwr.stream(run_id, sys.stdout, args.timeout)
    except KeyboardInterrupt:
        print(f"fedhh: run {run_id} goes on; stop it with: flwr stop {run_id}", file=sys.stderr)
        raise
    status, details = flwr.wait(run_id)
    if status == COMPLETED:
        print(f"fedhh: Flower run {run_id} {status}", file=sys.stderr)
        return 0
    print(f"fedhh: error: Flower run {run_id} {status}: {details}", file=sys.stderr)
    return 1
