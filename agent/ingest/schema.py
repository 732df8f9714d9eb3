"""Parse and validate MQTT payloads into the shared value types.

Pure functions: bytes and a topic in, a :class:`KpiRecord`, :class:`AlarmEvent` or
:class:`StatusMessage` out, or an :class:`InputError` that names the topic and the
offending key. The ingest sends what fails here to the dead-letter file, so a message must
say exactly what was wrong.

The accepted KPI and alarm wire forms are exactly what ``KpiRecord.to_json_dict()`` and
``AlarmEvent.to_json_dict()`` produce; unknown keys are rejected because the schema is
versioned (``factory-kpi/1``): a new key means a new schema version, not a silent drop.
The one exception is ``observed_s`` (seconds of the window the agent actually observed),
which agents before it do not send: absent or null means "unknown", and ranks as 0 s
when the ingest decides whether a record may replace a stored one (see
:mod:`agent.ingest.sink`). When present it must be a number from 0 to the window's length.
Likewise ``state_source`` (how the machine states behind the record were obtained when
not from the machine's controller, e.g. ``"power"``) is sent only when set: absent or
null means the controller; when present it must be one of :data:`rules.types.STATE_SOURCES`.

Ids (site, line, machine, window) must be valid MQTT topic levels, because the topic is
the record's identity (the broker authenticated it): non-empty, no ``/``, ``+``, ``#`` or
NUL, and not starting with ``_`` (reserved for the ``_line``/``_site``/``_agent``
placeholders).

The agent's status message is not versioned and grows over time, so there unknown keys
are ignored and only the keys the ingest stores are checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final, Literal

from rules.errors import InputError
from rules.types import (
    KPI_FIELDS,
    SCHEMA,
    STATE_SOURCES,
    AlarmEvent,
    KpiRecord,
    rfc3339_to_ms,
)

__all__ = [
    "ALARM_SCHEMA",
    "COUNT_FIELDS",
    "KPI_SCHEMA",
    "LATER_FIELDS",
    "NULLABLE_FIELDS",
    "OBSERVED_FIELD",
    "STATE_SOURCE_FIELD",
    "StatusMessage",
    "parse_alarm_payload",
    "parse_kpi_payload",
    "parse_status_payload",
]

KPI_SCHEMA: Final = SCHEMA
ALARM_SCHEMA: Final = "factory-alarm/1"

COUNT_FIELDS: Final[frozenset[str]] = frozenset(
    {"parts_produced", "parts_good", "parts_scrap", "scrap_all_machines"})
"""Integer KPI fields (written as InfluxDB integer fields); every other KPI field is a float."""

LATER_FIELDS: Final[frozenset[str]] = frozenset({
    "scrap_all_machines", "rolled_throughput_yield", "natural_gas_m3", "steam_kg",
    "water_m3", "compressed_air_m3", "kgce", "energy_cost", "energy_cost_per_good_unit",
})
"""Nullable fields added after ``factory-kpi/1`` was first published: optional on the
wire (absent reads as null), so records of older agents still ingest."""

_NON_NULL_FLOATS: Final[frozenset[str]] = frozenset({
    "planned_busy_time_s", "producing_time_s", "setup_time_s", "unplanned_down_time_s",
    "idle_time_s",
})

NULLABLE_FIELDS: Final[frozenset[str]] = (
    frozenset(KPI_FIELDS) - COUNT_FIELDS - _NON_NULL_FLOATS) | LATER_FIELDS
"""KPI fields that are ``null`` when undefined (0/0); time and count fields are always set."""

OBSERVED_FIELD: Final = "observed_s"
"""Seconds of its window the agent observed; optional on the wire (see the module doc)."""

STATE_SOURCE_FIELD: Final = "state_source"
"""Where the record's machine states came from when not from a controller; optional on
the wire (see the module doc) and an InfluxDB tag of the point."""

_OBSERVED_SLACK_S: Final = 0.001
"""observed_s may exceed the window's length by this much (sums of float durations)."""

_VALUE_FIELDS: Final[tuple[str, ...]] = tuple(f for f in KPI_FIELDS if f != OBSERVED_FIELD)

_KPI_KEYS: Final[frozenset[str]] = frozenset(
    {"schema", "site", "line", "machine", "window", "window_start", "window_end", "flags",
     STATE_SOURCE_FIELD, *KPI_FIELDS}
)
_TOPIC_FORBIDDEN: Final[frozenset[str]] = frozenset("/+#\x00")
_ALARM_KEYS: Final[frozenset[str]] = frozenset(
    {"schema", "ts", "site", "line", "machine", "rule", "state", "severity", "value", "message"}
)
_ALARM_STATES: Final[frozenset[str]] = frozenset({"raised", "cleared"})


