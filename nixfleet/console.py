"""Where nixfleet's tables are printed: rich tables that never cut a cell.

rich cuts a cell that does not fit to a few letters and "…", which without a terminal (rich
then assumes 80 columns) cut most of every cell of piped output (`nixfleet inventory | less`,
CI logs). Here the width is the terminal's, or without one $COLUMNS, else PIPED_WIDTH. A column
is never narrower than its longest word (up to LONG_WORD; a longer one, such as a store path,
folds onto the next line). A table that cannot fit that way folds its long words (a URL in an
error) in columns that wrap, down to FOLD_WIDTH; one that cannot fit even so is printed as one
block per row: the row's first cell, then `column: value` lines. nixfleet, not rich, sets each
column's width: rich's own shrinking can leave a table wider than the width, and the console
then cuts its right edge.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

PIPED_WIDTH = 80
# A word longer than this (a store path, a URL) folds rather than widening its column.
LONG_WORD = 32
# A wrapping column narrower than this folds its words into unreadable pieces: blocks instead.
FOLD_WIDTH = 20


def output_width(piped_width: int = PIPED_WIDTH) -> int | None:
    """Columns to print in: None (the terminal's own) on a terminal, else $COLUMNS or
    `piped_width`."""
    if sys.stdout.isatty():
        return None
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    return columns if columns > 0 else piped_width


def console(piped_width: int = PIPED_WIDTH) -> Console:
    """A console on stdout with nixfleet's width (see output_width)."""
    from rich.console import Console

    return Console(width=output_width(piped_width))


def table(*headers: Any, **options: Any) -> Table:
    """A rich Table whose columns fold long words instead of cutting them.

    + headers: column names, or rich Columns (their own settings are kept)
    + options: rich.table.Table's (title, box, ...)

    **Example:**

        rows = table("host", "address", title="hosts")
        rows.add_row("p620", "10.0.0.1")
        print_table(rows)
    """
    from rich.table import Column, Table

    columns = [h if isinstance(h, Column) else Column(str(h), overflow="fold") for h in headers]
    return Table(*columns, **options)


def print_table(rows: Table, out: Console | None = None) -> None:
    """Print `rows` whole, never wider than the console: as a table when it fits with every word
    of a cell on one line, else with long words folded (down to FOLD_WIDTH columns), else one
    block per row."""
    from rich.cells import cell_len

    out = out or console()
    natural, whole, folded = [], [], []
    for column in rows.columns:
        texts = [_plain(out, column.header), *(_plain(out, c) for c in column.cells)]
        lines = [line for text in texts for line in text.splitlines()]
        longest = max((cell_len(line) for line in lines), default=1)
        natural.append(max(longest, column.min_width or 0, 1))
        if column.no_wrap:
            whole.append(natural[-1])
            folded.append(natural[-1])
        else:
            word = min(max((cell_len(w) for line in lines for w in line.split()), default=1),
                       LONG_WORD)
            whole.append(max(word, column.min_width or 0, 1))
            folded.append(min(whole[-1], FOLD_WIDTH))
    room = out.width - rows._extra_width - sum(
        rows._get_padding_width(index) for index in range(len(rows.columns)))
    for least in (whole, folded):
        widths = _fill(natural, least, room)
        if widths is not None:
            for column, width in zip(rows.columns, widths, strict=True):
                column.width = width
            out.print(rows)
            return
    _print_blocks(rows, out)


def _fill(natural: list[int], least: list[int], room: int) -> list[int] | None:
    """Column widths within `room`: each column its natural width, the widest narrowed first
    (never below `least`), or None when even `least` does not fit."""
    if sum(least) > room:
        return None
    level = max(natural, default=0)
    while True:
        widths = [max(low, min(high, level)) for high, low in zip(natural, least, strict=True)]
        if sum(widths) <= room:
            return widths
        level -= 1


def _plain(out: Console, cell: Any) -> str:
    from rich.text import Text

    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return out.render_str(cell).plain
    return ""


def _print_blocks(rows: Table, out: Console) -> None:
    """Each row as its first cell, then `column: value` lines, values wrapped at spaces."""
    from rich.padding import Padding
    from rich.table import Column, Table

    if rows.title:
        out.print(rows.title, highlight=False)
    headers = [_plain(out, c.header) for c in rows.columns]
    label_width = max(len(h) for h in headers[1:]) + 1 if len(headers) > 1 else 1
    cells = [list(c.cells) for c in rows.columns]
    for index in range(rows.row_count):
        out.print(cells[0][index], highlight=False)
        block = Table.grid(Column(no_wrap=True, min_width=label_width),
                           Column(overflow="fold"), padding=(0, 1))
        for header, column in zip(headers[1:], cells[1:], strict=True):
            value = column[index]
            if _plain(out, value).strip():
                block.add_row(f"{header}:", value)
        out.print(Padding(block, (0, 0, 0, 2), expand=False))
