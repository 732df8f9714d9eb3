"""Turn KPI records and alarm events into InfluxDB points (pure, no I/O).

The point key (measurement, tag set, timestamp) is the record's identity, so a replay of
the same record after a crash or an outage overwrites the point instead of adding one
(docs/architecture.md, "every write is idempotent"). For that the tag set must always be complete:
a line record is written with ``machine="_line"`` and the site record with
``line="_site", machine="_site"``, the same placeholders the MQTT topics use.

Field types are fixed per field name, because InfluxDB refuses a field whose type differs
from the one already stored in the shard ("field type conflict", HTTP 400): part counts
are always integers, every other KPI value always a float, even when it happens to be
whole. Null values are never written (InfluxDB has no null); ``flags`` is always written,
as an empty string when there are none, so that a corrected replay clears stale flags.
Because InfluxDB merges the fields of two points with the same key, a rewrite in which a
field became null would keep the older value: the sink deletes the stored point first in
that case (see :mod:`agent.ingest.sink`).

A record whose machine states do not come from a controller (``state_source``, e.g.
``"power"``) carries that as one more tag, so a query can tell (or leave out) the machines
read by power thresholds; records from controllers have no such tag, so their series are
as they always were. The tag belongs to a machine's series for as long as its config
reads it that way.

The agents' status messages go to measurement ``agent_status`` (tags ``site``, ``agent``),
stamped with the time the ingest received them: the platform's one clock, so an agent with
a skewed clock cannot make its own "online" look newer than the broker's "offline".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agent.ingest.schema import COUNT_FIELDS, StatusMessage
from rules.types import KPI_FIELDS, AlarmEvent, KpiRecord, ms_to_rfc3339

__all__ = [
    "AGENT_STATUS_MEASUREMENT",
    "ALARM_MEASUREMENT",
    "KPI_MEASUREMENT",
    "KPI_TAGS",
    "LINE_PLACEHOLDER",
    "SITE_PLACEHOLDER",
    "STATE_SOURCE_TAG",
    "FieldValue",
    "InfluxPoint",
    "PointKey",
    "alarm_to_point",
    "placeholder_tags",
    "record_to_point",
    "status_to_point",
]

KPI_MEASUREMENT: Final = "kpi"
ALARM_MEASUREMENT: Final = "alarm"
AGENT_STATUS_MEASUREMENT: Final = "agent_status"
LINE_PLACEHOLDER: Final = "_line"
SITE_PLACEHOLDER: Final = "_site"
KPI_TAGS: Final[tuple[str, ...]] = ("site", "line", "machine", "window")
"""The tag keys of a ``kpi`` point: with the time, the record's identity."""
STATE_SOURCE_TAG: Final = "state_source"
"""The extra tag of a record whose states are not a controller's (see the module doc)."""

FieldValue = float | int | str | bool

PointKey = tuple[str, tuple[tuple[str, str], ...], int]
"""``(measurement, sorted tag items, time_ms)``: what InfluxDB identifies a point by."""


@dataclass(frozen=True, slots=True)
class InfluxPoint:
    """One InfluxDB point, as plain data so tests can compare it and sinks can render it."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ms: int

    @property
    def key(self) -> PointKey:
        """The point's identity: a write with the same key lands on the same point."""
        return (self.measurement, tuple(sorted(self.tags.items())), self.time_ms)

    def to_line_protocol(self) -> str:
        """Line protocol with millisecond precision.

        Encoded here rather than through influxdb-client's ``Point``, which cost about a
        third of the ingest's write path; the output is the same, character for
        character (its escaping, sorted tags and fields, no non-finite floats, whole
        floats without ``.0``, integers with ``i``).
        """
        tags = "".join(
            f",{k.translate(_ESCAPE_KEY)}={_tag_value(v)}"
            for k, v in sorted(self.tags.items()) if k != "" and v != "")
        fields = ",".join(
            f"{k.translate(_ESCAPE_KEY)}={text}"
            for k, v in sorted(self.fields.items()) if (text := _field_value(v)) is not None)
        if not fields:
            return ""
        return (f"{self.measurement.translate(_ESCAPE_MEASUREMENT)}{tags} {fields} "
                f"{self.time_ms}")


_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t",
                                     "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t",
                             "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r'\"', "\\": r"\\"})


def _tag_value(value: str) -> str:
    text = value.translate(_ESCAPE_KEY)
    # A trailing backslash would escape the separator after it.
    return text + " " if text.endswith("\\") else text


def _field_value(value: FieldValue) -> str | None:
    """A field value in line protocol; None for a value InfluxDB cannot store (NaN, inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = str(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, int):
        return f"{value}i"
    return '"' + value.translate(_ESCAPE_STRING) + '"'


def placeholder_tags(line: str | None, machine: str | None) -> tuple[str, str]:
    """The ``line`` and ``machine`` tag values, with the topic placeholders for nulls."""
    if line is None:
        return SITE_PLACEHOLDER, SITE_PLACEHOLDER
    if machine is None:
        return line, LINE_PLACEHOLDER
    return line, machine


def record_to_point(record: KpiRecord) -> InfluxPoint:
    """The ``kpi`` point of one record: tags site/line/machine/window (and
    ``state_source`` when the record has one), time = window end; ``observed_s`` is a
    field when the record carries it."""
    line, machine = placeholder_tags(record.line, record.machine)
    fields: dict[str, FieldValue] = {}
    for name in KPI_FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        fields[name] = int(value) if name in COUNT_FIELDS else float(value)
    fields["flags"] = ",".join(record.flags)
    tags = {"site": record.site, "line": line, "machine": machine, "window": record.window}
    if record.state_source is not None:
        tags[STATE_SOURCE_TAG] = record.state_source
    return InfluxPoint(
        measurement=KPI_MEASUREMENT,
        tags=tags,
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


def status_to_point(site: str, status: StatusMessage, received_ms: int) -> InfluxPoint:
    """The ``agent_status`` point of one status message (site and agent from the topic).

    Fields: ``state`` (online/offline), ``version``, ``started`` (RFC 3339, the agent's
    start); an online message adds ``last_seen`` (RFC 3339, = the point's time),
    ``uptime_s`` and ``outbox_depth``, an offline one ``reason``. ``last_seen`` is written
    only while the agent is online, so the latest ``last_seen`` of an agent is when the
    platform last heard from it alive, whatever state followed. All text fields are
    strings so that a dashboard can pivot them into one row per agent.
    """
    fields: dict[str, FieldValue] = {"state": status.state, "version": status.version}
    if status.started_ms is not None:
        fields["started"] = ms_to_rfc3339(status.started_ms)
    if status.state == "online":
        fields["last_seen"] = ms_to_rfc3339(received_ms)
        if status.uptime_s is not None:
            fields["uptime_s"] = float(status.uptime_s)
        if status.outbox_depth is not None:
            fields["outbox_depth"] = int(status.outbox_depth)
    if status.reason is not None:
        fields["reason"] = status.reason
    return InfluxPoint(
        measurement=AGENT_STATUS_MEASUREMENT,
        tags={"site": site, "agent": status.agent_id},
        fields=fields,
        time_ms=received_ms,
    )
