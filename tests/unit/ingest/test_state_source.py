"""``state_source``: a record of a machine read by its power says so on the wire, and the
ingest carries it to InfluxDB as a tag; records from controllers are unchanged."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from agent.ingest.points import KPI_TAGS, STATE_SOURCE_TAG, record_to_point
from agent.ingest.schema import parse_kpi_payload
from agent.ingest.service import Inbound, payload_to_point
from agent.ingest.sink import plan_writes
from rules.errors import InputError
from rules.types import KpiRecord

T0 = 1_795_680_000_000
TOPIC = "factory/s1/l1/saw-02/kpi"
POWER = KpiRecord(site="s1", line="l1", machine="saw-02", window="1m", window_start_ms=T0,
                  window_end_ms=T0 + 60_000, observed_s=60.0, planned_busy_time_s=60.0,
                  producing_time_s=42.0, idle_time_s=18.0, parts_produced=3, parts_good=3,
                  state_source="power")


def test_the_wire_form_carries_it_and_round_trips() -> None:
    wire = POWER.to_json_dict()
    assert wire["state_source"] == "power"
    assert parse_kpi_payload(json.dumps(wire).encode(), TOPIC) == POWER
    controller = replace(POWER, state_source=None)
    assert "state_source" not in controller.to_json_dict()
    assert parse_kpi_payload(json.dumps(controller.to_json_dict()).encode(),
                             TOPIC).state_source is None
    explicit_null = {**controller.to_json_dict(), "state_source": None}
    assert parse_kpi_payload(json.dumps(explicit_null).encode(), TOPIC) == controller


@pytest.mark.parametrize("value", ["controller", "", 1, ["power"]])
def test_an_unknown_source_is_refused_by_key(value: object) -> None:
    wire = {**POWER.to_json_dict(), "state_source": value}
    with pytest.raises(InputError, match="key 'state_source'"):
        parse_kpi_payload(json.dumps(wire).encode(), TOPIC)


def test_the_point_has_the_tag_only_when_set() -> None:
    point = record_to_point(POWER)
    assert point.tags == {"site": "s1", "line": "l1", "machine": "saw-02", "window": "1m",
                          STATE_SOURCE_TAG: "power"}
    assert "state_source" not in point.fields
    assert "state_source=power" in point.to_line_protocol()
    assert tuple(record_to_point(replace(POWER, state_source=None)).tags) == KPI_TAGS


def test_the_ingest_turns_the_message_into_the_tagged_point() -> None:
    message = Inbound(TOPIC, json.dumps(POWER.to_json_dict()).encode(), 1, 1)
    point = payload_to_point(message)
    assert point is not None and point.tags[STATE_SOURCE_TAG] == "power"
    # the same record again replaces the stored point of its own series
    stored = {point.key: dict(point.fields)}
    plan = plan_writes([point], stored)
    assert plan.write == (0,) and plan.delete == () and not plan.refused
