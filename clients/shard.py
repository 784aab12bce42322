"""One ingestion shard of a device party (``fedhh party serve --ingest-processes N``): the
party's report endpoint in a process of its own, with its own ledger (an
:class:`~fedhh.clients.store.AgentStore` file holding its reports and its tallies) and the
shards' shared :class:`~fedhh.clients.gate.ShardGate`. Its agent drives it
(:mod:`fedhh.clients.shards`): it marks its users in the gate when a task opens, collects for
the task the agent opens, and gives its tally of the task when asked; the agent adds the
shards' tallies and decodes once.

The same :class:`ShardNode` runs in a child process of the agent (``python -m
fedhh.clients.shard FD``: its commands come over the socket ``FD`` the agent passes it, and it
dies with the agent) or in a Ray actor (:mod:`fedhh.clients.ray_shards`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from fedhh import errors
from fedhh.clients.credentials import Credentials, RevocationList
from fedhh.clients.devices import MAX_BATCH, DeviceSource
from fedhh.clients.endpoint import WORKERS, report_server
from fedhh.clients.gate import ShardGate
from fedhh.clients.store import AgentStore, GroupCommit
from fedhh.errors import FedHHError, StorageError
from fedhh.oracles import FrequencyOracle

log = logging.getLogger("fedhh.party.shard")
PR_SET_PDEATHSIG = 1  # prctl(2)
START_WAIT = 60.0  # seconds a shard may take to start


class ShardDown(StorageError):
    """An ingestion shard stopped answering (its agent restarts it)."""


def reraise(kind: str, message: str) -> None:
    """A shard's refusal raised again in the agent, as its own type of fedhh error."""
    cls = getattr(errors, kind, FedHHError)
    raise (cls if isinstance(cls, type) and issubclass(cls, FedHHError) else FedHHError)(message)


@dataclass(frozen=True)
class ShardConfig:
    """What a shard needs to start (sent to it over its control channel, never on its command
    line: it holds the party's credential key)."""

    index: int
    shards: int
    party_id: str
    ledger: Path  # this shard's state file
    agent_db: Path  # the agent's state file (revoked credentials)
    gate: Path
    key: bytes
    n_users: int
    codec: str
    collect_seconds: float
    listen: str  # host:port (port 0: the first shard picks it, the others share it)
    tls_cert: Path | None
    tls_key: Path | None
    insecure: bool
    shared: bool  # several shards on one port (SO_REUSEPORT)
    check_free: bool = True  # the port must be free (the first shard's first start)
    log_level: str = "info"
    log_format: str = "text"


def ledger_path(db: Path, index: int) -> Path:
    """Shard ``index``'s ledger beside the agent's state file ``db``."""
    return db.with_name(f"{db.stem}.shard-{index}{db.suffix}")


class ShardNode:
    """A running shard: its ledger, its report endpoint and the commands of its agent."""

    def __init__(self, cfg: ShardConfig) -> None:
        self.cfg = cfg
        self.store = AgentStore.of_party(cfg.ledger, cfg.party_id)
        self.gate = ShardGate(cfg.gate, cfg.n_users, cfg.shards, MAX_BATCH)
        lost = self.gate.repair(
            cfg.index,
            self.store.stored_among,
            lambda run, task: (self.store.count_reports(run, task), self.store.count_reports(run)),
        )
        if lost:
            log.warning("shard %d: %d reports in flight at its stop not stored", cfg.index, lost)
        self.agent_store = AgentStore(cfg.agent_db)
        creds = Credentials(
            cfg.party_id, cfg.key, cfg.n_users, RevocationList(self.agent_store.revocations)
        )
        commit = GroupCommit(self.store, min_rows=WORKERS)
        self.source = DeviceSource(
            creds,
            cfg.codec,
            self.store,
            cfg.collect_seconds,
            commit,
            gate=self.gate,
            shard=cfg.index,
        )
        self.server, self.port = report_server(
            self.source,
            cfg.listen,
            tls_cert=cfg.tls_cert,
            tls_key=cfg.tls_key,
            insecure=cfg.insecure,
            shared=cfg.shared,
            check_free=cfg.check_free,
        )
        log.info("shard %d: report endpoint on port %d (pid %d)", cfg.index, self.port, os.getpid())

    # --- the agent's commands ------------------------------------------------------------------
    def load(self, run_id: str, task_id: int, new_run: bool) -> None:
        """Mark this shard's users of the run in the gate (a new run) and give its counts."""
        users = self.store.reported_ids(run_id) if new_run else np.zeros(0, np.int64)
        tasks, runs = self.store.count_reports(run_id, task_id), self.store.count_reports(run_id)
        self.gate.load(self.cfg.index, users, tasks, runs)

    def open(
        self,
        key: tuple[str, int],
        oracle: FrequencyOracle,
        length: int,
        candidates: np.ndarray,
        quota: int,
    ) -> None:
        self.source.open_task(key, oracle, length, candidates, quota)

    def tally(
        self, key: tuple[str, int], oracle: FrequencyOracle, candidates: np.ndarray
    ) -> bytes | None:
        """This shard's tally of the task (its collection stopped), as bytes."""
        t = self.source.task_tally(key, oracle, candidates)
        return t.to_bytes() if t is not None else None

    def close_run(self, run_id: str) -> np.ndarray:
        return self.source.close_run(run_id)

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self.server.stop(grace=2).wait()
        self.source.close()
        self.store.close()
        self.agent_store.close()
        self.gate.close()


def serve(conn: Connection) -> int:
    """Run a shard on the control channel ``conn`` until its agent stops it or goes away."""
    cfg: ShardConfig = conn.recv()
    from fedhh.cli.common import setup_logging

    setup_logging(cfg.log_level, cfg.log_format)
    try:
        node = ShardNode(cfg)
    except FedHHError as exc:
        conn.send(("err", type(exc).__name__, str(exc)))
        return 2
    conn.send(("ready", node.port))
    try:
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                log.warning("shard %d: its agent has gone; stopping", cfg.index)
                return 1
            if name == "stop":
                break
            try:
                reply: Any = ("ok", getattr(node, name)(*args))
            except FedHHError as exc:
                reply = ("err", type(exc).__name__, str(exc))
            conn.send(reply)
    finally:
        node.stop()
    conn.send(("ok", None))
    return 0


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    if sys.platform == "linux":  # die with the agent, even if it is killed (SIGKILL)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        return 1
    return serve(Connection(fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
