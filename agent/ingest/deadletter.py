"""Append-only dead-letter file for messages the ingest cannot store.

A message that fails validation, or a point InfluxDB rejects as bad, is acknowledged to
the broker (holding it would block the stream forever), so it must land somewhere durable
first. Each line is one JSON object::

    {"ts": "2026-11-26T08:00:01.123Z", "topic": "factory/s/l/m/kpi",
     "reason": "KPI payload on topic ...: key 'oee': must be finite",
     "payload": "{...}", "encoding": "utf-8"}

``payload`` is the message text when it is valid UTF-8 (``"encoding": "utf-8"``), else
its base64 form (``"encoding": "base64"``), so an operator can fix and re-publish it.
Every append is fsync'ed before the message is acknowledged.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rules.errors import DeliveryError
from rules.types import ms_to_rfc3339

__all__ = ["DeadLetter", "DeadLetterFile", "read_dead_letters"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message and why it was rejected."""

    topic: str
    payload: bytes
    reason: str
    ts_ms: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        """The file's line format (see the module docstring)."""
        out: dict[str, Any] = {
            "ts": ms_to_rfc3339(self.ts_ms or int(time.time() * 1000)),
            "topic": self.topic,
            "reason": self.reason,
        }
        try:
            out["payload"] = self.payload.decode("utf-8")
            out["encoding"] = "utf-8"
        except UnicodeDecodeError:
            out["payload"] = base64.b64encode(self.payload).decode("ascii")
            out["encoding"] = "base64"
        return out


class DeadLetterFile:
    """Appends entries as JSON Lines and fsyncs, one open/close per call (no handle kept).

    Opening per batch keeps the file usable by log rotation (rename + new file) and costs
    nothing measurable next to the fsync.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entries: Sequence[DeadLetter]) -> None:
        """Write all entries and fsync; raises :class:`DeliveryError` if the disk refuses."""
        if not entries:
            return
        now_ms = int(time.time() * 1000)
        text = "".join(
            json.dumps(
                (e if e.ts_ms else DeadLetter(e.topic, e.payload, e.reason, now_ms)).to_json_dict(),
                ensure_ascii=False,
            ) + "\n"
            for e in entries
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                data = text.encode("utf-8")
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise DeliveryError(f"cannot write dead-letter file {self.path}: {err}") from err


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """All entries of a dead-letter file (for tests and for operators' scripts)."""
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out
