"""The Flower app as shipped: the README's ``flwr run flower-app --stream`` on a copy of the
app directory runs on Flower's default local simulation federation (the SuperLink that ``flwr``
starts, 2 SuperNodes) with the shipped run config and prints the top-k. Flower's runtime
dependency installation stays on (the app has nothing to install, so it needs no network); Ray
listens on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as the README says).
``flwr log`` shows the result table; a run that fails ends ``finished:failed`` and
``fedhh flower run`` exits 1; a bad run config is refused before anything is submitted. Flower's
processes are found by PID (the SuperLink by its port, the rest as its descendants or by this
test's FLWR_HOME) and killed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fedhh.flower.run import LOOPBACK_RAY, free_port
from fedhh.ops import procs

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix``."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(prefix)]
    assert lines, f"README shows no `{prefix} ...` command"
    return shlex.split(lines[0].split("#")[0])


def flower_pids(home: Path, port: int) -> set[int]:
    """This test's Flower processes: the one listening on the SuperLink's port, every process
    whose environment has this test's FLWR_HOME, and all their descendants."""
    found: set[int] = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid:
                found.add(conn.pid)
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("FLWR_HOME") == str(home):
                found.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found | set(procs.descendants(found))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh app directory (what the FAB holds) and a private Flower environment."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("flwr-app")
    shutil.copytree(ROOT / "flower-app", root / "flower-app")
    home = root / "flwr-home"
    port = free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        **LOOPBACK_RAY,
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    try:
        yield root, env
    finally:
        pids = flower_pids(home, port)
        assert pids, "no Flower process found: the local SuperLink should still be running"
        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + 15
        while any(procs.running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in pids if procs.running(p)] == []


def run(argv: list[str], app_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if argv[0] == "fedhh":
        argv = [sys.executable, "-m", "fedhh.cli", *argv[1:]]
    else:
        argv = [str(BIN / argv[0]), *argv[1:]]
    return subprocess.run(argv, cwd=app_dir, env=env, capture_output=True, text=True, timeout=600)


def test_flwr_run_as_shipped_prints_the_top_k(app: tuple[Path, dict[str, str]]) -> None:
    app_dir, env = app
    argv = readme_command("flwr run ")
    assert argv[:3] == ["flwr", "run", "flower-app"]
    out = run(argv, app_dir, env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    run_id = re.search(r"Successfully started run (\d+)", text)
    assert run_id, text
    assert "party-0" in text and "party-1" in text and "party-2" not in text  # 2 SuperNodes
    rows = re.findall(r"^\s+(\d+)\s+\d+\s+-?[\d,]+\s+[\d,]+\s+\d+$", text, re.MULTILINE)
    assert rows == [str(i) for i in range(1, 17)], text  # the top-16 table
    assert "deprecated" not in text.lower()
    assert "App dependencies installed successfully via uv sync" in text  # installation on
    ls = run(["flwr", "ls", "--run-id", run_id[1], "--format", "json"], app_dir, env)
    assert json.loads(ls.stdout)["runs"][0]["status"] == "finished:completed"
    log = run(["flwr", "log", run_id[1]], app_dir, env)  # the run's log, with the result table
    assert "fedhh result" in log.stdout and "rank  item" in log.stdout, log.stdout + log.stderr


def test_a_failed_run_exits_non_zero(app: tuple[Path, dict[str, str]]) -> None:
    app_dir, env = app
    argv = readme_command("fedhh flower run ")
    out = run(argv, app_dir, env)
    assert "parties=3" in " ".join(argv)  # the README's failing example: 3 of 2 SuperNodes
    assert out.returncode == 1, out.stdout + out.stderr
    assert "finished:failed" in out.stderr
    assert "only 2 of 3 SuperNodes" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epsilon=-1", "epsilon must be"),
        ("k=0", "k must be"),
        ("no-such-key=1", "no-such-key"),
        ("epsilon=", "--run-config"),
    ],
)
def test_a_bad_run_config_is_refused_before_submitting(
    app: tuple[Path, dict[str, str]], override: str, message: str
) -> None:
    app_dir, env = app
    out = run(["fedhh", "flower", "run", "flower-app", "-c", override], app_dir, env)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedhh: error: "), out.stderr
    assert message in lines[0], lines[0]
    assert "started" not in out.stderr


class GrowingGrid:
    """A Grid whose SuperNodes join one by one (``get_node_ids`` is all the ServerApp asks)."""

    def __init__(self, joins: list[list[int]]) -> None:
        self.joins = joins
        self.calls = 0

    def get_node_ids(self) -> list[int]:
        self.calls += 1
        return self.joins[min(self.calls - 1, len(self.joins) - 1)]


def test_parties_unset_uses_the_supernodes_that_are_there() -> None:
    from fedhh.errors import ProtocolError
    from fedhh.server.flower_app import FlowerSettings, wait_for_nodes

    assert FlowerSettings.from_config({"parties": ""}).parties is None
    grid = GrowingGrid([[], [7], [7, 3], [7, 3, 5]])
    assert wait_for_nodes(grid, None, timeout=30, settle=0.5) == [3, 5, 7]
    with pytest.raises(ProtocolError, match=r"no SuperNode connected within 0\.3 s"):
        wait_for_nodes(GrowingGrid([[]]), None, timeout=0.3)
    with pytest.raises(ProtocolError, match=r"only 2 of 3 SuperNodes .* parties=\"\""):
        wait_for_nodes(GrowingGrid([[1, 2]]), 3, timeout=0.3)
