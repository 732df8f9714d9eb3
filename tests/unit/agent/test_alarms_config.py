"""Alarms end to end: ``[[alarms]]`` in agent.toml -> engine spec -> AlarmEvent -> MQTT.

Each alarm kind is configured the way an operator writes it, the engine is built with
:func:`engine_spec` as the runtime does, and the samples are chosen so that every rule
raises and clears once, at instants computed by hand from the rule's definition in
:mod:`rules.alarms`. The runtime's :func:`encode_output` must then put each event on its
machine's (or line's) ``.../alarm`` topic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.config import load_agent_config
from agent.config.build import engine_spec
from agent.runtime import encode_output
from rules.engine import EngineOutput, KpiEngine
from rules.spec import KpiLimitAlarmSpec, StateDurationAlarmSpec, ThresholdAlarmSpec
from rules.types import Sample, ms_to_rfc3339

S = 1000
T0 = 1_795_680_000_000  # 2026-11-26T08:00:00Z

CONFIG = """
[site]
id = "s"

[kpi]
windows = ["1m"]
lateness_s = 5

[[lines]]
id = "L"
output_machine = "m1"

[[machines]]
id = "m1"
line = "L"
ideal_cycle_time_s = 3.0

[[meters]]
id = "e1"
machine = "m1"

[[meters]]
id = "e2"
line = "L"

[[alarms]]
name = "power-high"
kind = "threshold"
device = "e1"
signal = "power_kw"
raise_above = 50.0
clear_below = 30.0
min_duration_s = 10.0

[[alarms]]
name = "spindle-hot"
kind = "threshold"
device = "m1"
signal = "spindle_temp_c"
raise_above = 80.0
clear_below = 70.0
severity = "critical"

[[alarms]]
name = "line-power"
kind = "threshold"
device = "e2"
signal = "power_kw"
raise_above = 100.0

[[alarms]]
name = "idle-too-long"
kind = "state_duration"
machine = "m1"
state = "idle"
max_duration_s = 60.0
severity = "info"

[[alarms]]
name = "defects"
kind = "kpi_limit"
machine = "m1"
field = "defect_rate"
limit = 0.1
window = "1m"
"""


def _samples() -> list[Sample]:
    def at(sec: float, device: str, signal: str, value: Any) -> Sample:
        return Sample(T0 + round(sec * S), device, signal, value)

    return [
        # state: idle from 60 s to 180 s (120 s > 60 s)
        at(0, "m1", "state", "producing"),
        at(60, "m1", "state", "idle"),
        at(180, "m1", "state", "producing"),
        # power: above 50 from 20 s (raise at 20 + 10 = 30 s), 40 is between the limits
        # (no change), below 30 at 60 s (clear)
        at(0, "e1", "power_kw", 10.0),
        at(20, "e1", "power_kw", 60.0),
        at(40, "e1", "power_kw", 70.0),
        at(50, "e1", "power_kw", 40.0),
        at(60, "e1", "power_kw", 20.0),
        # a signal only an alarm reads: above 80 at 5 s (no minimum duration), below 70 at 15 s
        at(5, "m1", "spindle_temp_c", 85.0),
        at(15, "m1", "spindle_temp_c", 65.0),
        # the line meter: no clear_below, so it clears below raise_above
        at(100, "e2", "power_kw", 120.0),
        at(110, "e2", "power_kw", 99.0),
        # counts: minute 0 makes 10 parts, 5 bad (defect rate 0.5); minute 1 makes 10, 0 bad
        at(0, "m1", "parts_total", 0),
        at(0, "m1", "parts_bad", 0),
        at(30, "m1", "parts_total", 10),
        at(30, "m1", "parts_bad", 5),
        at(90, "m1", "parts_total", 20),
        at(90, "m1", "parts_bad", 5),
        at(239, "m1", "parts_total", 20),
    ]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG)
    return path


def test_each_alarm_kind_converts_to_its_engine_spec(tmp_path: Path) -> None:
    spec = engine_spec(load_agent_config(_config(tmp_path), kpi_only=True))
    by_name = {a.name: a for a in spec.alarms}
    assert by_name["power-high"] == ThresholdAlarmSpec(
        "power-high", "e1", "power_kw", 50.0, 30.0, 10.0, "warning")
    # without clear_below the alarm clears when the value is back below raise_above
    assert by_name["line-power"] == ThresholdAlarmSpec(
        "line-power", "e2", "power_kw", 100.0, 100.0, 0.0, "warning")
    assert by_name["idle-too-long"] == StateDurationAlarmSpec(
        "idle-too-long", "m1", "idle", 60.0, "info")
    assert by_name["defects"] == KpiLimitAlarmSpec(
        "defects", "m1", "defect_rate", 0.1, "1m", "warning")


def test_every_alarm_raises_and_clears_and_goes_to_its_alarm_topic(tmp_path: Path) -> None:
    cfg = load_agent_config(_config(tmp_path), kpi_only=True)
    engine = KpiEngine(engine_spec(cfg))
    outputs: list[EngineOutput] = []
    for sample in sorted(_samples(), key=lambda s: s.ts_ms):
        engine.add(sample)
        outputs.append(engine.advance(sample.ts_ms))
    outputs.append(engine.finish())
    alarms = [a for out in outputs for a in out.alarms]

    def events(rule: str) -> list[tuple[str, int, float | None]]:
        return [(a.state, (a.ts_ms - T0) // S, a.value) for a in alarms if a.rule == rule]

    assert events("power-high") == [("raised", 30, None), ("cleared", 60, 20.0)]
    assert events("spindle-hot") == [("raised", 5, None), ("cleared", 15, 65.0)]
    assert events("line-power") == [("raised", 100, None), ("cleared", 110, 99.0)]
    assert events("idle-too-long") == [("raised", 120, None), ("cleared", 180, None)]
    assert events("defects") == [("raised", 60, 0.5), ("cleared", 120, 0.0)]
    assert engine.stats["alarms"] == 10

    messages = encode_output(cfg, EngineOutput([], alarms))
    assert len(messages) == len(alarms)
    for (topic, payload), alarm in zip(messages, alarms, strict=True):
        body = json.loads(payload)
        where = "L/_line" if alarm.rule == "line-power" else "L/m1"
        assert topic == f"factory/s/{where}/alarm", alarm
        assert body["schema"] == "factory-alarm/1"
        assert body["rule"] == alarm.rule and body["state"] == alarm.state
        assert body["ts"] == ms_to_rfc3339(alarm.ts_ms)
    severities = {json.loads(p)["rule"]: json.loads(p)["severity"] for _, p in messages}
    assert severities["spindle-hot"] == "critical"
    assert severities["idle-too-long"] == "info"

