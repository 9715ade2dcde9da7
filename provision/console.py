"""kubeprov's output, set up in one place: what a command produces goes to stdout (`out`),
progress, warnings and errors to stderr (`err`).

On a terminal rich draws: colour, tables fitted to the window. When stdout is not a terminal
(a pipe, a file, `$(…)`) it gets plain text: no markup, no ANSI codes, no line cut at any width
(`$(kubeprov join-command)` must reach kubeadm whole); a table is aligned columns, one line per
row; `-o json` writes JSON and nothing else. Text meant to be reused (a join line, a diff, a
file) is written verbatim with `text()`, on a terminal too.
"""

from __future__ import annotations

import enum
import json as _json
import sys
from collections.abc import Sequence
from typing import Annotated, Any, TextIO

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

from provision.errors import ConfigError


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _console(stderr: bool) -> Console:
    tty = is_terminal(sys.stderr if stderr else sys.stdout)
    # force_terminal=tty: FORCE_COLOR or TTY_COMPATIBLE in the environment never put ANSI codes
    # into a pipe. soft_wrap: a line longer than any width stays one line.
    return Console(stderr=stderr, highlight=False, force_terminal=tty, soft_wrap=not tty, width=None if tty else 10_000)


out = _console(stderr=False)
err = _console(stderr=True)


def text(value: str) -> None:
    """Write `value` to stdout exactly as it is (one newline added if it lacks one)."""
    sys.stdout.write(value if value.endswith("\n") else value + "\n")
    sys.stdout.flush()


def json(data: Any) -> None:
    """`-o json`: the document alone on stdout."""
    text(_json.dumps(data, indent=2, ensure_ascii=False))


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        value = cell.plain
    elif isinstance(cell, str):
        try:
            value = Text.from_markup(cell).plain
        except MarkupError:  # text that only looks like markup, e.g. a host's output
            value = cell
    else:
        value = str(cell)
    return " ".join(value.split("\n"))


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> str:
    """Aligned columns, three spaces apart, one line per row, no trailing blanks, never cut."""
    widths = [cell_len(h) for h in headers]
    for row in rows:
        widths = [max(w, cell_len(c)) for w, c in zip(widths, row)]
    lines = [title] if title else []
    for row in [list(headers), *rows]:
        cells = [c + " " * (w - cell_len(c)) for c, w in zip(row, widths)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def table(table: Table) -> None:
    """A rich table on a terminal; piped, the same cells as plain aligned text (see plain_table)."""
    if is_terminal(sys.stdout):
        out.print(table)
        return
    headers = [_plain(column.header) for column in table.columns]
    columns = [[_plain(cell) for cell in column.cells] for column in table.columns]
    rows = [list(row) for row in zip(*columns)] if columns else []
    text(plain_table(headers, rows, _plain(table.title) if table.title else None).rstrip("\n"))


class Output(str, enum.Enum):
    TABLE = "table"
    JSON = "json"


def _output(value: str | None) -> Output:
    # Checked here, not by click, so a wrong value is one error line (exit 2), not a usage box.
    try:
        return Output((value or "table").lower())
    except ValueError:
        raise ConfigError(f"--output: {value!r} is not one of table, json") from None


OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", parser=_output, metavar="table|json",
        help="table (default), or json: the same rows as one JSON document, alone on stdout.",
    ),
]
