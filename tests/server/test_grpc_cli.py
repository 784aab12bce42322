"""`fedhh coordinator serve` and `fedhh party serve` refuse what they cannot serve with one
`fedhh: error:` line and exit status 2, never a traceback and never silently: malformed
addresses, ports out of range or in use, addresses not on this machine, a missing database
directory, missing or swapped certificate and key."""

from __future__ import annotations

import json
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from grpc_harness import FEDHH, make_certs

from fedhh.wire.tokens import add_token


def test_serve_errors_are_one_line(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    tokens = tmp_path / "tokens.json"
    add_token(tokens, "party", "party-0", tmp_path / "p.token")
    data = tmp_path / "items.txt"
    data.write_text("1\n2\n3\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    used = busy.getsockname()[1]

    tls = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    swapped = ["--tls-cert", str(certs.key), "--tls-key", str(certs.cert)]
    no_cert = ["--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(certs.key)]
    db = ["--db", str(tmp_path / "c.sqlite"), "--tokens", str(tokens)]

    def coordinator(*args: str) -> list[str]:
        return ["coordinator", "serve", *args]

    def party(*args: str) -> list[str]:
        return [
            *("party", "serve", "--party-id", "party-0", "--token-file", str(tmp_path / "p.token")),
            *("--data", str(data), "--item-bits", "8", "--insecure", *args),
        ]

    cases = {
        "bad address": (coordinator("--listen", "nonsense", *db, *tls), "expected HOST:PORT"),
        "port 99999": (coordinator("--listen", "127.0.0.1:99999", *db, *tls), "0..65535"),
        "port in use": (coordinator("--listen", f"127.0.0.1:{used}", *db, *tls), "in use"),
        "not here": (coordinator("--listen", "192.0.2.1:7700", *db, *tls), "cannot listen"),
        "no host": (coordinator("--listen", "no.such.host.invalid:7700", *db, *tls), "host"),
        "missing dir": (
            coordinator(
                "--listen", "127.0.0.1:0", "--db", "/no/c.sqlite", "--tokens", str(tokens), *tls
            ),
            "not a directory",
        ),
        "swapped": (coordinator("--listen", "127.0.0.1:0", *db, *swapped), "as a pair"),
        "no cert": (coordinator("--listen", "127.0.0.1:0", *db, *no_cert), "does not exist"),
        "party db": (
            party("--coordinator", "127.0.0.1:7700", "--db", "/nonexistent/p.sqlite"),
            "not a directory",
        ),
        "party target": (
            party("--coordinator", "nowhere", "--db", str(tmp_path / "p.sqlite")),
            "expected HOST:PORT",
        ),
    }

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FEDHH, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(cases, pool.map(run, [a for a, _ in cases.values()]), strict=True))
    busy.close()
    for name, out in done.items():
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2, (name, out.stderr)
        assert len(lines) == 1 and lines[0].startswith("fedhh: error: "), (name, out.stderr)
        assert cases[name][1] in lines[0], (name, lines[0])


def test_the_audit_log_is_read_without_touching_the_file(tmp_path: Path) -> None:
    """``fedhh coordinator audit`` prints the audit log of a coordinator's state file, filtered
    by run and actor, as text or JSON lines, read-only; another kind of file is refused."""
    from fedhh.clients.store import AgentStore
    from fedhh.server.store import Store

    db = tmp_path / "coordinator.sqlite"
    store = Store(db)
    store.audit("alice", "start", "r1", '["a"]')
    store.audit("coordinator", "launched", "r1", "sizes [10]")
    store.audit("bob", "start", "r2", '["b"]')
    store.close()
    before = db.read_bytes()

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [*FEDHH, "coordinator", "audit", "--db", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    out = audit(str(db), "--run", "r1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()  # a header, then one row an event
    assert len(lines) == 3 and lines[0].split() == ["at", "actor", "action", "run", "detail"]
    assert "alice" in lines[1] and "launched" in lines[2]
    assert lines[1].index("start") == lines[2].index("launched")  # aligned columns
    rows = [json.loads(ln) for ln in audit(str(db), "--json", "--last", "1").stdout.splitlines()]
    assert [(r["actor"], r["action"], r["run_id"]) for r in rows] == [("bob", "start", "r2")]
    assert db.read_bytes() == before
    AgentStore(tmp_path / "agent.sqlite").close()
    out = audit(str(tmp_path / "agent.sqlite"))
    assert (
        out.returncode == 2
        and "is a fedhh party agent state file, not the coordinator" in out.stderr
    )
