"""Several ingestion processes for one device party (issue 26 item 2): the agent's side.

``fedhh party serve --devices N --ingest-processes S`` runs its report endpoint as S shards
(:mod:`fedhh.clients.shard`), child processes of the agent (or Ray actors,
:mod:`fedhh.clients.ray_shards`) listening on one address (SO_REUSEPORT: the kernel spreads
the devices' connections over them). Each shard stores its reports in its own ledger and folds
them into its own tally; what must hold across shards (a user reports once per run, a task takes
at most its quota) is the :class:`~fedhh.clients.gate.ShardGate` they share.

Towards the coordinator the agent stays one party: :class:`ShardedSource` is its
:class:`~fedhh.protocol.party.ReportSource`. It opens a task on every shard (each first marks
its users of the run in the gate), lets them take reports by opening it in the gate, closes it
in the gate at once for all, and answers with the sum of the shards' tallies, decoded once by the
party: exactly what one process answers for the same reports, as tallies add exactly.

A :class:`ShardSet` thread starts the shards and restarts a dead one on its own ledger (it
repairs its share of the gate first, then rejoins the open task); a command for a shard that is
down waits for it (up to :data:`RESTART_WAIT` s, else a StorageError: the agent retries the
request later). Child shards die with the agent (``PR_SET_PDEATHSIG``, and the end of their
control channel) and are stopped, by PID, when it stops.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np

from fedhh.clients.devices import may_close
from fedhh.clients.gate import ShardGate
from fedhh.clients.shard import START_WAIT, ShardConfig, ShardDown, reraise
from fedhh.clients.store import AgentStore
from fedhh.core import codes as cd
from fedhh.errors import ParameterError, StorageError
from fedhh.oracles import FrequencyOracle, Tally
from fedhh.protocol.party import Group

log = logging.getLogger("fedhh.party.shards")
RESTART_WAIT = 60.0  # seconds a command waits for a shard that is down
MAX_SHARDS = 256


class Shard(Protocol):
    """One shard as the agent drives it (a child process, or a Ray actor)."""

    cfg: ShardConfig
    ready: threading.Event

    def spawn(self) -> int: ...
    def alive(self) -> bool: ...
    def call(self, name: str, *args: Any) -> Any: ...
    def stop(self) -> None: ...


class ProcessShard:
    """A shard in a child process, commanded over a socket pair (pickled calls)."""

    def __init__(self, cfg: ShardConfig) -> None:
        self.cfg = cfg
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None

    def spawn(self) -> int:
        """Start the shard (call from a thread that lives as long as the agent: the child's
        death signal follows the thread that forked it); returns its port."""
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "fedhh.clients.shard", str(theirs.fileno()), str(os.getpid())]
        try:
            proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        try:
            conn.send(self.cfg)
            if not conn.poll(START_WAIT):
                raise StorageError(f"ingestion shard {self.cfg.index} did not start")
            said = conn.recv()
        except (EOFError, OSError, StorageError) as exc:
            _kill(proc)
            conn.close()
            raise StorageError(f"ingestion shard {self.cfg.index} did not start: {exc}") from None
        if said[0] != "ready":
            _kill(proc)
            conn.close()
            reraise(said[1], said[2])
        with self.lock:
            self.proc, self.conn = proc, conn
        return int(said[1])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def call(self, name: str, *args: Any) -> Any:
        with self.lock:
            conn, proc = self.conn, self.proc
            if conn is None or proc is None:
                raise ShardDown(f"ingestion shard {self.cfg.index} is not running")
            try:
                conn.send((name, args))
                said = conn.recv()
            except (EOFError, OSError):
                _kill(proc)  # (whatever state it is in: the supervisor starts it afresh)
                self.ready.clear()
                raise ShardDown(f"ingestion shard {self.cfg.index} stopped") from None
        if said[0] == "err":
            reraise(said[1], said[2])
        return said[1]

    def stop(self) -> None:
        with self.lock:
            conn, proc = self.conn, self.proc
            self.conn = self.proc = None
        if conn is None or proc is None:
            return
        try:
            conn.send(("stop", ()))
            if conn.poll(15):
                conn.recv()
            proc.wait(15)
        except (EOFError, OSError, subprocess.TimeoutExpired):
            pass
        _kill(proc)
        conn.close()


def _warm(oracle: FrequencyOracle, cand: np.ndarray) -> None:
    from fedhh.clients.ingest import report_template

    oracle.tally_support(oracle.tally(report_template(oracle, cand), cand), cand)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class ShardSet:
    """The shards of one party: started, watched and restarted by one thread (which also
    stops them at the end)."""

    def __init__(self, shards: Sequence[Shard], rejoin: Callable[[Shard], None] | None = None):
        self.shards = list(shards)
        self.rejoin = rejoin or (lambda shard: None)
        self.ports: list[int] = []  # each shard's (one port, unless not shared)
        self.restarts = 0
        self._started = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-supervisor", daemon=True)

    def start(self) -> int:
        """Start every shard; returns the first one's port (the port they share) or raises the
        error a shard did not start with."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.ports[0]

    def _run(self) -> None:
        try:
            for i, shard in enumerate(self.shards):
                port = shard.spawn()
                shard.ready.set()
                self.ports.append(port)
                host = shard.cfg.listen.rpartition(":")[0]
                if not shard.cfg.shared:  # its own port (each shard, e.g. behind a balancer)
                    shard.cfg = replace(shard.cfg, listen=f"{host}:{port}")
                elif i == 0:  # the others (and every restart) share the port it got
                    for s in self.shards:
                        s.cfg = replace(s.cfg, listen=f"{host}:{port}", check_free=False)
        except BaseException as exc:
            self._error = exc
            self._stopping.set()
        self._started.set()
        while not self._stopping.wait(0.1):
            for shard in self.shards:
                if not shard.alive() and not self._stopping.is_set():
                    self._restart(shard)
        for shard in self.shards:
            shard.stop()

    def _restart(self, shard: Shard) -> None:
        shard.ready.clear()
        log.warning("ingestion shard %d stopped; restarting it on its ledger", shard.cfg.index)
        try:
            shard.spawn()
            self.rejoin(shard)
        except Exception as exc:  # never let this thread end: its children die with it
            log.error("ingestion shard %d did not restart (%s); trying again", shard.cfg.index, exc)
            shard.stop()
            self._stopping.wait(1.0)
            return
        self.restarts += 1
        shard.ready.set()

    def call_all(self, name: str, *args: Any) -> list[Any]:
        """``name(*args)`` on every shard, in order, waiting for one that is down."""
        out = []
        for shard in self.shards:
            end = time.monotonic() + RESTART_WAIT
            while True:
                if not shard.ready.wait(max(0.0, end - time.monotonic())):
                    raise StorageError(f"ingestion shard {shard.cfg.index} is down")
                try:
                    out.append(shard.call(name, *args))
                    break
                except ShardDown:
                    continue
        return out

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass
class _Task:
    key: tuple[str, int]
    oracle: FrequencyOracle
    length: int
    candidates: np.ndarray
    quota: int
    opened: float
    closing: bool = False


