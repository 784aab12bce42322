"""Service processes started by a fedhh command (``fedhh deploy local``, the Flower simulation of
``fedhh simulate --engine flower``), and how they are stopped: by PID, children included.

Each process starts in its own session, so a terminal's Ctrl-C reaches only the command, which
stops its processes in order. :func:`stop` sends SIGTERM to each process, its process group and
every descendant found under it (Flower's SuperLink starts detached SuperExec and app processes,
which a process-group signal would miss), waits a grace period, then SIGKILLs whatever is left.
Descendants and process states come from psutil (the ``server`` extra, imported when first
needed so that the command line loads without it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl(2)


def descendants(pids: Iterable[int]) -> list[int]:
    """Every live descendant of ``pids`` (children, their children, ...)."""
    import psutil

    found: list[int] = []
    for pid in pids:
        try:
            kids = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        found += [k.pid for k in kids if k.pid not in found]
    return found


def running(pid: int) -> bool:
    """True if the process exists and has not exited (a zombie has)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when the command that started it dies (even by SIGKILL)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, output to ``log``. ``die_with_parent``: the process
    gets SIGTERM if this one dies without stopping it (Linux; only for a single-threaded
    caller, as it runs code between fork and exec)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            list(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
        )


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(procs: Sequence[subprocess.Popen[Any]], grace: float = 10.0) -> list[int]:
    """Stop ``procs`` and everything they started: SIGTERM to each, to its process group and to
    every descendant; SIGKILL to what is still running after ``grace`` seconds. Returns every
    PID it signalled (all of them have exited when it returns, unless one ignores SIGKILL)."""
    live = [p for p in procs if p.poll() is None]
    tree = descendants(p.pid for p in live)
    pids = [p.pid for p in live] + tree
    for p in live:
        _signal(p.pid, signal.SIGTERM, group=True)
    for pid in tree:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in live:
            p.poll()  # reap our own children
        late = [pid for pid in descendants(p.pid for p in live) if pid not in pids]
        pids += late  # started while we stopped the others
        for pid in late:
            _signal(pid, signal.SIGTERM)
        if not any(running(pid) for pid in pids):
            break
        time.sleep(0.1)
    for p in live:
        _signal(p.pid, signal.SIGKILL, group=True)
    for pid in pids:
        if running(pid):
            _signal(pid, signal.SIGKILL)
    for p in live:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process ignoring SIGKILL
            pass
    return pids
