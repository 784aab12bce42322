"""The faults tests inject into real files and real processes, in one place (issue 24 item 6):
state files damaged the ways disks and operators damage them, a disk that refuses writes (a
file-size limit on a running process), and TLS set-ups that no retry can fix."""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from pathlib import Path

from fedhh.ops import deploy

PAGE = 4096  # SQLite's default page size: the unit a disk or a torn write damages


def emptied(path: Path) -> None:
    """Zero length: a crash while the file was created, or an operator's ``> file``."""
    path.write_bytes(b"")


def garbage_tail(path: Path) -> None:
    """Garbage over the last page (a torn write, a bad sector)."""
    with path.open("r+b") as fh:
        fh.seek(max(PAGE, path.stat().st_size - PAGE))
        fh.write(b"\xa5" * PAGE)


def zeroed_pages(path: Path) -> None:
    """Every page after the header page zeroed (blocks a filesystem lost), the header intact."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(PAGE)
        fh.write(bytes(size - PAGE))


def cut_short(path: Path) -> None:
    """Only the first half of the pages left (a copy or a restore cut short)."""
    pages = path.stat().st_size // PAGE
    with path.open("r+b") as fh:
        fh.truncate(max(1, pages // 2) * PAGE)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage-tail": garbage_tail,
    "zeroed-pages": zeroed_pages,
    "cut-short": cut_short,
}


def refuse_writes_beyond(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child's writes past ``limit`` bytes of any file fail (EFBIG), as on
    a full disk, instead of killing it with SIGXFSZ."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return limited


def limit_writes(pid: int, limit: int = 1) -> None:
    """The running process ``pid``'s disk fills: its writes past ``limit`` bytes of any file
    fail with EFBIG (Python ignores SIGXFSZ, so the process lives on)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def lift_write_limit(pid: int) -> None:
    """The disk has room again: no file-size limit on ``pid`` any more."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


# A server's certificate and key, and the CA a client is given, for each TLS fault
CERTIFICATE_FAULTS = ("other-ca", "expired", "other-host")


def certificates(d: Path, fault: str = "") -> tuple[Path, Path, Path]:
    """(the CA a client trusts, the server's certificate, its key) for 127.0.0.1: sound when
    ``fault`` is "", else with the fault: "other-ca" (the client trusts another CA), "expired"
    (the certificate expired yesterday), "other-host" (a certificate for coordinator.example
    only, like the README's DNS-only example dialled as 127.0.0.1)."""
    if fault == "other-ca":
        _, cert, key = deploy.make_certs(d / "server")
        ca, _, _ = deploy.make_certs(d / "other")
        return ca, cert, key
    if fault == "expired":
        return deploy.make_certs(d / "expired", valid_days=-1)
    if fault == "other-host":
        return deploy.make_certs(d / "dns", hosts=("coordinator.example",))
    if fault:
        raise ValueError(f"unknown certificate fault {fault!r}")
    return deploy.make_certs(d / "sound")
