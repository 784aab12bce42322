"""Progress of a long command, the one way every command shows it (``fedhh simulate``,
``fedhh compare``, ``fedhh query start --wait``, the study runner): on a terminal one line
rewritten in place; anywhere else (a log file, a pipe, CI) a line each time what it says changes,
at most every ``every`` seconds, and always the last, so a log shows how far a run got without a
line per tick."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_CLEAR = "\r\033[K"


class StatusLine:
    """A status line on ``stream`` (stderr by default); ``enabled`` False shows nothing (a
    ``--quiet`` flag). ``width``: a terminal line is cut there so it never wraps."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every: float = 0.0,
        enabled: bool = True,
        width: int = 160,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.enabled, self.width = every, enabled, width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._key: object = object()
        self._last = -float("inf")
        self._shown = False

    def show(self, message: str, key: object = None, *, final: bool = False) -> None:
        """Show ``message``. Off a terminal it is written when ``key`` (default: the message
        itself) differs from the last written one and ``every`` seconds have passed since, or
        when ``final``."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write(_CLEAR + message[: self.width])
            self._shown = True
        else:
            key = message if key is None else key
            now = time.monotonic()
            if not final and (key == self._key or now - self._last < self.every):
                return
            self._key, self._last = key, now
            self.stream.write(message + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the line away on a terminal (the command's own output follows)."""
        if self.enabled and self.tty and self._shown:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self._shown = False

    def keep(self) -> None:
        """Leave the last line standing on a terminal (end it), so what follows starts below."""
        if self.enabled and self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
