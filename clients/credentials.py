"""Per-user device credentials: a party enrolls its users and gives each a credential bound to
its user id, which the party agent verifies without a look-up; credentials expire, and a party
can revoke a user's.

A credential is ``fhc2:<party id>:<user>:<issued>:<expires>:<tag>``: ``user`` is the user's
index (0 ≤ user < the party's enrolled count, which is the party's user count), ``issued`` and
``expires`` are Unix times in milliseconds (``expires`` 0: never) and ``tag`` the first 16 bytes
(base64url) of HMAC-SHA256 under the agent's secret key (kept in its SQLite file) over the party
id, the index and both times, so none of them can be changed. A device presents it as its bearer
token; a report then counts for that user only, once per run (:mod:`fedhh.clients.devices`).

Credentials are issued with ``fedhh party enroll`` (``--valid-days``, default 365). ``fedhh party
revoke --user U`` records, in the agent's state file, that every credential of user U issued
until then is void; the agent reads that list within :data:`REVOCATION_REFRESH` seconds, without
a restart, and a credential issued later (``enroll --only U``) works again. The first format,
``fhc1:<party id>:<user>:<tag>`` (no times), is still accepted: it never expires and counts as
issued at time 0, so a revocation voids it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedhh.errors import ParameterError
from fedhh.wire.security import Identity, bearer_token, check_name

PREFIX = "fhc2"
LEGACY = "fhc1"
KEY_BYTES = 32
TAG_BYTES = 16
MAX_CREDENTIAL = 200
REVOCATION_REFRESH = 1.0  # seconds: how stale the agent's copy of the revocation list may be
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _number(text: str, digits: int) -> int | None:
    """A canonical non-negative decimal of at most ``digits`` digits, else None."""
    if not (text.isdigit() and text.isascii()) or len(text) > digits or (text[0] == "0" != text):
        return None
    return int(text)


@dataclass(frozen=True)
class Credentials:
    """Issues and verifies the credentials of one party's enrolled users. ``revoked``: user →
    the time (ms) up to which that user's credentials are void (the agent's revocation list)."""

    party_id: str
    key: bytes
    n_users: int
    revoked: Callable[[], Mapping[int, int]] | None = None

    def __post_init__(self) -> None:
        check_name("party id", self.party_id)
        if len(self.key) < KEY_BYTES:
            raise ParameterError("a credential key needs at least 32 bytes")
        if self.n_users < 1:
            raise ParameterError(f"a party enrolls at least one user, not {self.n_users}")

    def _tag(self, user: int, issued: int | None = None, expires: int = 0) -> str:
        if issued is None:  # the first format
            msg = f"fedhh-credential/1\0{self.party_id}\0{user}"
        else:
            msg = f"fedhh-credential/2\0{self.party_id}\0{user}\0{issued}\0{expires}"
        digest = hmac.new(self.key, msg.encode(), hashlib.sha256).digest()[:TAG_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, user: int, valid_days: float = 365.0, issued: int | None = None) -> str:
        """User ``user``'s credential, valid for ``valid_days`` from ``issued`` (ms; default
        now); ``valid_days`` 0: it never expires."""
        if not 0 <= user < self.n_users:
            raise ParameterError(f"user {user} is not enrolled (0..{self.n_users - 1})")
        if not 0 <= valid_days <= 100 * 365:
            raise ParameterError(f"valid days must be in [0, 36500], got {valid_days}")
        at = now_ms() if issued is None else int(issued)
        expires = at + round(valid_days * DAY_MS) if valid_days else 0
        return f"{PREFIX}:{self.party_id}:{user}:{at}:{expires}:{self._tag(user, at, expires)}"

    def check(self, credential: str, now: int | None = None) -> tuple[int | None, str]:
        """(the enrolled user a credential belongs to, "") or (None, why it is refused: not a
        credential of this party, expired, revoked)."""
        invalid = (None, "missing or invalid user credential")
        if not isinstance(credential, str) or len(credential) > MAX_CREDENTIAL:
            return invalid
        parts = credential.split(":")
        if len(parts) == 4 and parts[0] == LEGACY:
            issued, expires, fields = 0, 0, parts
        elif len(parts) == 6 and parts[0] == PREFIX:
            times = _number(parts[3], 16), _number(parts[4], 16)
            if times[0] is None or times[1] is None:
                return invalid
            issued, expires, fields = times[0], times[1], parts
        else:
            return invalid
        user = _number(fields[2], 12) if fields[1] == self.party_id else None
        if user is None or user >= self.n_users:
            return invalid
        want = self._tag(user) if parts[0] == LEGACY else self._tag(user, issued, expires)
        if not hmac.compare_digest(fields[-1], want):
            return invalid
        now = now_ms() if now is None else now
        if expires and now >= expires:
            return None, f"user credential expired at {_when(expires)}; ask the party for a new one"
        void_until = (self.revoked() if self.revoked is not None else {}).get(user)
        if void_until is not None and issued <= void_until:
            return None, f"user credential revoked at {_when(void_until)}"
        return user, ""

    def verify(self, credential: str) -> int | None:
        """The enrolled user a valid credential belongs to, or None."""
        return self.check(credential)[0]

    # The report endpoint's authenticator (fedhh.wire.security.AuthInterceptor).
    def identity_of(self, metadata: Sequence[Any] | None) -> Identity | None:
        user = self.verify(bearer_token(metadata))
        return None if user is None else Identity("device", str(user))


class RevocationList:
    """The agent's revocation list (``fedhh party revoke`` writes it into the state file from
    another process), read again at most every :data:`REVOCATION_REFRESH` seconds."""

    def __init__(self, read: Callable[[], Mapping[int, int]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._list: Mapping[int, int] = {}

    def __call__(self) -> Mapping[int, int]:
        if time.monotonic() - self._at >= REVOCATION_REFRESH:
            with self._lock:
                if time.monotonic() - self._at >= REVOCATION_REFRESH:
                    self._list = dict(self._read())
                    self._at = time.monotonic()
        return self._list


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def write_credentials(
    creds: Credentials,
    out: Path,
    users: Sequence[int] | None = None,
    valid_days: float = 365.0,
) -> int:
    """Write ``user<TAB>credential`` lines (mode 600) for the given users (default: all), each
    valid for ``valid_days`` (0: never expires)."""
    users = users if users is not None else range(creds.n_users)
    at = now_ms()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for u in users:
            fh.write(f"{u}\t{creds.issue(u, valid_days, issued=at)}\n")
    return len(users)


def read_credentials(path: Path) -> dict[str, str]:
    """user id → credential, from a file of :func:`write_credentials`."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            user, _, cred = line.partition("\t")
            out[user] = cred.strip()
    return out
