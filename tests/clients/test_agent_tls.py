"""Clients tell a connection no retry can fix from one a retry can (issue 24 item 2): a
coordinator whose certificate the client's CA does not trust, has expired or names other hosts
than the one dialled, or TLS on one side only, ends a party agent with one error line that says
which and what to fix (the certificate's names listed) and exit status 1 (it retried for ever, a
warning and gRPC C-core lines each time); the analyst's and the devices' clients raise
:class:`ConnectionProblem` with the same sentence, and ``fedhh query`` prints it as one line
with exit status 1. A coordinator that is away is retried, and said once. The faults come from
:mod:`faults`; real processes on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import faults
import pytest
from grpc_harness import FEDHH, Proc, wait_file

from fedhh.clients.credentials import Credentials
from fedhh.clients.reporter import ReporterClient
from fedhh.errors import ConnectionProblem
from fedhh.server.analyst import AnalystClient
from fedhh.wire.tokens import add_token

SAYS = {
    "other-ca": "is not trusted with this CA",
    "expired": "has expired",
    "other-host": "is for coordinator.example, not 127.0.0.1: dial one of those names",
}


def _agent(d: Path, target: str, *extra: str) -> subprocess.Popen[str]:
    (d / "items.txt").write_text("a\nb\n")
    argv = ["party", "serve", "--party-id", "party-0", "--coordinator", target]
    argv += ["--token-file", str(d / "p.token"), "--db", str(d / f"agent-{len(extra)}.sqlite")]
    argv += ["--data", str(d / "items.txt"), "--item-bytes", "1", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    return subprocess.Popen(
        [*FEDHH, *argv], stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=30)[1]


def _coordinator(d: Path, cert: Path | None = None, key: Path | None = None) -> tuple[Proc, str]:
    """A coordinator on 127.0.0.1 (TLS with ``cert``, else plaintext) with party-0's and the
    analyst alice's tokens, and its address."""
    add_token(d / "tokens.json", "party", "party-0", d / "p.token", replace=True)
    add_token(d / "tokens.json", "analyst", "alice", d / "alice.token", replace=True)
    port_file = d / "port"
    port_file.unlink(missing_ok=True)
    argv = ["coordinator", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file)]
    argv += ["--db", str(d / "c.sqlite"), "--tokens", str(d / "tokens.json")]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key)] if cert and key else ["--insecure"]
    log = d / "coordinator.log"
    popen = subprocess.Popen([*FEDHH, *argv], stderr=log.open("w"), start_new_session=True)
    coord = Proc("coordinator", popen, log)
    try:
        return coord, f"127.0.0.1:{int(wait_file(port_file, coord))}"
    except BaseException:
        coord.stop()
        raise


def _ends_with_one_error(agent: subprocess.Popen[str], says: str) -> None:
    try:
        assert agent.wait(timeout=60) == 1
    finally:
        err = _stop(agent)
    errors = [ln for ln in err.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and says in errors[0], err
    assert "ssl_transport_security" not in err and "WARNING" not in err, err


def _analyst_refused(d: Path, target: str, says: str, *connect: str) -> None:
    """The analyst's client raises ConnectionProblem, and ``fedhh query`` prints one line."""
    token = (d / "alice.token").read_text().strip()
    ca = Path(connect[1]) if connect[0] == "--ca-cert" else None
    with AnalystClient(target, token=token, ca_cert=ca, insecure=ca is None, timeout=10) as c:
        with pytest.raises(ConnectionProblem, match=re.escape(says)) as refused:
            c.runs()
    assert refused.value.code == "UNAVAILABLE" and str(refused.value) == refused.value.message
    argv = [*FEDHH, "query", "--coordinator", target, "--token-file", str(d / "alice.token")]
    proc = subprocess.run([*argv, *connect, "runs"], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and says in lines[0], proc.stderr


@pytest.mark.parametrize("fault", faults.CERTIFICATE_FAULTS)
def test_a_certificate_no_retry_can_fix_ends_the_agent(tmp_path: Path, fault: str) -> None:
    ca, cert, key = faults.certificates(tmp_path, fault)
    coord, target = _coordinator(tmp_path, cert, key)
    try:
        _ends_with_one_error(_agent(tmp_path, target, "--ca-cert", str(ca)), SAYS[fault])
        _analyst_refused(tmp_path, target, SAYS[fault], "--ca-cert", str(ca))
    finally:
        coord.stop()


def test_tls_on_one_side_only_ends_the_agent(tmp_path: Path) -> None:
    ca, cert, key = faults.certificates(tmp_path)
    coord, target = _coordinator(tmp_path, cert, key)
    says = "speaks TLS, not plaintext: give its CA with --ca-cert instead of --insecure"
    try:
        _ends_with_one_error(_agent(tmp_path, target, "--insecure"), says)
        _analyst_refused(tmp_path, target, says, "--insecure")
    finally:
        coord.stop()
    coord, target = _coordinator(tmp_path)  # plaintext, dialled with TLS
    says = "does not speak TLS (a plaintext server): dial it with --insecure"
    try:
        _ends_with_one_error(_agent(tmp_path, target, "--ca-cert", str(ca)), says)
        _analyst_refused(tmp_path, target, says, "--ca-cert", str(ca))
    finally:
        coord.stop()


def test_a_coordinator_that_is_away_is_retried_and_said_once(tmp_path: Path) -> None:
    coord, target = _coordinator(tmp_path)
    coord.stop()  # gone: the agent keeps retrying, and says so once
    away = _agent(tmp_path, target, "--insecure", "--poll-seconds", "1")
    time.sleep(6)  # several retries (backoff 0.2 s, doubling)
    assert away.poll() is None  # still retrying
    err = _stop(away)
    assert sum("connection to" in ln and "lost" in ln for ln in err.splitlines()) == 1, err


def test_a_device_is_told_what_no_retry_can_fix(tmp_path: Path) -> None:
    """The device SDK against a report endpoint whose certificate has expired: ``report()``
    raises ConnectionProblem saying so (it raised a bare UNAVAILABLE with gRPC's handshake
    text)."""
    ca, cert, key = faults.certificates(tmp_path, "expired")
    coord_ca, coord_cert, coord_key = faults.certificates(tmp_path / "coordinator")
    coord, target = _coordinator(tmp_path, coord_cert, coord_key)
    port_file = tmp_path / "report.port"
    argv = ["party", "serve", "--party-id", "party-0", "--coordinator", target]
    argv += ["--ca-cert", str(coord_ca)]
    argv += ["--token-file", str(tmp_path / "p.token"), "--db", str(tmp_path / "agent.sqlite")]
    argv += ["--item-bytes", "1", "--devices", "4", "--listen", "127.0.0.1:0"]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key), "--port-file", str(port_file)]
    log = tmp_path / "agent.log"
    popen = subprocess.Popen([*FEDHH, *argv], stderr=log.open("w"), start_new_session=True)
    agent = Proc("agent", popen, log)
    try:
        endpoint = f"127.0.0.1:{int(wait_file(port_file, agent))}"
        credential = Credentials("party-0", bytes(32), 4).issue(0)
        with ReporterClient(endpoint, credential=credential, ca_cert=ca) as device:
            with pytest.raises(ConnectionProblem, match=f"{endpoint} has expired"):
                device.report(1, wait=60)
    finally:
        try:
            agent.stop()
        finally:
            coord.stop()
