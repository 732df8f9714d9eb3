"""A config reload keeps the windows waiting for a slow meter's closing reading.

The engine state carried across a reload (agent.reload) holds the closed windows kept
for energy revision, matched by id like the open ones, so a window emitted before the
reload with its energy pending is still revised to its exact share after it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.config.build import engine_spec
from agent.reload import plan_reload, rebuild_engine
from rules.engine import KpiEngine
from rules.types import KpiRecord, Sample

S = 1000
M = 60 * S
T0 = 1_767_254_400_000  # 2026-01-01T08:00:00Z

BASE: dict[str, Any] = {
    "agent": {"id": "a1", "state_dir": "/tmp/edge-agent-test-state"},
    "site": {"id": "s1"},
    "kpi": {"windows": ["1m"], "lateness_s": 1.0},
    "mqtt": {"host": "127.0.0.1", "port": 1883},
    "sources": [{"id": "gw", "type": "modbus", "port": 5020}],
    "lines": [{"id": "line-a", "output_machine": "cnc-01"}],
    "machines": [
        {"id": "cnc-01", "line": "line-a", "ideal_cycle_time_s": 45.0, "signals": {
            "state": {"source": "gw", "unit": 1, "table": "holding", "address": 0,
                      "map": {"1": "producing"}},
        }},
    ],
    "meters": [
        {"id": "meter-01", "machine": "cnc-01", "resolution_kwh": 0.1, "signals": {
            "energy_kwh": {"source": "gw", "unit": 2, "table": "holding", "address": 0,
                           "type": "u32", "scale": 0.1},
        }},
    ],
}


def _samples(start_s: int, end_s: int) -> list[Sample]:
    """A producing machine reported every second; the meter read every 5 minutes,
    1 kWh per minute."""
    out = []
    for t in range(start_s, end_s):
        out.append(Sample(T0 + t * S, "cnc-01", "state", "producing"))
        if t % 300 == 0:
            out.append(Sample(T0 + t * S, "meter-01", "energy_kwh", 100.0 + t / 60))
    return out


def test_a_reload_keeps_the_windows_kept_for_revision() -> None:
    old = AgentConfig.model_validate(BASE)
    raw = copy.deepcopy(BASE)
    raw["machines"][0]["ideal_cycle_time_s"] = 40.0  # a change that keeps the meter's state
    new = AgentConfig.model_validate(raw)
    engine = KpiEngine(engine_spec(old))
    records: list[KpiRecord] = []
    for s in _samples(0, 420):  # 08:07: the 08:05 and 08:06 windows wait for 08:10
        engine.add(s)
        records += engine.advance(s.ts_ms).records
    assert engine.snapshot()["revisable"]
    engine = rebuild_engine(engine, engine_spec(new), plan_reload(old, new))
    assert engine.snapshot()["revisable"]
    for s in _samples(420, 780):
        engine.add(s)
        records += engine.advance(s.ts_ms).records
    final: dict[tuple[object, ...], KpiRecord] = {}
    for rec in records:
        final[rec.key] = rec
    for minute in (5, 6):
        rec = final[("s1", "line-a", "cnc-01", "1m", T0 + (minute + 1) * M)]
        assert rec.energy_kwh == pytest.approx(1.0, abs=1e-9)
        assert "revised" in rec.flags and "energy_pending" not in rec.flags
        assert "energy_carried" not in rec.flags
