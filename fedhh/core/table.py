"""Plain-text tables that stay aligned whatever script the items are in: the one table layout
of every command (``fedhh simulate``, ``fedhh compare``, ``fedhh query``).

A column is padded to the *display* width of its cells (a wide East Asian character takes two
terminal cells, a combining mark or a format character none), and a cell holding right-to-left
text (Hebrew, Arabic) is wrapped in Unicode's first-strong isolate (U+2068 … U+2069), so that the
terminal's bidirectional reordering stays inside the cell instead of swapping it with its
neighbours (Unicode UAX #9, "isolates").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

FSI, PDI = "\u2068", "\u2069"  # first-strong isolate, pop directional isolate
_RTL = frozenset({"R", "AL"})


def cell_width(text: str) -> int:
    """Terminal cells ``text`` takes: 2 for wide and full-width characters, 0 for combining
    marks and format characters (the isolates included), 1 otherwise."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def isolate(text: str) -> str:
    """``text`` wrapped in an isolate if it holds right-to-left characters, else unchanged."""
    if any(unicodedata.bidirectional(ch) in _RTL for ch in text):
        return FSI + text + PDI
    return text


def clip(text: str, width: int) -> str:
    """The longest start of ``text`` that fits ``width`` cells (… marks a cut)."""
    if cell_width(text) <= width:
        return text
    out, used = "", 0
    for ch in text:
        w = cell_width(ch)
        if used + w > width - 1:
            break
        out, used = out + ch, used + w
    return out + "…"


def pad(text: str, width: int, right: bool = False) -> str:
    """``text`` (isolated if right-to-left) padded with spaces to ``width`` cells."""
    fill = " " * max(0, width - cell_width(text))
    shown = isolate(text)
    return fill + shown if right else shown + fill


def text_table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[bool] | None = None,
    gap: int = 2,
) -> str:
    """``head`` and ``rows`` (strings) as aligned columns; ``right[i]``: column i is aligned to
    the right (numbers). Trailing spaces are dropped."""
    right = list(right) if right is not None else [False] * len(head)
    widths = [max(cell_width(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = []
    for r in (head, *rows):
        cells = [pad(c, w, al) for c, w, al in zip(r, widths, right, strict=True)]
        lines.append((" " * gap).join(cells).rstrip())
    return "\n".join(lines)
