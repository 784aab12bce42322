"""Per-user device credentials: a party enrolls its users and gives each a credential bound to
its user id, which the party agent verifies without a look-up.

A credential is ``fhc1:<party id>:<user>:<tag>``: ``user`` is the user's index (0 ≤ user <
the party's enrolled count, which is the party's user count) and ``tag`` the first 16 bytes
(base64url) of HMAC-SHA256 under the agent's secret key (kept in its SQLite file) over the
party id and the index. A device presents it as its bearer token; a report then counts for that
user only, once per run (:mod:`fedhh.clients.devices`). Credentials are issued with
``fedhh party enroll`` and can be re-issued any time (the same key gives the same credential).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedhh.errors import ParameterError
from fedhh.wire.security import Identity, bearer_token, check_name

PREFIX = "fhc1"
KEY_BYTES = 32
TAG_BYTES = 16
MAX_CREDENTIAL = 160


@dataclass(frozen=True)
class Credentials:
    """Issues and verifies the credentials of one party's enrolled users."""

    party_id: str
    key: bytes
    n_users: int

    def __post_init__(self) -> None:
        check_name("party id", self.party_id)
        if len(self.key) < KEY_BYTES:
            raise ParameterError("a credential key needs at least 32 bytes")
        if self.n_users < 1:
            raise ParameterError(f"a party enrolls at least one user, not {self.n_users}")

    def _tag(self, user: int) -> str:
        msg = f"fedhh-credential/1\0{self.party_id}\0{user}".encode()
        digest = hmac.new(self.key, msg, hashlib.sha256).digest()[:TAG_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, user: int) -> str:
        if not 0 <= user < self.n_users:
            raise ParameterError(f"user {user} is not enrolled (0..{self.n_users - 1})")
        return f"{PREFIX}:{self.party_id}:{user}:{self._tag(user)}"

    def verify(self, credential: str) -> int | None:
        """The enrolled user a credential belongs to, or None (forged, another party's, a user
        not enrolled, malformed)."""
        if not isinstance(credential, str) or len(credential) > MAX_CREDENTIAL:
            return None
        parts = credential.split(":")
        if len(parts) != 4 or parts[0] != PREFIX or parts[1] != self.party_id:
            return None
        text = parts[2]
        if not (text.isdigit() and text.isascii()) or len(text) > 12 or (text[0] == "0" != text):
            return None
        user = int(text)
        if user >= self.n_users:
            return None
        return user if hmac.compare_digest(parts[3], self._tag(user)) else None

    # The report endpoint's authenticator (fedhh.wire.security.AuthInterceptor).
    def identity_of(self, metadata: Sequence[Any] | None) -> Identity | None:
        user = self.verify(bearer_token(metadata))
        return None if user is None else Identity("device", str(user))


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def write_credentials(creds: Credentials, out: Path, users: range | None = None) -> int:
    """Write ``user<TAB>credential`` lines (mode 600) for the given users (default: all)."""
    users = users if users is not None else range(creds.n_users)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for u in users:
            fh.write(f"{u}\t{creds.issue(u)}\n")
    return len(users)


def read_credentials(path: Path) -> dict[str, str]:
    """user id → credential, from a file of :func:`write_credentials`."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            user, _, cred = line.partition("\t")
            out[user] = cred.strip()
    return out
