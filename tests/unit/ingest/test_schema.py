"""Payload validation: the wire form round-trips exactly; every error names key and topic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.ingest.schema import (
    LATER_FIELDS,
    StatusMessage,
    parse_alarm_payload,
    parse_kpi_payload,
    parse_status_payload,
)
from rules.errors import InputError
from rules.types import KPI_FIELDS, AlarmEvent, KpiRecord

T0 = 1_795_680_000_000
TOPIC = "factory/s1/l1/m1/kpi"

MACHINE = KpiRecord(
    site="s1", line="l1", machine="m1", window="1m", window_start_ms=T0,
    window_end_ms=T0 + 60_000, observed_s=60.0, planned_busy_time_s=60.0, producing_time_s=45.5,
    setup_time_s=4.5, unplanned_down_time_s=10.0, idle_time_s=0.0, parts_produced=7,
    parts_good=6, parts_scrap=1, availability=0.7583333333333333, performance=1.0769230769230769,
    quality_ratio=6 / 7, oee=0.1 + 0.2, defect_rate=1 / 7, cycle_time_mean_s=6.5,
    ideal_cycle_time_s=7.0, energy_kwh=1.25, energy_per_unit_kwh=1.25 / 7,
    energy_per_good_unit_kwh=1.25 / 6, kgce_per_good_unit=0.1229 * 1.25 / 6, co2_kg=0.66325,
    co2_per_good_unit_kg=0.66325 / 6, flags=("meter_reset", "incomplete"),
)
LINE = KpiRecord(site="s1", line="l1", machine=None, window="15m", window_start_ms=T0,
                 window_end_ms=T0 + 900_000, planned_busy_time_s=900.0)
SITE = KpiRecord(site="石家庄-01", line=None, machine=None, window="shift", window_start_ms=T0,
                 window_end_ms=T0 + 28_800_000, parts_produced=2**40)
ALARM = AlarmEvent(ts_ms=T0 + 1, site="s1", line="l1", machine="m1", rule="oee_low",
                   state="raised", severity="critical", value=0.25, message="OEE < 40 %")


def good() -> dict[str, Any]:
    return MACHINE.to_json_dict()


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("record", [MACHINE, LINE, SITE], ids=["machine", "line", "site"])
def test_kpi_round_trip_is_exact(record: KpiRecord) -> None:
    wire = record.to_json_dict()
    parsed = parse_kpi_payload(json.dumps(wire, ensure_ascii=False).encode(), TOPIC)
    assert parsed == record
    assert parsed.to_json_dict() == wire
    assert json.dumps(parsed.to_json_dict()) == json.dumps(wire)


def test_whole_numbers_in_float_fields_and_integral_counts_are_accepted() -> None:
    wire = good()
    wire["planned_busy_time_s"] = 60
    wire["parts_produced"] = 7.0
    parsed = parse_kpi_payload(encode(wire), TOPIC)
    assert parsed == MACHINE
    assert isinstance(parsed.planned_busy_time_s, float)
    assert isinstance(parsed.parts_produced, int)


def test_fields_added_later_are_optional_for_older_agents() -> None:
    older = good()
    for name in LATER_FIELDS:
        older.pop(name, None)
    record = parse_kpi_payload(encode(older), TOPIC)
    assert all(getattr(record, name) is None for name in LATER_FIELDS)
    assert parse_kpi_payload(encode(_with(scrap_all_machines=3)), TOPIC).scrap_all_machines == 3


def test_observed_s_is_optional_for_agents_that_predate_it() -> None:
    """Absent or null: unknown (ranks as 0 s against a stored record); a window's full
    length, give or take a rounding millisecond, is fine."""
    older = _without("observed_s")
    assert parse_kpi_payload(encode(older), TOPIC).observed_s is None
    assert parse_kpi_payload(encode(_with(observed_s=None)), TOPIC).observed_s is None
    assert parse_kpi_payload(encode(_with(observed_s=60.0005)), TOPIC).observed_s == 60.0005
    assert parse_kpi_payload(encode(_with(observed_s=0)), TOPIC).observed_s == 0.0


def test_other_utc_offsets_are_converted() -> None:
    wire = good()
    wire["window_start"] = "2026-11-26T16:00:00+08:00"
    assert parse_kpi_payload(encode(wire), TOPIC).window_start_ms == T0


def test_alarm_round_trip_is_exact() -> None:
    for event in (ALARM, AlarmEvent(ts_ms=T0, site="s1", line=None, machine=None, rule="r",
                                    state="cleared")):
        wire = event.to_json_dict()
        parsed = parse_alarm_payload(encode(wire), "factory/s1/l1/m1/alarm")
        assert parsed == event
        assert parsed.to_json_dict() == wire


def _without(key: str) -> dict[str, Any]:
    wire = good()
    del wire[key]
    return wire


def _with(**changes: Any) -> dict[str, Any]:
    wire = good()
    wire.update(changes)
    return wire


KPI_ERRORS: list[tuple[str, bytes, str, str]] = [
    # (case, payload, key named, phrase)
    *[(f"missing {k}", encode(_without(k)), k, "missing")
      for k in ("schema", "site", "line", "machine", "window", "window_start", "window_end",
                "flags",
                *(f for f in KPI_FIELDS if f != "observed_s" and f not in LATER_FIELDS))],
    ("bad schema", encode(_with(schema="factory-kpi/2")), "schema", "factory-kpi/1"),
    ("alarm schema", encode(ALARM.to_json_dict()), "schema", "factory-kpi/1"),
    ("unknown key", encode(_with(extra=1)), "extra", "unknown key"),
    ("string number", encode(_with(oee="0.5")), "oee", "expected a number, got string"),
    ("bool number", encode(_with(oee=True)), "oee", "expected a number, got boolean"),
    ("NaN", encode(_with(oee=float("nan"))), "oee", "finite"),
    ("Infinity", encode(_with(energy_kwh=float("inf"))), "energy_kwh", "finite"),
    ("-Infinity", encode(_with(co2_kg=float("-inf"))), "co2_kg", "finite"),
    ("null time", encode(_with(producing_time_s=None)), "producing_time_s", "null"),
    ("null count", encode(_with(parts_good=None)), "parts_good", "null"),
    ("fractional count", encode(_with(parts_scrap=1.5)), "parts_scrap", "integer"),
    ("negative count", encode(_with(parts_produced=-1)), "parts_produced", "negative"),
    ("string count", encode(_with(parts_produced="7")), "parts_produced", "integer"),
    ("site null", encode(_with(site=None)), "site", "null"),
    ("site number", encode(_with(site=3)), "site", "string"),
    ("empty window", encode(_with(window="")), "window", "empty"),
    ("reserved id", encode(_with(machine="_line")), "machine", "reserved"),
    *[(f"{name} {level!r}", encode(_with(**{name: f"a{level}b"})), name,
       "not a valid topic level") for name in ("site", "line", "machine", "window")
      for level in ("/", "+", "#", "\x00")],
    ("observed negative", encode(_with(observed_s=-1.0)), "observed_s", "negative"),
    ("observed beyond the window", encode(_with(observed_s=60.5)), "observed_s",
     "exceeds the window's length (60 s)"),
    ("observed string", encode(_with(observed_s="60")), "observed_s", "number"),
    ("observed NaN", encode(_with(observed_s=float("nan"))), "observed_s", "finite"),
    ("machine without line", encode(_with(line=None)), "line", "machine is set"),
    ("naive time", encode(_with(window_start="2026-11-26T08:00:00")), "window_start", "RFC 3339"),
    ("garbage time", encode(_with(window_end="yesterday")), "window_end", "RFC 3339"),
    ("empty window span", encode(_with(window_end=good()["window_start"])), "window_end",
     "not after"),
    ("flags not list", encode(_with(flags="incomplete")), "flags", "array"),
    ("flag not string", encode(_with(flags=["a", 1])), "flags", "item 1"),
    ("flag with comma", encode(_with(flags=["a,b"])), "flags", "','"),
]


@pytest.mark.parametrize(("payload", "key", "phrase"), [c[1:] for c in KPI_ERRORS],
                         ids=[c[0] for c in KPI_ERRORS])
def test_kpi_errors_name_key_and_topic(payload: bytes, key: str, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_kpi_payload(payload, TOPIC)
    message = str(info.value)
    assert repr(TOPIC) in message
    assert f"key {key!r}" in message
    assert phrase in message


@pytest.mark.parametrize(("payload", "phrase"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "expected a JSON object, got array"),
    (b"null", "expected a JSON object, got null"),
    (b"", "not valid JSON"),
])
def test_undecodable_payloads_name_the_topic(payload: bytes, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_kpi_payload(payload, TOPIC)
    assert repr(TOPIC) in str(info.value)
    assert phrase in str(info.value)


def _alarm(**changes: Any) -> bytes:
    wire = ALARM.to_json_dict()
    wire.update(changes)
    return encode({k: v for k, v in wire.items() if v is not ...})


@pytest.mark.parametrize(("payload", "key", "phrase"), [
    (_alarm(schema="factory-kpi/1"), "schema", "factory-alarm/1"),
    (_alarm(state="on"), "state", "'raised' or 'cleared'"),
    (_alarm(value=float("nan")), "value", "finite"),
    (_alarm(value="high"), "value", "number"),
    (_alarm(ts=...), "ts", "missing"),
    (_alarm(rule=""), "rule", "empty"),
    (_alarm(message=None), "message", "string"),
    (_alarm(colour="red"), "colour", "unknown key"),
])
def test_alarm_errors_name_key_and_topic(payload: bytes, key: str, phrase: str) -> None:
    topic = "factory/s1/l1/m1/alarm"
    with pytest.raises(InputError) as info:
        parse_alarm_payload(payload, topic)
    message = str(info.value)
    assert repr(topic) in message and f"key {key!r}" in message and phrase in message


ONLINE = {"state": "online", "agent_id": "a1", "version": "1.4.0",
          "started": "2026-11-26T08:00:00.000Z", "uptime_s": 31.5, "outbox_depth": 3}
OFFLINE = {"state": "offline", "agent_id": "a1", "version": "1.4.0",
           "started": "2026-11-26T08:00:00.000Z", "reason": "connection lost"}
STATUS_TOPIC = "factory/s1/_agent/a1/status"


def test_status_payloads_as_the_publisher_sends_them() -> None:
    assert parse_status_payload(encode(ONLINE), STATUS_TOPIC) == StatusMessage(
        agent_id="a1", state="online", version="1.4.0", started_ms=T0, uptime_s=31.5,
        outbox_depth=3)
    assert parse_status_payload(encode({**OFFLINE, "later_key": [1]}),
                                STATUS_TOPIC) == StatusMessage(
        agent_id="a1", state="offline", version="1.4.0", started_ms=T0,
        reason="connection lost")


@pytest.mark.parametrize(("payload", "key", "phrase"), [
    (encode({**ONLINE, "state": "sleeping"}), "state", "'online' or 'offline'"),
    (encode({k: v for k, v in ONLINE.items() if k != "agent_id"}), "agent_id", "missing"),
    (encode({**ONLINE, "agent_id": "a/b"}), "agent_id", "topic level"),
    (encode({**ONLINE, "version": 2}), "version", "string"),
    (encode({**ONLINE, "started": "soon"}), "started", "RFC 3339"),
    (encode({**ONLINE, "uptime_s": -1}), "uptime_s", "negative"),
    (encode({**ONLINE, "outbox_depth": 1.5}), "outbox_depth", "integer"),
])
def test_status_errors_name_key_and_topic(payload: bytes, key: str, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_status_payload(payload, STATUS_TOPIC)
    message = str(info.value)
    assert repr(STATUS_TOPIC) in message and f"key {key!r}" in message and phrase in message
    with pytest.raises(InputError, match="not valid JSON"):
        parse_status_payload(b"{", STATUS_TOPIC)
