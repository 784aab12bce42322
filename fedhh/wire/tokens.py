"""Tokens files: the SHA-256 hashes of the bearer tokens a coordinator accepts, with each
token's role and name (``fedhh coordinator add-token``, ``tokens list``, ``tokens revoke``).
A coordinator's :class:`TokenStore` reloads its file when it changes, so tokens are added and
revoked without a restart."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhh.errors import ParameterError
from fedhh.wire.security import ROLES, Identity, bearer_token, check_name, token_hash

log = logging.getLogger("fedhh.security")


class TokenStore:
    """Token hashes → identities, loaded from a tokens file. A store loaded from a file reloads
    it when it changes (checked at most every :data:`RELOAD_SECONDS`), so tokens added or revoked
    take effect without a restart; a file that no longer parses keeps the tokens it had (logged
    once)."""

    def __init__(self, entries: dict[str, Identity], path: Path | None = None) -> None:
        self._entries = dict(entries)
        self._path = path
        self._stamp = _stamp(path) if path is not None else None
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        return cls(_read_tokens(Path(path)), Path(path))

    def __len__(self) -> int:
        return len(self._entries)

    def _reload(self) -> None:
        if self._path is None or time.monotonic() - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                entries = _read_tokens(self._path)
            except ParameterError as exc:
                log.error("tokens file changed but cannot be read; keeping the last: %s", exc)
                return
            self._entries = entries
            log.info("tokens file %s reloaded: %d tokens", self._path, len(entries))

    def identify(self, token: str) -> Identity | None:
        self._reload()
        digest = token_hash(token)
        for known, ident in self._entries.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                return ident
        return None

    def identity_of(self, metadata: Sequence[Any] | None) -> Identity | None:
        token = bearer_token(metadata)
        return self.identify(token) if token else None


RELOAD_SECONDS = 1.0  # how often a coordinator looks at its tokens file for changes


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read_tokens(path: Path) -> dict[str, Identity]:
    """The hash → identity entries of a tokens file (ParameterError if it is malformed)."""
    try:
        entries = {}
        for row in json.loads(Path(path).read_text())["tokens"]:
            role, name, digest = str(row["role"]), str(row["name"]), str(row["sha256"])
            if role not in ROLES:
                raise ParameterError(f"unknown role {role!r} (choose {', '.join(ROLES)})")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ParameterError(f"bad sha256 for {role} {name!r}")
            entries[digest] = Identity(role, check_name(role, name))
    except OSError as exc:
        raise ParameterError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ParameterError(f"malformed tokens file {path}: {exc}") from None
    return entries


def list_tokens(tokens_file: Path) -> list[dict[str, str]]:
    """The tokens of a tokens file: role, name and the first 12 hex digits of its hash."""
    return [
        {"role": ident.role, "name": ident.name, "sha256": digest[:12]}
        for digest, ident in _read_tokens(Path(tokens_file)).items()
    ]


def revoke_tokens(tokens_file: Path, name: str, role: str | None = None) -> int:
    """Remove every token of ``name`` (of ``role`` only, if given) from the file; returns how
    many (ParameterError if none). A running coordinator stops accepting them within a second."""
    path = Path(tokens_file)
    _read_tokens(path)  # refuse to rewrite a malformed file
    doc = json.loads(path.read_text())
    keep = [r for r in doc["tokens"] if not (r["name"] == name and role in (None, r["role"]))]
    gone = len(doc["tokens"]) - len(keep)
    if not gone:
        raise ParameterError(f"{path} holds no {role + ' ' if role else ''}token of {name!r}")
    _write_tokens(path, {**doc, "tokens": keep})
    return gone


def _write_tokens(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def add_token(
    tokens_file: Path, role: str, name: str, out: Path, *, replace: bool = False
) -> str:
    """Create a token for (role, name), write it to ``out`` (mode 600), append its hash. A name
    that has a token of that role already is refused unless ``replace`` (its old tokens are
    revoked in the same write)."""
    if role not in ROLES:
        raise ParameterError(f"unknown role {role!r} (choose {', '.join(ROLES)})")
    check_name(role, name)
    token = secrets.token_urlsafe(32)
    path = Path(tokens_file)
    doc: dict[str, Any] = {"tokens": []}
    if path.exists():
        _read_tokens(path)  # refuse to extend a malformed file
        doc = json.loads(path.read_text())
    mine = [r for r in doc["tokens"] if (r["role"], r["name"]) == (role, name)]
    if mine and not replace:
        raise ParameterError(
            f"{role} {name!r} has a token in {path} already: --replace issues a new one and "
            "revokes the old, `fedhh coordinator tokens revoke` removes it"
        )
    doc["tokens"] = [r for r in doc["tokens"] if r not in mine]
    doc["tokens"].append({"sha256": token_hash(token), "role": role, "name": name})
    _write_tokens(path, doc)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_token_file(path: Path) -> str:
    token = Path(path).read_text().strip()
    if not token:
        raise ParameterError(f"token file {path} is empty")
    return token
