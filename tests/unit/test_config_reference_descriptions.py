"""Every key of docs/config-reference.md says what it is for: the reference is generated
from the models' field docstrings, so a key added without one fails here, naming it."""

from __future__ import annotations

import re
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
_CELL = re.compile(r"(?<!\\)\|")


def _rows(text: str) -> list[tuple[str, str, list[str]]]:
    """``(section heading, key, cells)`` of every key row of the reference."""
    out: list[tuple[str, str, list[str]]] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("### "):
            section = line[4:]
        elif line.startswith("| `"):
            cells = [c.strip() for c in _CELL.split(line)[1:-1]]
            out.append((section, cells[0], cells))
    return out


def test_every_key_has_a_description() -> None:
    rows = _rows(REFERENCE.read_text(encoding="utf-8"))
    assert len(rows) > 150  # the tables were found at all
    empty = [f"{section}: {key}" for section, key, cells in rows
             if len(cells) != 5 or not cells[4]]
    assert empty == [], ("keys without a description (add a docstring under the field, "
                         "then run scripts/gen-config-reference):\n" + "\n".join(empty))


def test_the_parser_sees_an_empty_description() -> None:
    rows = _rows("### `[x]`\n| `a` | string | `\"\"` | | |\n| `b` | x \\| y | | | said |\n")
    assert [(key, cells[4]) for _, key, cells in rows] == [("`a`", ""), ("`b`", "said")]
