"""An agent tells a failure no retry can fix from one a retry can (issue 24 item 2): a
coordinator whose certificate its --ca-cert does not trust, or whose certificate names other
hosts than the one dialled, ends the agent with one error line that says which (the
certificate's names listed) and exit status 1 (it retried for ever, a warning and gRPC C-core
lines each time); a coordinator that is away is retried, and said once. Real processes on
127.0.0.1, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from grpc_harness import FEDHH, Proc, wait_file

from fedhh.ops import deploy
from fedhh.wire.tokens import add_token


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


def _coordinator(d: Path, cert: Path, key: Path) -> tuple[Proc, str]:
    """A TLS coordinator (certificate ``cert``) on 127.0.0.1 with party-0's token, and its
    address."""
    add_token(d / "tokens.json", "party", "party-0", d / "p.token")
    port_file = d / "port"
    argv = ["coordinator", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file)]
    argv += ["--db", str(d / "c.sqlite"), "--tokens", str(d / "tokens.json")]
    argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    log = d / "coordinator.log"
    popen = subprocess.Popen([*FEDHH, *argv], stderr=log.open("w"), start_new_session=True)
    coord = Proc("coordinator", popen, log)
    try:
        return coord, f"127.0.0.1:{int(wait_file(port_file, coord))}"
    except BaseException:
        coord.stop()
        raise


def test_an_untrusted_certificate_ends_the_agent_and_an_absent_coordinator_does_not(
    tmp_path: Path,
) -> None:
    _, cert, key = deploy.make_certs(tmp_path / "real")
    other_ca, _, _ = deploy.make_certs(tmp_path / "other")  # another CA's certificate
    coord, target = _coordinator(tmp_path, cert, key)
    try:
        agent = _agent(tmp_path, target, "--ca-cert", str(other_ca))
        try:
            assert agent.wait(timeout=60) == 1
        finally:
            err = _stop(agent)
        errors = [ln for ln in err.splitlines() if " ERROR " in ln]
        assert len(errors) == 1 and "is not trusted with this CA" in errors[0], err
        assert "ssl_transport_security" not in err and "WARNING" not in err, err
    finally:
        coord.stop()
    # the coordinator is gone now: the agent keeps retrying, and says so once
    away = _agent(tmp_path, target, "--insecure", "--poll-seconds", "1")
    time.sleep(6)  # several retries (backoff 0.2 s, doubling)
    assert away.poll() is None  # still retrying
    err = _stop(away)
    assert sum("connection to" in ln and "lost" in ln for ln in err.splitlines()) == 1, err


def test_a_certificate_for_another_host_names_its_hosts_and_ends_the_agent(
    tmp_path: Path,
) -> None:
    """The README's DNS-only certificate dialled as 127.0.0.1: the error names the certificate's
    host and the dialled one."""
    ca, cert, key = deploy.make_certs(tmp_path / "dns", hosts=("coordinator.example",))
    coord, target = _coordinator(tmp_path, cert, key)
    try:
        agent = _agent(tmp_path, target, "--ca-cert", str(ca))
        try:
            assert agent.wait(timeout=60) == 1
        finally:
            err = _stop(agent)
        errors = [ln for ln in err.splitlines() if " ERROR " in ln]
        assert len(errors) == 1, err
        assert "is for coordinator.example, not 127.0.0.1" in errors[0], errors[0]
    finally:
        coord.stop()
