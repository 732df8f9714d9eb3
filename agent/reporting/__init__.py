"""The demonstration report: a period's KPIs against a baseline and against the plan's
targets, with its energy baseline and pictures, as text, JSON, CSV, HTML, PDF or XLSX.

:func:`agent.reporting.model.build_demonstration` computes it; one module per format
renders it; :func:`write` puts it where ``--out`` says (or on stdout for the text
formats), replacing the file only once it is whole.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import TextIO

from agent.reporting.errors import RendererError
from agent.reporting.model import DemonstrationReport, build_demonstration
from rules.errors import ConfigError, InputError
from rules.targets import DEFAULT_TARGETS, Target, parse_targets

__all__ = [
    "BINARY_FORMATS",
    "FORMATS",
    "DemonstrationReport",
    "RendererError",
    "build_demonstration",
    "format_for",
    "load_targets",
    "render",
    "write",
]

FORMATS: tuple[str, ...] = ("text", "json", "csv", "html", "pdf", "xlsx")
BINARY_FORMATS: frozenset[str] = frozenset({"pdf", "xlsx"})
_SUFFIXES = {".txt": "text", ".json": "json", ".csv": "csv", ".html": "html", ".htm": "html",
             ".pdf": "pdf", ".xlsx": "xlsx"}


def format_for(out: Path | None) -> str:
    """The format an ``--out`` file's suffix implies (text when it implies none)."""
    return "text" if out is None else _SUFFIXES.get(out.suffix.lower(), "text")


def load_targets(path: Path | None) -> tuple[Target, ...]:
    """The targets of a ``--targets`` TOML file (the defaults without one)."""
    if path is None:
        return DEFAULT_TARGETS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--targets: {path}: file not found") from None
    except UnicodeDecodeError as err:
        raise InputError(f"--targets: {path}: not UTF-8 text ({err.reason})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"not valid TOML: {err}")], str(path)) from None
    return parse_targets(data, str(path))


def render(report: DemonstrationReport, fmt: str) -> bytes:
    """The report in format ``fmt`` (one of :data:`FORMATS`), as the bytes of its file."""
    if fmt == "json":
        from agent.reporting.export import report_json

        return (json.dumps(report_json(report), ensure_ascii=False) + "\n").encode()
    if fmt == "csv":
        from agent.reporting.export import render_csv

        return render_csv(report).encode("utf-8-sig")  # the BOM makes Excel read UTF-8
    if fmt in ("html", "pdf"):
        from agent.reporting.html import render_html

        html = render_html(report)
        if fmt == "html":
            return html.encode()
        from agent.reporting.pdf import html_to_pdf

        return html_to_pdf(html)
    if fmt == "xlsx":
        from agent.reporting.xlsx import render_xlsx

        return render_xlsx(report)
    from agent.reporting.text import render_text

    return render_text(report).encode()


def write(report: DemonstrationReport, fmt: str, out: Path | None,
          stdout: TextIO = sys.stdout) -> None:
    """Render and write: to ``out`` (written beside it, then renamed over it, so a reader
    never sees half a file), or to ``stdout`` for a text format without ``--out``."""
    if out is None:
        if fmt in BINARY_FORMATS:
            raise InputError(f"--out: --format {fmt} writes a file; name it with --out FILE")
        data = render(report, fmt)
        stdout.write(data.decode("utf-8-sig" if fmt == "csv" else "utf-8"))
        stdout.flush()
        return
    data = render(report, fmt)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
