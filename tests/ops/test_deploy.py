"""``fedhh deploy local`` end to end: the README's command starts a coordinator and three party
agents as processes; the ``fedhh query`` lines it prints run a TAPS query whose top-k equals
``fedhh simulate`` on the written party data; SIGINT stops every process it started."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from grpc_harness import FEDHH
from transports import LocalDeploy, gone

from fedhh.core.items import IntCodec
from fedhh.datasets import load_party_files
from fedhh.run.engine import simulate
from fedhh.server.analyst import load_run_spec

ROOT = Path(__file__).resolve().parents[2]


def readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix`` (continuation lines joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(prefix)]
    assert lines, f"README shows no `{prefix} ...` command"
    return shlex.split(lines[0].split("#")[0])


def as_module(argv: list[str]) -> list[str]:
    assert argv[0] == "fedhh"
    return [*FEDHH, *argv[1:]]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[LocalDeploy]:
    argv = readme_command("fedhh deploy local")
    assert argv[:3] == ["fedhh", "deploy", "local"]
    dep = LocalDeploy.start(tmp_path / "deploy", argv[3:], cwd=tmp_path, connect=False)
    try:
        yield dep
    finally:
        dep.stop()  # kills only what the test left running (it stops everything itself)


def test_deploy_local_runs_a_query_and_leaves_nothing_behind(
    deployment: LocalDeploy, tmp_path: Path
) -> None:
    proc, d, lines = deployment.proc, tmp_path / "deploy", deployment.lines
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) == 4  # the coordinator and three party agents
    assert all(c.cmdline()[3:5] in (["coordinator", "serve"], ["party", "serve"]) for c in children)
    # the printed query lines, as they are (with --json to read the answers)
    queries = [shlex.split(ln) for ln in lines if ln.strip().startswith("fedhh query")]
    start = next(q for q in queries if "start" in q)
    top = next(q for q in queries if "top" in q)
    started = subprocess.run(
        as_module([*start[:2], "--json", *start[2:]]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    run = json.loads(started.stdout)
    assert run["state"] == "done" and run["failed_parties"] == []
    argv = [run["run_id"] if a == "RUN_ID" else a for a in top]
    answer = subprocess.run(
        as_module([*argv[:2], "--json", *argv[2:]]), capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr
    rows = json.loads(answer.stdout)

    # the same as the in-process engine on the party files and the run spec the command wrote
    spec = load_run_spec(d / "run.toml")
    files = sorted((d / "data").glob("party-*.txt"))
    ds = load_party_files(files, codec=IntCodec(spec["params"].m))
    want = simulate(ds.parties, ds.codec, spec["params"], party_ids=spec["party_ids"])
    n = len(rows)
    assert n == min(10, want.items.size) and n > 0
    assert [r["code"] for r in rows] == [int(c) for c in want.items[:n]]
    np.testing.assert_array_equal([r["estimate"] for r in rows], want.estimates[:n])

    # Ctrl-C: every process goes, the command exits 0
    pids = [proc.pid, *(c.pid for c in children)]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if not gone(p)] == []
