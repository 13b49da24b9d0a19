"""Rows of dicts as a rich table (for ``msa bench``) or a markdown table (for the docs).

``columns`` is ``[(row key, column title), ...]``; ``cell(key, value)`` formats one value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.table import Table

Columns = Sequence[tuple[str, str]]
Cell = Callable[[str, Any], str]
TEXT_COLUMNS = ("task", "system")  # left-aligned; every other column is a number


def rich_table(title: str, columns: Columns, rows: Iterable[dict[str, Any]], cell: Cell) -> Table:
    table = Table(title=title)
    for _, head in columns:
        table.add_column(head, justify="left" if head in TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*(cell(k, row.get(k)) for k, _ in columns))
    return table


def markdown_table(columns: Columns, rows: Iterable[dict[str, Any]], cell: Cell) -> str:
    lines = ["| " + " | ".join(head for _, head in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(k, row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)
