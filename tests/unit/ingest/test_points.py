"""Points: complete tag sets (placeholders), stable field types, no nulls, time = window end."""

from __future__ import annotations

from agent.ingest.points import InfluxPoint, alarm_to_point, record_to_point
from rules.types import AlarmEvent, KpiRecord

T0 = 1_795_680_000_000


def record(**kw: object) -> KpiRecord:
    base: dict[str, object] = {
        "site": "s1", "line": "l1", "machine": "m1", "window": "1m", "window_start_ms": T0,
        "window_end_ms": T0 + 60_000,
    }
    base.update(kw)
    return KpiRecord(**base)  # type: ignore[arg-type]


def test_machine_record_tags_time_and_types() -> None:
    point = record_to_point(record(planned_busy_time_s=60.0, producing_time_s=30, parts_produced=5,
                                   parts_good=4, parts_scrap=1, oee=1.0, energy_kwh=2.5,
                                   flags=("meter_reset", "incomplete")))
    assert point.measurement == "kpi"
    assert point.tags == {"site": "s1", "line": "l1", "machine": "m1", "window": "1m"}
    assert point.time_ms == T0 + 60_000
    assert point.fields == {
        "planned_busy_time_s": 60.0, "producing_time_s": 30.0, "setup_time_s": 0.0,
        "unplanned_down_time_s": 0.0, "idle_time_s": 0.0, "parts_produced": 5,
        "parts_good": 4, "parts_scrap": 1, "oee": 1.0, "energy_kwh": 2.5,
        "flags": "meter_reset,incomplete",
    }
    for name in ("parts_produced", "parts_good", "parts_scrap"):
        assert type(point.fields[name]) is int
    for name in ("producing_time_s", "oee"):
        assert type(point.fields[name]) is float


def test_nulls_are_never_written_and_empty_flags_are() -> None:
    fields = record_to_point(record()).fields
    assert None not in fields.values()
    assert "oee" not in fields and "availability" not in fields
    assert fields["flags"] == ""


def test_line_and_site_records_use_the_topic_placeholders() -> None:
    line = record_to_point(record(machine=None))
    site = record_to_point(record(line=None, machine=None))
    assert (line.tags["line"], line.tags["machine"]) == ("l1", "_line")
    assert (site.tags["line"], site.tags["machine"]) == ("_site", "_site")


def test_the_same_record_gives_the_same_key() -> None:
    a, b = record_to_point(record(oee=0.5)), record_to_point(record(oee=0.6))
    assert (a.measurement, a.tags, a.time_ms) == (b.measurement, b.tags, b.time_ms)
    other_window = record_to_point(record(window="15m"))
    assert other_window.tags != a.tags


def test_line_protocol_types_and_precision() -> None:
    text = record_to_point(record(parts_produced=7, oee=0.25, flags=("a b",))).to_line_protocol()
    assert text.startswith("kpi,line=l1,machine=m1,site=s1,window=1m ")
    assert "parts_produced=7i" in text
    assert "oee=0.25" in text
    assert 'flags="a b"' in text
    assert text.endswith(f" {T0 + 60_000}")


def test_line_protocol_escapes_tags() -> None:
    point = InfluxPoint("kpi", {"site": "a b,c=d"}, {"x": 1.5}, 5)
    assert point.to_line_protocol() == r"kpi,site=a\ b\,c\=d x=1.5 5"


def test_alarm_point() -> None:
    event = AlarmEvent(ts_ms=T0 + 5, site="s1", line="l1", machine=None, rule="energy_high",
                       state="cleared", severity="warning", value=3, message="back to normal")
    point = alarm_to_point(event)
    assert point.measurement == "alarm"
    assert point.tags == {"site": "s1", "line": "l1", "machine": "_line", "rule": "energy_high"}
    assert point.fields == {"state": "cleared", "severity": "warning", "value": 3.0,
                            "message": "back to normal"}
    assert type(point.fields["value"]) is float
    assert point.time_ms == T0 + 5
    no_value = alarm_to_point(AlarmEvent(ts_ms=1, site="s", line=None, machine=None, rule="r",
                                         state="raised"))
    assert "value" not in no_value.fields
    assert no_value.tags["line"] == no_value.tags["machine"] == "_site"
