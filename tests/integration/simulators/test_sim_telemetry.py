"""Live spindle readings (``telemetry_hz``): served on their grid, history unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Client

from simulators.opcua_server import NAMESPACE_URI
from simulators.plant import Plant, SimClock
from simulators.scenario import Scenario, default_scenario

pytestmark = pytest.mark.integration

START_MS = round(datetime(2024, 5, 6, 9, 0, tzinfo=UTC).timestamp() * 1000)
STEP_MS = 250


def _scenario(hz: float) -> Scenario:
    return default_scenario(machines=4, seed=11, fast=True).model_copy(
        update={"telemetry_hz": hz})


async def _run(tmp: Path, hz: float, seconds: int) -> list[str]:
    async with Plant(_scenario(hz), ledger_dir=tmp,
                     clock=SimClock(manual=True, start_ms=START_MS)) as plant:
        for step in range(1, seconds * 1000 // STEP_MS + 1):
            await plant.run_until(START_MS + step * STEP_MS)
    return [line for path in sorted(tmp.iterdir()) for line in path.read_text().splitlines()]


async def test_live_readings_leave_the_ledger_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    without = await _run(tmp_path / "off", 0.0, 90)
    with_readings = await _run(tmp_path / "on", 10.0, 90)
    assert any('"kind":"part"' in line for line in without)
    assert with_readings == without


async def test_a_cutting_machine_serves_its_reading_of_the_last_tick(tmp_path: Path) -> None:
    clock = SimClock(manual=True, start_ms=START_MS)
    async with Plant(_scenario(10.0), clock=clock) as plant, \
            Client(plant.opcua_endpoint, timeout=10) as client:
        ns = await client.get_namespace_index(NAMESPACE_URI)
        checked = 0
        for step in range(1, 400):
            # Between ticks (every 100 ms), so the last write of the load was a tick's.
            await plant.run_until(START_MS + step * 100 + 50)
            for machine_id in plant.machines:
                machine = plant.machine_model(machine_id)
                if machine.state != "producing":
                    continue
                node = client.get_node(f"ns={ns};s=Machines/{machine_id}/Monitoring/Spindle/Load")
                dv = await node.read_data_value()
                assert dv.SourceTimestamp is not None
                ts_ms = round(dv.SourceTimestamp.replace(tzinfo=UTC).timestamp() * 1000)
                if ts_ms != START_MS + step * 100:
                    continue  # a part or state change came after the tick
                assert dv.Value.Value == machine.spindle_at(ts_ms)[1]
                checked += 1
            if checked >= 20:
                break
        assert checked >= 20


async def test_lag_is_the_age_of_the_oldest_overdue_instant(tmp_path: Path) -> None:
    clock = SimClock(manual=True, start_ms=START_MS)
    async with Plant(_scenario(10.0), clock=clock) as plant:
        due = plant._next_instant_ms()
        assert due is not None
        plant._note_lag(due + 1_500)
        assert plant.lag_s == 1.5
        plant._note_lag(due)
        assert plant.lag_s == 0.0
        assert plant.max_lag_s == 1.5
        plant.reset_max_lag()
        assert plant.max_lag_s == 0.0
