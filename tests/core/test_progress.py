"""The one status line of long commands (fedhh.core.progress): rewritten in place on a
terminal, a line per change elsewhere, throttled but never losing the last line."""

from __future__ import annotations

import io

from fedhh.core.progress import StatusLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_line_is_rewritten_cut_and_cleared() -> None:
    out = Terminal()
    line = StatusLine(out, width=10)
    line.show("round 1/4 · level")
    line.show("round 2/4 · level")
    line.clear()
    assert out.getvalue() == "\r\033[Kround 1/4 \r\033[Kround 2/4 \r\033[K"
    line.clear()  # nothing shown: nothing to clear
    assert out.getvalue().endswith("round 2/4 \r\033[K")


def test_off_a_terminal_a_line_per_change_throttled_and_the_last_always() -> None:
    out = io.StringIO()
    line = StatusLine(out)
    for text, key in (("round 1 a", 1), ("round 1 b", 1), ("round 2", 2)):
        line.show(text, key=key)
    assert out.getvalue().splitlines() == ["round 1 a", "round 2"]
    slow = io.StringIO()
    line = StatusLine(slow, every=3600.0)  # a line an hour at most
    for i in range(1, 5):
        line.show(f"{i}/4 runs", final=i == 4)
    assert slow.getvalue().splitlines() == ["1/4 runs", "4/4 runs"]
    line.keep()  # off a terminal there is no line to end
    assert slow.getvalue().endswith("4/4 runs\n")


def test_disabled_shows_nothing() -> None:
    out = Terminal()
    line = StatusLine(out, enabled=False)
    line.show("x", final=True)
    line.clear()
    line.keep()
    assert out.getvalue() == ""
