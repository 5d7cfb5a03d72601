"""Markdown tables: the one builder behind the red-team report, the lock table and the paper's tables.

    markdown_table(["lock", "accuracy"], [["none", "0.9120"], ["specdef", "0.1030"]], align="lr")

gives

    | lock | accuracy |
    |:---|---:|
    | none | 0.9120 |
    | specdef | 0.1030 |

GitHub-flavoured: one line per row, no trailing newline (join it with the text around it). Cells are
str()-ed, so format numbers first; a "|" in a cell is escaped and a line break flattened, so no cell can
break the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]

_RULES = {
    None: "---",
    "-": "---",
    "l": ":---",
    "left": ":---",
    "r": "---:",
    "right": "---:",
    "c": ":---:",
    "center": ":---:",
}


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def _line(cells: Iterable) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown_table(headers: Sequence, rows: Iterable[Sequence], align: str | Sequence[str | None] | None = None) -> str:
    """The markdown table of `headers` and `rows` (each a sequence of cells), without a trailing newline.

    `align`: None (no colons), or one entry per column: "l"/"left", "r"/"right", "c"/"center", or None / "-"
    for no colon; a string such as "lrr" gives one letter per column. Raises ValueError on a row whose
    length differs from the headers', on an `align` of another length, or on an unknown alignment.
    """
    headers = list(headers)
    if not headers:
        raise ValueError("markdown_table: no columns")
    n = len(headers)
    aligns = [None] * n if align is None else list(align)
    if len(aligns) != n:
        raise ValueError(f"markdown_table: {len(aligns)} alignments for {n} columns")
    bad = [a for a in aligns if a not in _RULES]
    if bad:
        raise ValueError(f"markdown_table: unknown alignment {bad[0]!r}; use l, r, c, left, right, center or None")
    lines = [_line(headers), "|" + "".join(_RULES[a] + "|" for a in aligns)]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != n:
            raise ValueError(f"markdown_table: row {i} has {len(row)} cells for {n} columns: {row!r}")
        lines.append(_line(row))
    return "\n".join(lines)
