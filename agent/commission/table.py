"""A plain-text table: aligned columns, no borders, so output can be read and grepped."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                 right: frozenset[int] = frozenset()) -> list[str]:
    """Lines of a table with two spaces between columns and trailing blanks stripped.

    ``right`` holds the indexes of columns aligned to the right (numbers line up by
    their last digit, which is how a meter's display is compared). Every row must have
    as many cells as there are headers.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells, expected {len(headers)}")
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(cells)]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line(row) for row in rows)]
