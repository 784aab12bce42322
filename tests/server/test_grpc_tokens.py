"""Tokens an operator can manage without a restart (issue 24 item 4): a running coordinator (a
real process on 127.0.0.1) accepts a token added to its tokens file and refuses a revoked one
within a second or two; `fedhh coordinator tokens list` shows them, `add-token` refuses a second
token for a name unless `--replace` (which revokes the old), and a tokens file broken while the
coordinator runs leaves it with the tokens it had."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_harness import FEDHH, Cluster, running_cluster, wait_until

from fedhh.wire.security import open_channel
from fedhh.wire.tokens import read_token_file
from fedhh.wire.v1 import analyst_pb2, analyst_pb2_grpc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, []) as c:
        yield c


def fedhh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDHH, *args], capture_output=True, text=True, timeout=60)


def status(cluster: Cluster, token_file: Path) -> grpc.StatusCode:
    """OK, or the status the coordinator refused ListRuns with, for the token in the file."""
    token = read_token_file(token_file)
    with open_channel(cluster.target, token=token, ca_cert=cluster.certs.ca) as channel:
        try:
            analyst_pb2_grpc.AnalystServiceStub(channel).ListRuns(
                analyst_pb2.ListRunsRequest(), timeout=10
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_tokens_are_added_listed_and_revoked_while_the_coordinator_runs(cluster: Cluster) -> None:
    cluster.start_coordinator()
    alice, bob = cluster.root / "analyst-alice.token", cluster.root / "bob.token"
    tokens = str(cluster.tokens)
    assert status(cluster, alice) == grpc.StatusCode.OK

    added = fedhh("coordinator", "add-token", "--tokens", tokens, "--role", "analyst",
                  "--name", "bob", "--out", str(bob))  # fmt: skip
    assert added.returncode == 0, added.stderr
    wait_until(lambda: status(cluster, bob) == grpc.StatusCode.OK, 10, what="bob accepted")
    again = fedhh("coordinator", "add-token", "--tokens", tokens, "--role", "analyst",
                  "--name", "bob", "--out", str(cluster.root / "bob2.token"))  # fmt: skip
    assert again.returncode == 2 and "has a token" in again.stderr and "--replace" in again.stderr

    listed = fedhh("coordinator", "tokens", "list", "--tokens", tokens, "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((r["role"], r["name"]) for r in rows) == [
        ("admin", "ops"),
        ("analyst", "alice"),
        ("analyst", "bob"),
    ]
    assert all(len(r["sha256"]) == 12 for r in rows)

    revoked = fedhh("coordinator", "tokens", "revoke", "--tokens", tokens, "--name", "alice")
    assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout, revoked.stderr
    wait_until(
        lambda: status(cluster, alice) == grpc.StatusCode.UNAUTHENTICATED, 10, what="alice refused"
    )
    assert status(cluster, bob) == grpc.StatusCode.OK
    none_left = fedhh("coordinator", "tokens", "revoke", "--tokens", tokens, "--name", "alice")
    assert none_left.returncode == 2 and "no token of 'alice'" in none_left.stderr

    # --replace: bob's new token works, his old one no longer does
    old = bob.read_text()
    replaced = fedhh("coordinator", "add-token", "--tokens", tokens, "--role", "analyst",
                     "--name", "bob", "--out", str(bob), "--replace")  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    wait_until(lambda: status(cluster, bob) == grpc.StatusCode.OK and bob.read_text() != old, 10)
    (cluster.root / "old.token").write_text(old)
    wait_until(
        lambda: status(cluster, cluster.root / "old.token") == grpc.StatusCode.UNAUTHENTICATED, 10
    )

    # a broken tokens file: the coordinator keeps the tokens it had, and says so
    cluster.tokens.write_text("{not json")
    wait_until(
        lambda: (
            status(cluster, bob) == grpc.StatusCode.OK
            and "cannot be read" in cluster.procs[0].output()
        ),
        10,
        what="the error line, with bob still accepted",
    )
