"""A party agent whose disk refuses writes (a file-size limit of one byte set on its process
mid-run: every write to a file fails with EFBIG) does not answer, fail the party or crash: it
says so once, keeps nothing half-written and retries; once writes succeed again the run ends with
the answer it would have had (issue 24 item 1). The agent logs to a pipe (a pipe is no file, so
its log still gets through). Real processes on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import faults
from grpc_harness import FEDHH, Cluster, M, codec, party_data, running_cluster, wait_until

from fedhh.datasets import load_party_files
from fedhh.mechanisms.params import MechanismParams
from fedhh.run.engine import simulate

PARTIES = ["party-0", "party-1", "party-2"]
PARAMS = MechanismParams(mechanism="tap", k=8, m=16, seed=5, step_rule="adaptive")


class PipedAgent:
    """``fedhh party serve`` with its log on a pipe, read by a thread."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            argv, cwd=cwd, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=20)
        self.reader.join(10)


def test_a_full_disk_at_a_party_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    with running_cluster(tmp_path, PARTIES) as cluster:
        files = party_data(cluster.root)
        cluster.start_coordinator()
        for pid, f in ((PARTIES[0], files[0]), (PARTIES[2], files[2])):
            cluster.start_party(pid, f)
        argv = [*FEDHH, "party", "serve", *cluster.connect_args("party", "party-1")]
        argv += ["--db", str(cluster.root / "party-1.sqlite"), "--data", str(files[1])]
        argv += ["--item-bits", str(M), "--poll-seconds", "2"]
        agent = PipedAgent(argv, cluster.root)
        try:
            _run(cluster, agent, files)
        finally:
            agent.stop()


def _run(cluster: Cluster, agent: PipedAgent, files: list[Path]) -> None:
    wait_until(lambda: len(json.loads(cluster.query("parties").stdout)) == 3, what="registrations")
    faults.limit_writes(agent.popen.pid)  # party-1's disk is full: every write to a file fails
    started = cluster.start_run("full-1", PARTIES, PARAMS)
    assert started.returncode == 0, started.stderr
    wait_until(lambda: "refused a write" in agent.output(), what="the refused write")
    status = json.loads(cluster.query("status", "full-1").stdout)
    assert status["state"] == "running" and status["failed_parties"] == [], status
    assert agent.popen.poll() is None
    faults.lift_write_limit(agent.popen.pid)
    done = cluster.query("watch", "full-1", "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    top = json.loads(cluster.query("top", "full-1").stdout)
    log = agent.output()
    ds = load_party_files(files, codec=codec())
    want = simulate(ds.parties, ds.codec, PARAMS, run_id="x", party_ids=PARTIES)
    assert [r["code"] for r in top] == [int(c) for c in want.items]
    assert [r["estimate"] for r in top] == want.estimates.tolist()
    assert "Traceback" not in log and log.count("refused a write") == 1, log[-3000:]
    assert "takes writes again" in log
