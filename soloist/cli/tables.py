"""Tables of the operator commands, readable by people and by scripts.

On a terminal, a rich table that never cuts an id or a name: those columns keep their
full width, and only the long free-text ones (arguments, reasons, what runs) are cut to
fit. Anywhere else (a pipe, a file), plain tab-separated lines with every value whole,
headed by the column names, so `cut -f` and `awk -F'\\t'` work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Column:
    name: str
    #: Free text that may be cut on a terminal; every other column is shown whole.
    cut: bool = False


def for_terminal() -> bool:
    return sys.stdout.isatty()


def table(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> Table:
    """A rich table of `rows` (plain text: no markup is read in them)."""
    out = Table(title=title)
    for i, column in enumerate(columns):
        widest = max((len(line) for row in rows for line in row[i].splitlines()), default=0)
        if column.cut:
            out.add_column(column.name, overflow="ellipsis", no_wrap=True, ratio=1)
        else:
            out.add_column(column.name, no_wrap=True, min_width=max(widest, len(column.name)))
    for row in rows:
        out.add_row(*(escape(cell) for cell in row))
    return out


def plain(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """Tab-separated lines, the first naming the columns; tabs and newlines in a value
    become spaces."""
    lines = ["\t".join(c.name for c in columns)]
    lines += ["\t".join(" ".join(cell.split()) for cell in row) for row in rows]
    return "\n".join(lines)


def show(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Print a table: rich on a terminal, tab-separated lines otherwise."""
    if for_terminal():
        Console().print(table(title, columns, rows))
    else:
        print(plain(columns, rows))
