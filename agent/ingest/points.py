"""Turn KPI records and alarm events into InfluxDB points (pure, no I/O).

The point key (measurement, tag set, timestamp) is the record's identity, so a replay of
the same record after a crash or an outage overwrites the point instead of adding one
(DESIGN.md, "every write is idempotent"). For that the tag set must always be complete:
a line record is written with ``machine="_line"`` and the site record with
``line="_site", machine="_site"``, the same placeholders the MQTT topics use.

Field types are fixed per field name, because InfluxDB refuses a field whose type differs
from the one already stored in the shard ("field type conflict", HTTP 400): part counts
are always integers, every other KPI value always a float, even when it happens to be
whole. Null values are never written (InfluxDB has no null); ``flags`` is always written,
as an empty string when there are none, so that a corrected replay clears stale flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from influxdb_client.client.write.point import Point as _Point
from influxdb_client.domain.write_precision import WritePrecision

from agent.ingest.schema import COUNT_FIELDS
from rules.types import KPI_FIELDS, AlarmEvent, KpiRecord

__all__ = [
    "ALARM_MEASUREMENT",
    "KPI_MEASUREMENT",
    "LINE_PLACEHOLDER",
    "SITE_PLACEHOLDER",
    "FieldValue",
    "InfluxPoint",
    "alarm_to_point",
    "placeholder_tags",
    "record_to_point",
]

KPI_MEASUREMENT: Final = "kpi"
ALARM_MEASUREMENT: Final = "alarm"
LINE_PLACEHOLDER: Final = "_line"
SITE_PLACEHOLDER: Final = "_site"

FieldValue = float | int | str | bool

_PointFactory: Any = _Point  # influxdb-client is only partly typed


@dataclass(frozen=True, slots=True)
class InfluxPoint:
    """One InfluxDB point, as plain data so tests can compare it and sinks can render it."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ms: int

    def to_line_protocol(self) -> str:
        """Line protocol with millisecond precision (escaping done by influxdb-client)."""
        point = _PointFactory(self.measurement)
        for key, tag in self.tags.items():
            point.tag(key, tag)
        for key, value in self.fields.items():
            point.field(key, value)
        point.time(self.time_ms, WritePrecision.MS)
        text: str = point.to_line_protocol(precision=WritePrecision.MS)
        return text


def placeholder_tags(line: str | None, machine: str | None) -> tuple[str, str]:
    """The ``line`` and ``machine`` tag values, with the topic placeholders for nulls."""
    if line is None:
        return SITE_PLACEHOLDER, SITE_PLACEHOLDER
    if machine is None:
        return line, LINE_PLACEHOLDER
    return line, machine


def record_to_point(record: KpiRecord) -> InfluxPoint:
    """The ``kpi`` point of one record: tags site/line/machine/window, time = window end."""
    line, machine = placeholder_tags(record.line, record.machine)
    fields: dict[str, FieldValue] = {}
    for name in KPI_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        fields[name] = int(value) if name in COUNT_FIELDS else float(value)
    fields["flags"] = ",".join(record.flags)
    return InfluxPoint(
        measurement=KPI_MEASUREMENT,
        tags={"site": record.site, "line": line, "machine": machine, "window": record.window},
        fields=fields,
        time_ms=record.window_end_ms,
    )


def alarm_to_point(event: AlarmEvent) -> InfluxPoint:
    """The ``alarm`` point of one event: tags site/line/machine/rule, time = event time."""
    line, machine = placeholder_tags(event.line, event.machine)
    fields: dict[str, FieldValue] = {
        "state": event.state,
        "severity": event.severity,
        "message": event.message,
    }
    if event.value is not None:
        fields["value"] = float(event.value)
    return InfluxPoint(
        measurement=ALARM_MEASUREMENT,
        tags={"site": event.site, "line": line, "machine": machine, "rule": event.rule},
        fields=fields,
        time_ms=event.ts_ms,
    )
