"""``fedhh deploy local``: a whole gRPC deployment on this machine in one command.

It makes a directory with everything a deployment needs, then starts the services as processes
through the public command line, exactly as one would by hand (docs/deployment.md):

* ``certs/``: a throwaway CA and a server certificate for 127.0.0.1 / localhost;
* ``tokens.json`` and ``tokens/``: a party token per party and an analyst token
  (``fedhh coordinator add-token``);
* ``data/party-<i>.txt``: each party's users' items, one per line (the federation that
  ``fedhh simulate`` builds from the same data flags, or the given ``--party-file`` files);
* ``run.toml``: a run spec for ``fedhh query start`` (the mechanism flags given here);
* ``state/`` and ``logs/``: the services' SQLite state files and logs.

Then ``fedhh coordinator serve`` (TLS, bearer tokens) and one ``fedhh party serve`` per party
run as child processes, each in its own session; the command prints the ``fedhh query`` lines
that reach them and waits. SIGINT (Ctrl-C) or SIGTERM stops the parties, then the coordinator:
SIGTERM to each and to its process group, SIGKILL after ``--grace`` seconds
(:func:`fedhh.ops.procs.stop`). A child that exits on its own ends the deployment with status 1. On
Linux the children also get SIGTERM if this command dies without stopping them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedhh.core.items import IntCodec, StringCodec
from fedhh.errors import DataError, FedHHError, ParameterError
from fedhh.extras import require
from fedhh.mechanisms.params import MechanismParams
from fedhh.ops import procs
from fedhh.run import settings

FEDHH = [sys.executable, "-m", "fedhh.cli"]
ANALYST = "analyst"
OWNED = ("certs", "tokens", "tokens.json", "data", "state", "logs", "run.toml", "coordinator.port")
MARK = ".fedhh-deploy"  # a directory this command made (so it may replace its files)


def add_deploy_parser(sub: Any) -> None:
    dsub = sub.add_parser("deploy", help="start a whole deployment").add_subparsers(
        dest="deploy_command", required=True
    )
    p = dsub.add_parser(
        "local",
        help="coordinator and party agents on this machine (TLS, tokens), until Ctrl-C",
        description="Make TLS material, tokens, party data files and a run spec in --dir, start "
        "the coordinator and one party agent per party as processes on 127.0.0.1, print how to "
        "query them, and stop them all on Ctrl-C (SIGINT) or SIGTERM.",
    )
    p.add_argument(
        "--dir", type=Path, default=Path("fedhh-local"), help="where everything goes (replaced)"
    )
    p.add_argument(
        "--port", type=int, default=0, help="the coordinator's port on 127.0.0.1 (0: a free one)"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds the services have to exit on stop before they are killed (default 10)",
    )
    settings.add_data_flags(
        p,
        "data (the same flags as fedhh simulate)",
        "one file per party, one item per line (repeat; with --item-bytes or --item-bits)",
    )
    settings.add_flags(
        p, MechanismParams, "mechanism of the run spec run.toml (docs/mechanisms.md)"
    )
    p.set_defaults(func=cmd_deploy_local)


# --- the directory ------------------------------------------------------------------------------
def make_certs(
    d: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1"), valid_days: float = 30.0
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``hosts`` (DNS names or IP addresses; by
    default localhost and 127.0.0.1) signed by it, the server's valid for ``valid_days`` from
    now (≤ 0: expired already, as a test of an expired certificate wants): (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedhh local CA")])

    def cert(
        subject: x509.Name, public: Any, *ext: tuple[Any, bool], days: float = 30.0
    ) -> x509.Certificate:
        until = now + datetime.timedelta(days=days)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(
                min(now - datetime.timedelta(minutes=5), until - datetime.timedelta(days=1))
            )
            .not_valid_after(until)
        )
        for e, critical in ext:
            b = b.add_extension(e, critical=critical)
        return b.sign(ca_key, hashes.SHA256())

    ca = cert(ca_name, ca_key.public_key(), (x509.BasicConstraints(ca=True, path_length=0), True))
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    server = cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]),
        key.public_key(),
        (x509.SubjectAlternativeName(names), False),
        days=valid_days,
    )
    paths = (d / "ca.pem", d / "server.pem", d / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths[2].touch(mode=0o600)
    paths[2].write_bytes(pem)
    return paths


def _fresh_dir(d: Path) -> Path:
    d = d.resolve()
    if d.exists() and any(d.iterdir()) and not (d / MARK).exists():
        raise ParameterError(f"--dir {d} is not empty and not a fedhh deploy directory")
    d.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        path = d / name
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    (d / MARK).write_text("made by fedhh deploy local; replaced at its next start\n")
    return d


def add_token(d: Path, role: str, name: str) -> Path:
    """A token for ``role``/``name``, as ``fedhh coordinator add-token`` makes it."""
    from fedhh.wire.tokens import add_token as add

    out = d / "tokens" / f"{name}.token"
    out.parent.mkdir(exist_ok=True)
    add(d / "tokens.json", role, name, out)
    return out


def write_party_files(d: Path, args: argparse.Namespace) -> tuple[list[Path], list[str], int]:
    """The parties' data files, their user counts and the codec flag of ``fedhh party serve``
    (returns files, ``--item-*`` flag and value, and the codec's m)."""
    _, ds = settings.data_from_flags(args)
    codec = ds.codec
    flag = ["--item-bits", str(codec.m)] if isinstance(codec, IntCodec) else []
    if isinstance(codec, StringCodec):
        flag = ["--item-bytes", str(codec.m // 8)]
    if args.party_file:
        return [p.resolve() for p in args.party_file], flag, ds.m
    out = d / "data"
    out.mkdir()
    files = []
    for i, codes in enumerate(ds.parties):
        path = out / f"party-{i}.txt"
        if isinstance(codec, IntCodec):
            path.write_text("".join(f"{int(c)}\n" for c in codes))
        else:
            items = codec.to_bytes(codes)
            if any(b"\n" in it or it.endswith(b"\r") or not it for it in items):
                raise DataError(f"party {i} has items that do not fit one per line")
            path.write_bytes(b"".join(it + b"\n" for it in items))
        files.append(path)
    return files, flag, ds.m


def write_run_spec(path: Path, args: argparse.Namespace, parties: list[str], m: int) -> None:
    params = settings.from_flags(MechanismParams, args, m=m)  # checked as the coordinator will
    given = {"mechanism", "epsilon", "k", "seed", "m"}
    given |= {f.name for f in dataclasses.fields(params) if getattr(args, f.name, None) is not None}
    path.write_text(settings.run_spec_text(parties, params, given))


# --- the processes ------------------------------------------------------------------------------
class Deployment:
    def __init__(self, d: Path, grace: float) -> None:
        self.d, self.grace = d, grace
        self.children: dict[str, Any] = {}
        self.stopping = False

    def start(self, name: str, *argv: str) -> None:
        self.children[name] = procs.start(
            [*FEDHH, *argv], self.d / "logs" / f"{name}.log", cwd=self.d, die_with_parent=True
        )

    def log_tail(self, name: str) -> str:
        path = self.d / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def wait_port(self, name: str, port_file: Path, timeout: float = 60.0) -> int | None:
        """The port ``name`` wrote (None if asked to stop meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if port_file.exists() and port_file.read_text().strip():
                return int(port_file.read_text())
            if self.children[name].poll() is not None:
                break
            time.sleep(0.05)
        if self.stopping:
            return None
        raise FedHHError(f"{name} did not start:\n{self.log_tail(name)}")

    def exited(self) -> str | None:
        """``name (status N)`` of a child that has exited, if one has."""
        for name, p in self.children.items():
            if p.poll() is not None:
                return f"{name} (status {p.returncode})"
        return None

    def stop(self) -> None:
        parties = [p for n, p in self.children.items() if n != "coordinator"]
        procs.stop(parties, self.grace)
        if "coordinator" in self.children:
            procs.stop([self.children["coordinator"]], self.grace)


def cmd_deploy_local(args: argparse.Namespace) -> int:
    require("server", "fedhh deploy local")
    d = _fresh_dir(args.dir)
    files, item_flag, m = write_party_files(d, args)
    parties = [f"party-{i}" for i in range(len(files))]
    write_run_spec(d / "run.toml", args, parties, m)
    ca, cert, key = make_certs(d / "certs")
    analyst = add_token(d, "analyst", ANALYST)
    tokens = {p: add_token(d, "party", p) for p in parties}
    (d / "state").mkdir()
    dep = Deployment(d, args.grace)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: setattr(dep, "stopping", True))
    try:
        port_file = d / "coordinator.port"
        dep.start(
            "coordinator",
            *("coordinator", "serve", "--listen", f"127.0.0.1:{args.port}"),
            *("--tokens", str(d / "tokens.json")),
            *("--db", str(d / "state" / "coordinator.sqlite"), "--port-file", str(port_file)),
            *("--tls-cert", str(cert), "--tls-key", str(key)),
        )
        port = dep.wait_port("coordinator", port_file)
        if port is None:
            return 0
        target = f"127.0.0.1:{port}"
        for pid, data in zip(parties, files, strict=True):
            dep.start(
                pid,
                *("party", "serve", "--party-id", pid, "--coordinator", target),
                *("--token-file", str(tokens[pid]), "--ca-cert", str(ca)),
                *("--db", str(d / "state" / f"{pid}.sqlite"), "--data", str(data), *item_flag),
            )
        time.sleep(1.0)  # an agent with bad flags or data exits at once
        if dep.stopping:
            return 0
        if (gone := dep.exited()) is not None:
            raise FedHHError(f"{gone} exited:\n{dep.log_tail(gone.split()[0])}")
        _print_ready(d, target, ca, analyst, parties)
        while not dep.stopping:
            if (gone := dep.exited()) is not None:
                tail = dep.log_tail(gone.split()[0])
                print(f"fedhh deploy: {gone} exited:\n{tail}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("fedhh deploy: stopping the parties and the coordinator", file=sys.stderr)
        return 0
    finally:
        dep.stop()


def _print_ready(d: Path, target: str, ca: Path, token: Path, parties: Sequence[str]) -> None:
    connect = ["--coordinator", target, "--token-file", str(token), "--ca-cert", str(ca)]
    q = shlex.join(["fedhh", "query", *connect])
    print(
        f"fedhh deploy: coordinator on {target} (TLS) with parties {', '.join(parties)}\n"
        f"  certificates, tokens, party data, state and logs: {d}\n"
        "Query it from another shell (a run starts once every listed party has registered):\n"
        f"  {q} start {shlex.quote(str(d / 'run.toml'))} --wait\n"
        f"  {q} top RUN_ID -k 10\n"
        "fedhh deploy: ready (Ctrl-C stops it)",
        flush=True,
    )
