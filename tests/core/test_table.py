"""Text tables stay aligned in every script: display widths, right-to-left isolates, clipping."""

from __future__ import annotations

from fedhh.core.table import FSI, PDI, cell_width, clip, isolate, text_table


def test_display_widths() -> None:
    assert cell_width("abc") == 3
    assert cell_width("東京") == 4  # wide
    assert cell_width("Jose\u0301") == 4  # a combining acute accent takes no cell
    assert cell_width("דוד") == 3
    assert cell_width(FSI + "x" + PDI) == 1  # the isolates take none


def test_right_to_left_cells_are_isolated_and_the_rest_left_alone() -> None:
    assert isolate("דוד") == FSI + "דוד" + PDI
    assert isolate("محمد") == FSI + "محمد" + PDI
    assert isolate("abc") == "abc" and isolate("東京") == "東京" and isolate("123") == "123"


def test_columns_line_up_whatever_the_script() -> None:
    rows = [
        ["1", "דוד", "3,009"],
        ["2", "東京タワー", "812"],
        ["3", "Jose\u0301", "70"],
        ["4", "محمد علي", "5"],
        ["5", "plain", "1"],
    ]
    table = text_table(["rank", "item", "estimate"], rows, [True, False, True])
    lines = table.splitlines()
    assert len(lines) == 6
    ends = {cell_width(line) for line in lines}
    assert len(ends) == 1, table  # every line ends at the same terminal column
    # the item column starts at the same cell on every line, and so does the estimate's end
    items = ["item", *(isolate(r[1]) for r in rows)]
    assert len({cell_width(ln[: ln.index(it)]) for ln, it in zip(lines, items, strict=True)}) == 1
    assert FSI + "דוד" + PDI in lines[1] and FSI + "محمد علي" + PDI in lines[4]


def test_clip_cuts_at_a_character_to_the_width() -> None:
    assert clip("short", 10) == "short"
    assert clip("東京タワー", 5) == "東京…" and cell_width(clip("東京タワー", 5)) == 5
    long = "x" * 60
    assert cell_width(clip(long, 44)) == 44 and clip(long, 44).endswith("…")
