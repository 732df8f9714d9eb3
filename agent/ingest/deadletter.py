"""Append-only dead-letter file for messages the ingest cannot store.

A message that fails validation, or a point InfluxDB rejects as bad, is acknowledged to
the broker (holding it would block the stream forever), so it must land somewhere durable
first. Each line is one JSON object::

    {"ts": "2026-11-26T08:00:01.123Z", "topic": "factory/s/l/m/kpi",
     "code": "invalid_payload",
     "reason": "KPI payload on topic ...: key 'oee': must be finite",
     "payload": "{...}", "encoding": "utf-8"}

``code`` says in one word why (one of :data:`REJECT_CODES`; the ingest's ``/metrics``
counts each in ``edge_ingest_rejected_total{reason=...}``), ``reason`` says it in full.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from rules.errors import DeliveryError, InputError
from rules.types import ms_to_rfc3339

__all__ = [
    "CANNOT_REPLACE",
    "IDS_DIFFER",
    "INFLUX_REFUSED",
    "INTERNAL_ERROR",
    "INVALID_PAYLOAD",
    "INVALID_TOPIC",
    "LESS_COMPLETE",
    "REJECT_CODES",
    "DeadLetter",
    "DeadLetterFile",
    "Rejected",
    "read_dead_letters",
]

INVALID_TOPIC: Final = "invalid_topic"
"""The topic is not ``{prefix}/<site>/<line>/<machine>/kpi|alarm`` or
``{prefix}/<site>/_agent/<agent>/status``, or one of its levels is not a valid id."""
IDS_DIFFER: Final = "ids_differ_from_topic"
"""The payload names another site, line, machine or agent than the topic it came on. The
broker authenticated the topic (per-site ACL), not the payload, so this is either a bug
in the publisher or one factory trying to write into another's numbers."""
INVALID_PAYLOAD: Final = "invalid_payload"
"""The payload fails validation (not JSON, wrong schema, a missing or ill-typed key)."""
LESS_COMPLETE: Final = "less_complete_than_stored"
"""A KPI record observed less of its window than the record already stored for the same
key (an agent that lost its checkpoint): it must not replace the more complete one."""
CANNOT_REPLACE: Final = "cannot_replace_stored"
"""The record would have to replace a stored point whole, and the database offers no way
to delete that point first (InfluxDB 3): writing would merge the two versions."""
INFLUX_REFUSED: Final = "influxdb_refused"
"""InfluxDB rejected the point itself (HTTP 400/413/422, e.g. a field type conflict)."""
INTERNAL_ERROR: Final = "internal_error"
"""Converting the message failed in an unexpected way (a bug); the payload is kept."""

REJECT_CODES: Final[tuple[str, ...]] = (
    INVALID_TOPIC, IDS_DIFFER, INVALID_PAYLOAD, LESS_COMPLETE, CANNOT_REPLACE,
    INFLUX_REFUSED, INTERNAL_ERROR,
)
"""Every ``code`` a dead letter can carry."""


class Rejected(InputError):
    """A message the ingest will not store, with the dead-letter ``code`` saying why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message and why it was rejected."""

    topic: str
    payload: bytes
    reason: str
    ts_ms: int = 0
    code: str = INVALID_PAYLOAD

    def to_json_dict(self) -> dict[str, Any]:
        """The file's line format (see the module docstring)."""
        out: dict[str, Any] = {
            "ts": ms_to_rfc3339(self.ts_ms or int(time.time() * 1000)),
            "topic": self.topic,
            "code": self.code,
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
                (e if e.ts_ms else replace(e, ts_ms=now_ms)).to_json_dict(),
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
