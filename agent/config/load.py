"""Loading config files: TOML -> models (per item) -> whole-file checks.

Every error is reported at once and named by its place in the file, e.g.
``machines[2] "cnc-03": signals.energy_kwh.source: source "meter-9" is not defined``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from rules.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

def label(kind: str, index: int, ident: str) -> str:
    """How an error names a list item: ``machines[2] "cnc-03"``."""
    return f'{kind}[{index}] "{ident}"'


def place(raw: Any, loc: Sequence[str | int]) -> str:
    """Render a location inside the raw TOML data as ``list[i] "id": key.key``."""
    out = ""
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            item = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(item, dict):
                label = item.get("id") or item.get("name")
                if isinstance(label, str):
                    out += f' "{label}"'
                out += ":"
            node = item
            continue
        if isinstance(node, dict) and node.get("type") == part:
            continue  # the tag pydantic adds for the variant of a union (a source type)
        if out and not out.endswith(":"):
            out += "."
        elif out.endswith(":"):
            out += " "
        out += str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out.rstrip(":")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the line and column."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError([("", "file not found")], source=str(path)) from err
    except OSError as err:
        raise ConfigError([("", f"cannot read: {err.strerror}")], source=str(path)) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"not valid TOML: {err}")], source=str(path)) from err


def validation_errors(raw: Any, err: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's errors as (place, message), with secrets never echoed back."""
    out: list[tuple[str, str]] = []
    for item in err.errors(include_input=False, include_url=False):
        msg = str(item["msg"])
        if item["type"] == "missing":
            msg = "required key is missing"
        elif item["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        msg = msg.removeprefix("Value error, ")
        loc = item["loc"]
        if item["type"] == "union_tag_invalid":
            ctx = item.get("ctx", {})
            loc = (*loc, str(ctx.get("discriminator", "type")).strip("'"))
            msg = f"unknown type {ctx.get('tag')!r} (known: {ctx.get('expected_tags')})"
        out.append((place(raw, loc), msg))
    return out


def load_model(
    path: Path,
    model: type[M],
    whole: Callable[[M], list[tuple[str, str]]] | None = None,
) -> M:
    """Read ``path`` into ``model``, then run the whole-file checks; raise ConfigError."""
    raw = read_toml(path)
    try:
        cfg = model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(validation_errors(raw, err), source=str(path)) from None
    if whole is not None:
        problems = whole(cfg)
        if problems:
            raise ConfigError(problems, source=str(path))
    return cfg
