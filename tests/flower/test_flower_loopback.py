"""Every process of a fedhh-started Flower simulation listens on loopback only: the SuperLink,
flwr-simulation, and Ray's GCS server, raylet and workers (found by PID as descendants of the
SuperLink this test starts, their listening sockets read with psutil while the run goes on)."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import psutil
import pytest

from fedhh.flower.run import SimulationLink
from fedhh.flower.simulation import simulate_flower
from fedhh.ops import procs


def _listening(pids: set[int]) -> set[tuple[str, str]]:
    """(process name, listening address) of each listening socket of ``pids``."""
    found: set[tuple[str, str]] = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                continue
            found.add((name, conn.laddr.ip))
    return found


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool((mapped or addr).is_loopback)


def test_a_flower_simulation_listens_on_loopback_only(tmp_path: Path) -> None:
    pytest.importorskip("ray")  # the simulation extra: the dev install has it (never skipped in CI)
    link = SimulationLink(tmp_path / "sim")
    flwr = link.start()
    seen: set[tuple[str, str]] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            assert link.proc is not None
            pids = {link.proc.pid, *procs.descendants([link.proc.pid])}
            seen.update(_listening(pids))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        cfg = {"users": 4000, "parties": 2, "k": 4, "items": 200, "run-id": "loopback"}
        result = simulate_flower(cfg, 2, total_cpus=2, link=flwr, timeout=300)
    finally:
        done.set()
        watcher.join(10)
        link.stop()
    assert len(result.items) == 4
    names = {name for name, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # Ray's servers were up and were looked at
    assert [(n, ip) for n, ip in seen if not _loopback(ip)] == []