class ShardedSource:
    """The reports of a device party collected by several shards (one task at a time): what
    the agent's party asks, as :class:`~fedhh.clients.devices.DeviceSource` answers it for one
    process."""

    def __init__(
        self,
        shards: ShardSet,
        gate: ShardGate,
        store: AgentStore,
        n_users: int,
        collect_seconds: float,
    ) -> None:
        self.shards, self.gate, self.store = shards, gate, store
        self.n_users, self.collect_seconds = n_users, collect_seconds
        self.lock = threading.Lock()
        self.cur: _Task | None = None
        self.spec: tuple[Any, ...] | None = None  # the open task, for a shard that restarts
        self.closed: set[str] = set()
        self.metrics: Any = None  # (each shard counts its own reports in its log)
        self._loaded = ""  # the run every shard has marked its users of
        self._warm: set[type] = set()  # oracles whose decode this process has run
        shards.rejoin = self._rejoin

    def reports(self, group: Group, rng: np.random.Generator) -> Tally | None:
        """The sum of the shards' tallies once the group's task has closed; None while it is
        collecting."""
        key = (group.request.run_id, group.request.request_id)
        with self.lock:
            cur = self.cur
            if cur is not None and cur.key == key:
                if not cur.closing:
                    n = self.gate.count()
                    if not may_close(n, cur.quota, cur.opened, self.collect_seconds):
                        return None
                    self._stop(cur)
                    log.info("run %s: report task %d closed with %d reports", *key, n)
                tally = self._merge(key, cur.oracle, cur.candidates)
                self.cur = None
                return tally
            if self.store.reply_for(*key) is not None:  # answered before: a replay
                cand = cd.oracle_keys(group.candidates, group.length)
                return self._merge(key, group.oracle, cand)
            if key[0] in self.closed:
                raise ParameterError(f"run {key[0]} has ended for this party")
            if cur is not None:
                self._stop(cur)
                self.cur = None
            self._open(key, group)
            return None

    def _open(self, key: tuple[str, int], group: Group) -> None:
        cand = cd.oracle_keys(group.candidates, group.length)
        quota = max(int(group.users.size), 1)
        new = self.gate.begin(*key, quota) or self._loaded != key[0]
        self.shards.call_all("load", *key, new)
        self._loaded = key[0]
        spec = (key, group.oracle, group.length, cand, quota)
        self.spec = spec
        self.shards.call_all("open", *spec)
        self.gate.set_open(True)
        self.cur = _Task(key, group.oracle, group.length, cand, quota, time.monotonic())
        if type(group.oracle) not in self._warm:  # the decode's compiled code, while they come
            self._warm.add(type(group.oracle))
            threading.Thread(target=_warm, args=(group.oracle, cand), daemon=True).start()
        log.info(
            "run %s: report task %d open on %d shards (length %d, %s, %d candidates, quota %d)",
            *key,
            len(self.shards.shards),
            group.length,
            group.oracle.name,
            cand.size,
            quota,
        )

    def _stop(self, cur: _Task) -> None:
        """No shard takes another report for ``cur`` (the gate closes it for all at once)."""
        self.gate.set_open(False)
        self.spec = None
        cur.closing = True

    def _merge(
        self, key: tuple[str, int], oracle: FrequencyOracle, candidates: np.ndarray
    ) -> Tally | None:
        total: Tally | None = None
        for blob in self.shards.call_all("tally", key, oracle, candidates):
            if blob is not None:
                part = Tally.from_bytes(blob)
                total = part if total is None else total + part
        return total

    def _rejoin(self, shard: Shard) -> None:
        """A restarted shard marks its users of the open run and collects for the open task."""
        run, task, _, _ = self.gate.task()
        if run:
            shard.call("load", run, task, True)
        spec = self.spec
        if spec is not None:
            shard.call("open", *spec)

    def wait(self, timeout: float) -> None:
        """Until the open task may close (its quota reached), at most ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            cur = self.cur
            if cur is not None and not cur.closing and self.gate.count() >= cur.quota:
                return
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))

    def close_run(self, run_id: str) -> np.ndarray:
        """The run is over for this party: every shard refuses its reports from now on.
        Returns the users who reported in it (all shards')."""
        with self.lock:
            self.closed.add(run_id)
            cur = self.cur
            if cur is not None and cur.key[0] == run_id:
                self._stop(cur)
                self.cur = None
            parts = self.shards.call_all("close_run", run_id)
        return np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]))

    def open_runs(self) -> list[str]:
        cur = self.cur
        return [cur.key[0]] if cur is not None else []

    def close(self) -> None:
        self.shards.stop()
        self.gate.close()


def start_sharded(
    *,
    processes: int,
    engine: str,
    store: AgentStore,
    base: ShardConfig,
) -> tuple[ShardedSource, int]:
    """Start ``processes`` shards of the party (``engine``: "processes", children of this
    process, or "ray", actors) like ``base`` (its index and paths are each one's), beside the
    agent's state file ``base.agent_db``; returns the party's source and the shards' port."""
    from fedhh.clients.devices import MAX_BATCH
    from fedhh.clients.shard import ledger_path

    db = base.agent_db
    gate_path = db.with_name(db.name + ".shards")
    gate = ShardGate.create(gate_path, base.n_users, processes, MAX_BATCH)
    cfgs = [
        replace(base, index=i, shards=processes, ledger=ledger_path(db, i), gate=gate_path)
        for i in range(processes)
    ]
    handles: list[Shard]
    if engine == "ray":
        from fedhh.clients.ray_shards import RayShard

        handles = [RayShard(c) for c in cfgs]
    else:
        handles = [ProcessShard(c) for c in cfgs]
    shards = ShardSet(handles)
    source = ShardedSource(shards, gate, store, base.n_users, base.collect_seconds)
    try:
        port = shards.start()
    except BaseException:
        gate.close()
        raise
    return source, port
