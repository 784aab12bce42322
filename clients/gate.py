"""What the ingestion shards of one party share (docs/deployment.md, "Several ingestion
processes"): a file every shard maps into memory, changed only under an exclusive ``flock``.

It holds the open report task (run, task, quota, open or not), each shard's count of the task's
and the run's accepted reports, and two bits per enrolled user for the run: none, *pending*
(accepted by a shard, its write not yet durable) or *done* (stored in that shard's ledger). A
user is accepted by one shard only, and the task's quota is never exceeded, whichever shards the
user's calls reach.

Crash safety. Before a shard marks users pending it writes them into one of its *slots* (one
slot per submission in flight); when the write is durable it marks them done and frees the slot.
A shard killed at any moment leaves its slots behind: the restarted shard (same index, same
ledger) resolves each user in them against its ledger (done if stored, none if not) and recounts
its own counts from the ledger. Only the shard itself writes its slots and counts, and the users
it marks were none until then, so the repair needs nothing of the other shards. A user pending
at another shard is told to ask again (UNAVAILABLE), never ALREADY_EXISTS: that shard may still
fail to store the report. The agent rebuilds the file from the ledgers whenever it starts (the
file is not fsynced: a machine crash loses it, the ledgers are the record).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np

from fedhh.errors import ParameterError
from fedhh.wire.rpc import Refused

MAGIC = b"FHHGATE1"
SLOTS = 64  # submissions a shard may have in flight (its report threads are fewer)
RUN_BYTES = 256
# magic, users, shards, slot capacity, open, task id, quota, run id length, run id
_HEAD = struct.Struct(f"<8sQIIIqqI{RUN_BYTES}s")
_HEAD_BYTES = 4096
_GEN_AT = 2048  # the run's generation (u32): slots of an earlier run are let go, not repaired
Code = grpc.StatusCode
Row = tuple[str, str, int, bytes]  # run, user, task, report (clients/store.py's)
NONE, PENDING, DONE = 0, 1, 2
ACCEPTED, ALREADY, BUSY, FULL, CLOSED = 0, 1, 2, 3, 4  # what admit says of each user


class ShardGate:
    """The shared state file of a party's ingestion shards (see the module docstring)."""

    def __init__(self, path: Path, n_users: int, shards: int, slot_cap: int) -> None:
        self.path, self.n_users, self.shards, self.slot_cap = Path(path), n_users, shards, slot_cap
        self._states = (n_users + 3) // 4  # two bits a user
        self._counts = _HEAD_BYTES
        self._slot_bytes = 8 + 8 * slot_cap
        self._slots = self._counts + 16 * shards
        self._bits = self._slots + shards * SLOTS * self._slot_bytes
        self.size = self._bits + self._states  # = _size(n_users, shards, slot_cap)
        self._lock = threading.Lock()  # flock does not exclude threads of one process
        self._fd = os.open(self.path, os.O_RDWR)
        try:
            if os.fstat(self._fd).st_size != self.size:
                raise ParameterError(f"{path}: not the shard state of this party's layout")
            self._mm = mmap.mmap(self._fd, self.size)
        except BaseException:
            os.close(self._fd)
            raise
        head = _HEAD.unpack_from(self._mm, 0)
        if head[:4] != (MAGIC, n_users, shards, slot_cap):
            self.close()
            raise ParameterError(f"{path}: not the shard state of this party's layout")
        self.counts = np.frombuffer(self._mm, dtype="<i8", count=2 * shards, offset=self._counts)
        self.counts = self.counts.reshape(shards, 2)  # (task's, run's) accepted reports per shard
        self.bits = np.frombuffer(self._mm, dtype=np.uint8, count=self._states, offset=self._bits)

    @classmethod
    def create(cls, path: Path, n_users: int, shards: int, slot_cap: int) -> ShardGate:
        """A fresh file (no task open, no user marked), replacing any earlier one."""
        aside = path.with_name(path.name + ".new")
        with open(aside, "wb") as fh:
            fh.truncate(cls._size(n_users, shards, slot_cap))  # sparse: pages made as used
            fh.write(_HEAD.pack(MAGIC, n_users, shards, slot_cap, 0, -1, 0, 0, b""))
        os.replace(aside, path)
        return cls(path, n_users, shards, slot_cap)

    @staticmethod
    def _size(n_users: int, shards: int, slot_cap: int) -> int:
        return _HEAD_BYTES + 16 * shards + shards * SLOTS * (8 + 8 * slot_cap) + (n_users + 3) // 4

    def close(self) -> None:
        del self.counts, self.bits  # (no view may outlive the map)
        self._mm.close()
        os.close(self._fd)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    # --- the task ------------------------------------------------------------------------------
    def task(self) -> tuple[str, int, int, bool]:
        """(run, task, quota, open) of the task the shards collect for."""
        _, _, _, _, is_open, task, quota, n, run = _HEAD.unpack_from(self._mm, 0)
        return run[:n].decode(), int(task), int(quota), bool(is_open)

    def _set_task(self, run: str, task: int, quota: int, is_open: bool) -> None:
        raw = run.encode()
        if len(raw) > RUN_BYTES:
            raise ParameterError(f"run id of {len(raw)} bytes; the shards take ≤ {RUN_BYTES}")
        head = (MAGIC, self.n_users, self.shards, self.slot_cap, int(is_open), task, quota)
        _HEAD.pack_into(self._mm, 0, *head, len(raw), raw)

    def begin(self, run: str, task: int, quota: int) -> bool:
        """Make ``task`` of ``run`` the shards' task, closed until :meth:`set_open`; a new run
        starts with no user marked. True if the run is new (its shards then mark their users)."""
        with self.locked():
            new = self.task()[0] != run
            self._set_task(run, task, quota, False)
            self.counts[:, 0] = 0
            if new:
                self.counts[:, 1] = 0
                self.bits[:] = 0
                gen = (self._gen() + 1) & 0xFFFFFFFF
                self._mm[_GEN_AT : _GEN_AT + 4] = gen.to_bytes(4, "little")
            return new

    def set_open(self, is_open: bool) -> None:
        """Let the shards take reports for the task (or stop all of them at once)."""
        with self.locked():
            self._set_task(*self.task()[:3], is_open)

    def count(self) -> int:
        """Reports the shards accepted for the task (those being written included)."""
        return int(self.counts[:, 0].sum())

    def run_count(self, run: str) -> int | None:
        """Reports accepted in ``run`` by all shards (None: it is not the shards' run)."""
        return int(self.counts[:, 1].sum()) if self.task()[0] == run else None

    # --- users ---------------------------------------------------------------------------------
    def state(self, users: np.ndarray) -> np.ndarray:
        """NONE, PENDING or DONE of each user in the shards' run."""
        u = np.asarray(users, dtype=np.int64)
        return (self.bits[u >> 2] >> ((u & 3) << 1).astype(np.uint8)) & 3

    def _mark(self, users: np.ndarray, value: int) -> None:
        u = np.asarray(users, dtype=np.int64)
        for lane in range(4):  # the users of one lane are in distinct bytes
            at = u[(u & 3) == lane] >> 2
            if at.size:
                keep = np.uint8(0xFF ^ (3 << (2 * lane)))
                self.bits[at] = (self.bits[at] & keep) | np.uint8(value << (2 * lane))

    def load(self, shard: int, users: Sequence[int], task_count: int, run_count: int) -> None:
        """Shard ``shard``'s share at a task's open: its ledger's users of the run (done) and
        its counts."""
        with self.locked():
            self._mark(np.asarray(users, dtype=np.int64), DONE)
            self.counts[shard] = (task_count, run_count)

    def _slot(self, shard: int, i: int) -> int:
        """Where slot ``i`` of ``shard`` starts: its length (8 bytes), then its users."""
        return self._slots + (shard * SLOTS + i) * self._slot_bytes

    def _gen(self) -> int:
        return int.from_bytes(self._mm[_GEN_AT : _GEN_AT + 4], "little")

    def _taken(self, at: int) -> np.ndarray:
        """The users in the slot at ``at`` (none if it is free or of an earlier run)."""
        n = int.from_bytes(self._mm[at : at + 4], "little")
        if int.from_bytes(self._mm[at + 4 : at + 8], "little") != self._gen():
            n = 0
        return np.frombuffer(self._mm, dtype="<i8", count=n, offset=at + 8).copy()

    def admit(self, shard: int, run: str, task: int, users: Sequence[int]) -> tuple[list[int], int]:
        """Take what can be taken of ``users`` (in order) for ``task`` of ``run``: each one's
        outcome (ACCEPTED, ALREADY, BUSY, FULL, CLOSED) and the slot holding the accepted ones
        (-1: none), which :meth:`settle` frees."""
        if len(users) > self.slot_cap:
            raise ParameterError(f"{len(users)} reports at once; the shards take ≤ {self.slot_cap}")
        with self.locked():
            t_run, t_task, quota, is_open = self.task()
            if not is_open or (t_run, t_task) != (run, task):
                return [CLOSED] * len(users), -1
            left = quota - self.count()
            states = self.state(np.asarray(users, dtype=np.int64)).tolist() if users else []
            out: list[int] = []
            taken: list[int] = []
            seen: set[int] = set()
            for u, s in zip(users, states, strict=True):
                if s == DONE or u in seen:
                    out.append(ALREADY)
                elif s == PENDING:
                    out.append(BUSY)
                elif len(taken) >= left:
                    out.append(FULL)
                else:
                    out.append(ACCEPTED)
                    taken.append(u)
                    seen.add(u)
            if not taken:
                return out, -1
            slot = self._free_slot(shard)
            if slot < 0:
                return [BUSY if o == ACCEPTED else o for o in out], -1
            at = self._slot(shard, slot)
            ids = np.asarray(taken, dtype="<i8").tobytes()
            self._mm[at + 8 : at + 8 + len(ids)] = ids  # the slot first: a crash after this
            head = len(taken).to_bytes(4, "little") + self._gen().to_bytes(4, "little")
            self._mm[at : at + 8] = head  # is repaired from it
            self._mark(np.asarray(taken, dtype=np.int64), PENDING)
            self.counts[shard] += len(taken)
            return out, slot

    def admit_entries(
        self,
        shard: int,
        run_id: str,
        task_id: int,
        entries: Sequence[tuple[int, object]],
        frames: list[bytes],
        problems: list[str | None],
    ) -> tuple[list[tuple[int, Refused]], list[Row], int]:
        """A shard's submission (checked ``entries`` with their frames and problems): the
        refused entries, the rows to write of those taken and the slot holding them."""
        good = [i for i, p in enumerate(problems) if p is None]
        said, slot = self.admit(shard, run_id, task_id, [int(entries[i][0]) for i in good])
        outcome = dict(zip(good, said, strict=True))
        out: list[tuple[int, Refused]] = []
        rows: list[Row] = []
        for i, ((user, _), data, problem) in enumerate(zip(entries, frames, problems, strict=True)):
            got = outcome.get(i)
            if problem is not None:
                out.append((i, Refused(Code.INVALID_ARGUMENT, problem)))
            elif got == ACCEPTED:
                rows.append((run_id, str(user), task_id, data))
            elif got == ALREADY:
                why = f"user {user} has already reported in run {run_id}"
                out.append((i, Refused(Code.ALREADY_EXISTS, why)))
            elif got == BUSY:
                why = f"a report of user {user} is being stored; ask again"
                out.append((i, Refused(Code.UNAVAILABLE, why)))
            elif got == FULL:
                why = f"task {task_id} is full; fetch the next task"
                out.append((i, Refused(Code.FAILED_PRECONDITION, why)))
            else:
                why = f"task {task_id} closed; fetch the next"
                out.append((i, Refused(Code.FAILED_PRECONDITION, why)))
        return out, rows, slot

    def _free_slot(self, shard: int) -> int:
        for i in range(SLOTS):
            at = self._slot(shard, i)
            if self._mm[at : at + 8] == bytes(8):
                return i
        return -1

    def settle(self, shard: int, slot: int, stored: bool) -> None:
        """The slot's reports are durable (done) or were not stored (none, counts back)."""
        with self.locked():
            at = self._slot(shard, slot)
            taken = self._taken(at)
            self._mark(taken, DONE if stored else NONE)
            if not stored:
                self.counts[shard] -= taken.size
            self._mm[at : at + 8] = bytes(8)

    def repair(
        self,
        shard: int,
        stored: Callable[[str, np.ndarray], np.ndarray],
        counts: Callable[[str, int], tuple[int, int]],
    ) -> int:
        """After a crash of ``shard``: each user in its slots done if ``stored(run, users)``
        says its report is in the ledger, none if not; its counts from ``counts(run, task)``.
        Returns how many users it let go (accepted, never stored: never acknowledged)."""
        lost = 0
        with self.locked():
            run, task, _, _ = self.task()
            for slot in range(SLOTS):
                at = self._slot(shard, slot)
                taken = self._taken(at)
                if taken.size:
                    kept = stored(run, taken)
                    self._mark(taken[kept], DONE)
                    self._mark(taken[~kept], NONE)
                    lost += int((~kept).sum())
                self._mm[at : at + 8] = bytes(8)
            if run:
                self.counts[shard] = counts(run, task)
        return lost
