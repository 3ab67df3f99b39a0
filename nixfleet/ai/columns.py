"""ai-cli's tables as plain text that fits the width: $COLUMNS, else the terminal's, else 80.

The standard library only (ai-cli runs on hosts with Python and httpx, without rich), with
nixfleet/console.py's rules: a column is as wide as its longest word when it can be, long cells
wrap between words, a table that does not fit so folds words longer than FOLD_WIDTH, and one
that does not fit even then is one block per row: its first cell, then `column: value` lines.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

PIPED_WIDTH = 80
GAP = "  "  # between columns
LONG_WORD = 32  # a longer word (a key file's path) folds rather than widening its column
FOLD_WIDTH = 20  # a column narrower than this is unreadable: blocks instead


def output_width() -> int:
    """$COLUMNS when set, else the terminal's width, else PIPED_WIDTH."""
    return shutil.get_terminal_size((PIPED_WIDTH, 24)).columns


def wrap(text: str, width: int, first: str = "", indent: str = "") -> list[str]:
    """`text` in lines of at most `width`, broken between words (a longer word folds); the
    first line starts with `first`, the others with `indent`."""
    return textwrap.wrap(text, max(width, len(first) + 1, len(indent) + 1),
                         initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False) or [first.rstrip()]


def table(rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """`rows` (the first is the header) as lines of at most `width` characters.

    **Example:**

        print("\\n".join(table([("provider", "state"), ("ollama", "available")], 80)))
    """
    count = len(rows[0])
    natural = [max(max(len(row[i]) for row in rows), 1) for i in range(count)]
    whole = [min(max((len(w) for row in rows for w in row[i].split()), default=1), LONG_WORD)
             for i in range(count)]
    folded = [min(w, FOLD_WIDTH) for w in whole]
    room = width - len(GAP) * (count - 1)
    for least in (whole, folded):
        widths = _fill(natural, least, room)
        if widths is not None:
            return [line for row in rows for line in _row_lines(row, widths)]
    return _blocks(rows, width)


def _fill(natural: list[int], least: list[int], room: int) -> list[int] | None:
    """Each column its natural width, the widest narrowed first (never below `least`), within
    `room`; None when even `least` does not fit."""
    if sum(least) > room:
        return None
    level = max(natural)
    while True:
        widths = [max(low, min(high, level)) for high, low in zip(natural, least, strict=True)]
        if sum(widths) <= room:
            return widths
        level -= 1


def _row_lines(row: Sequence[str], widths: list[int]) -> list[str]:
    cells = [wrap(cell, width) for cell, width in zip(row, widths, strict=True)]
    height = max(len(lines) for lines in cells)
    return [GAP.join((lines[i] if i < len(lines) else "").ljust(width)
                     for lines, width in zip(cells, widths, strict=True)).rstrip()
            for i in range(height)]


def _blocks(rows: Sequence[Sequence[str]], width: int) -> list[str]:
    header, *body = rows
    label = max(len(name) for name in header[1:]) + 2 if len(header) > 1 else 2
    lines = []
    for row in body:
        lines += wrap(row[0], width)
        for name, cell in zip(header[1:], row[1:], strict=True):
            if cell.strip():
                first = f"  {name + ':':<{label}}"
                lines += wrap(cell, width, first, " " * len(first))
    return lines