class _Reader:
    """Typed access to one decoded JSON object; every error names the place and the key."""

    def __init__(self, obj: dict[str, Any], place: str, kind: str) -> None:
        self.obj = obj
        self.place = place
        self.kind = kind

    def error(self, key: str, message: str) -> InputError:
        return InputError(f"{self.kind} {self.place}: key {key!r}: {message}")

    def require(self, key: str) -> Any:
        if key not in self.obj:
            raise self.error(key, "missing")
        return self.obj[key]

    def ident(self, key: str, *, nullable: bool = False) -> str | None:
        """An id used as an InfluxDB tag and a topic level: a non-empty string, not
        starting with ``_``, without ``/``, ``+``, ``#`` or NUL.

        Ids starting with ``_`` are reserved for the topic placeholders (``_line``,
        ``_site``); accepting them would let two different records share one point key.
        """
        value = self.require(key)
        if value is None:
            if nullable:
                return None
            raise self.error(key, "must not be null")
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_type_name(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        if value.startswith("_"):
            raise self.error(key, f"{value!r}: ids starting with '_' are reserved")
        bad = sorted(set(value) & _TOPIC_FORBIDDEN)
        if bad:
            raise self.error(key, f"{value!r} is not a valid topic level (contains "
                                  f"{' '.join(repr(c) for c in bad)})")
        return value

    def optional(self, key: str) -> Any:
        """The value of ``key``, or None when it is absent or null."""
        return self.obj.get(key)

    def text(self, key: str) -> str:
        value = self.require(key)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_type_name(value)}")
        return value

    def timestamp(self, key: str) -> int:
        value = self.text(key)
        try:
            return rfc3339_to_ms(value)
        except ValueError as err:
            raise self.error(key, f"not an RFC 3339 UTC timestamp: {value!r}") from err

    def number(self, key: str, *, nullable: bool) -> float | None:
        value = self.require(key)
        if value is None:
            if nullable:
                return None
            raise self.error(key, "must not be null")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {_type_name(value)}")
        result = float(value)
        if not math.isfinite(result):
            raise self.error(key, f"must be finite, got {value!r} (undefined values are null)")
        return result

    def count(self, key: str) -> int:
        value = self.require(key)
        if value is None:
            raise self.error(key, "must not be null")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected an integer, got {_type_name(value)}")
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise self.error(key, f"expected an integer, got {value!r}")
            value = int(value)
        if value < 0:
            raise self.error(key, f"must not be negative, got {value}")
        return value

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        for key in self.obj:
            if key not in allowed:
                raise self.error(key, "unknown key")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _json_object(payload: bytes, place: str, kind: str) -> _Reader:
    try:
        # NaN/Infinity are decoded (json's default) so the error can name the key they sit in.
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{kind} {place}: not UTF-8: {err}") from err
    except ValueError as err:
        raise InputError(f"{kind} {place}: not valid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise InputError(f"{kind} {place}: expected a JSON object, got {_type_name(obj)}")
    return _Reader(obj, place, kind)


def _decode(payload: bytes, place: str, kind: str, schema: str) -> _Reader:
    reader = _json_object(payload, place, kind)
    got = reader.require("schema")
    if got != schema:
        raise reader.error("schema", f"expected {schema!r}, got {got!r}")
    return reader


def parse_kpi_payload(payload: bytes, topic: str, *, where: str | None = None) -> KpiRecord:
    """Decode and validate one KPI message (schema ``factory-kpi/1``).

    Raises :class:`InputError` naming ``topic`` (or ``where``, e.g. ``records.jsonl:3``
    for a record read from a file) and the first bad key: a missing or unknown key, a
    wrong type, a non-finite number, a null where the record format requires a value,
    an id that is not a valid topic level, ``window_end`` not after ``window_start``, or
    ``observed_s`` outside the window. The ids are not compared with the topic here;
    the ingest does that (:func:`agent.ingest.service.payload_to_point`).
    """
    place = f"record at {where}" if where is not None else f"payload on topic {topic!r}"
    r = _decode(payload, place, "KPI", KPI_SCHEMA)
    r.reject_unknown(_KPI_KEYS)
    site = r.ident("site")
    line = r.ident("line", nullable=True)
    machine = r.ident("machine", nullable=True)
    if line is None and machine is not None:
        raise r.error("line", "must not be null when machine is set")
    window = r.ident("window")
    start_ms = r.timestamp("window_start")
    end_ms = r.timestamp("window_end")
    if end_ms <= start_ms:
        raise r.error("window_end", f"{r.obj['window_end']!r} is not after window_start "
                                    f"{r.obj['window_start']!r}")
    values: dict[str, Any] = {}
    for name in _VALUE_FIELDS:
        if name in LATER_FIELDS and r.optional(name) is None:
            values[name] = None
        elif name in COUNT_FIELDS:
            values[name] = r.count(name)
        else:
            values[name] = r.number(name, nullable=name in NULLABLE_FIELDS)
    observed = None if r.optional(OBSERVED_FIELD) is None else r.number(
        OBSERVED_FIELD, nullable=False)
    if observed is not None:
        span_s = (end_ms - start_ms) / 1000
        if observed < 0:
            raise r.error(OBSERVED_FIELD, f"must not be negative, got {observed!r}")
        if observed > span_s + _OBSERVED_SLACK_S:
            raise r.error(OBSERVED_FIELD, f"{observed!r} s exceeds the window's length "
                                          f"({span_s:g} s)")
    values[OBSERVED_FIELD] = observed
    flags_raw = r.require("flags")
    if not isinstance(flags_raw, list):
        raise r.error("flags", f"expected an array of strings, got {_type_name(flags_raw)}")
    for i, flag in enumerate(flags_raw):
        if not isinstance(flag, str) or not flag:
            raise r.error("flags", f"item {i}: expected a non-empty string, got {flag!r}")
        if "," in flag:
            raise r.error("flags", f"item {i}: {flag!r} contains ','")
    source = r.optional(STATE_SOURCE_FIELD)
    if source is not None and (not isinstance(source, str) or source not in STATE_SOURCES):
        raise r.error(STATE_SOURCE_FIELD, f"expected one of "
                      f"{', '.join(map(repr, sorted(STATE_SOURCES)))} or null, got {source!r}")
    assert site is not None and window is not None  # ident() without nullable never returns None
    try:
        return KpiRecord(
            site=site, line=line, machine=machine, window=window,
            window_start_ms=start_ms, window_end_ms=end_ms,
            flags=tuple(flags_raw), state_source=source, **values,
        )
    except (TypeError, ValueError) as err:  # pragma: no cover - checked above
        raise InputError(f"KPI {place}: {err}") from err


def parse_alarm_payload(payload: bytes, topic: str) -> AlarmEvent:
    """Decode and validate one alarm message (schema ``factory-alarm/1``).

    The accepted form is ``AlarmEvent.to_json_dict()``; errors name ``topic`` and the key.
    """
    r = _decode(payload, f"payload on topic {topic!r}", "alarm", ALARM_SCHEMA)
    r.reject_unknown(_ALARM_KEYS)
    ts_ms = r.timestamp("ts")
    site = r.ident("site")
    line = r.ident("line", nullable=True)
    machine = r.ident("machine", nullable=True)
    if line is None and machine is not None:
        raise r.error("line", "must not be null when machine is set")
    rule = r.text("rule")
    if not rule.strip():
        raise r.error("rule", "must not be empty")
    state = r.text("state")
    if state not in _ALARM_STATES:
        raise r.error("state", f"expected 'raised' or 'cleared', got {state!r}")
    severity = r.text("severity")
    if not severity.strip():
        raise r.error("severity", "must not be empty")
    value = r.number("value", nullable=True)
    message = r.text("message")
    assert site is not None
    return AlarmEvent(
        ts_ms=ts_ms, site=site, line=line, machine=machine, rule=rule,
        state="raised" if state == "raised" else "cleared",
        severity=severity, value=value, message=message,
    )


StatusState = Literal["online", "offline"]


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """An agent's retained status message (``{prefix}/{site}/_agent/{agent}/status``).

    ``uptime_s`` and ``outbox_depth`` come with ``online`` only, ``reason`` with
    ``offline`` (``shutdown`` after a clean stop, ``connection lost`` from the Last Will).
    """

    agent_id: str
    state: StatusState
    version: str
    started_ms: int | None = None
    uptime_s: float | None = None
    outbox_depth: int | None = None
    reason: str | None = None


def parse_status_payload(payload: bytes, topic: str) -> StatusMessage:
    """Decode and validate one agent status message.

    The form is what the agent's publisher sends (``state``, ``agent_id``, ``version``,
    ``started``, and ``uptime_s``/``outbox_depth`` or ``reason``); unknown keys are
    ignored. Errors name ``topic`` and the key.
    """
    r = _json_object(payload, f"payload on topic {topic!r}", "status")
    state = r.text("state")
    if state not in ("online", "offline"):
        raise r.error("state", f"expected 'online' or 'offline', got {state!r}")
    agent_id = r.ident("agent_id")
    assert agent_id is not None
    version = r.text("version")
    started_ms = r.timestamp("started") if r.optional("started") is not None else None
    uptime_s = None
    if r.optional("uptime_s") is not None:
        uptime_s = r.number("uptime_s", nullable=False)
        assert uptime_s is not None
        if uptime_s < 0:
            raise r.error("uptime_s", f"must not be negative, got {uptime_s!r}")
    depth = r.count("outbox_depth") if r.optional("outbox_depth") is not None else None
    reason = r.text("reason") if r.optional("reason") is not None else None
    return StatusMessage(
        agent_id=agent_id, state="online" if state == "online" else "offline",
        version=version, started_ms=started_ms, uptime_s=uptime_s, outbox_depth=depth,
        reason=reason,
    )
