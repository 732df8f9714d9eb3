"""A meter read far less often than a window lasts, through the whole chain: the Modbus
simulator -> `edge-agent run` -> Mosquitto -> `edge-agent ingest` -> InfluxDB.

What finally stands in InfluxDB for every window is its uniform share of each reading
interval (the offline recompute's spread of the very readings the agent recorded), with
the default lateness kept for the other KPIs: the windows are emitted on time with
their energy pending, and revised, whole, once the closing reading arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agent.demo import simulator_config
from agent.samplelog import read_samples
from agent.services import ManagedInfluxd, ManagedMosquitto
from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

WINDOW_S = 5
POLL_S = 12.0  # more than two windows between readings
LATENESS_S = 2.0
READINGS = 4  # three reading intervals, so windows are revised again and again
MAX_RUN_S = 150
RESOLUTION = Fraction(1, 100)  # the sdm630 preset's 0.01 kWh


def _readings(record: Path, meter: str) -> list[tuple[int, Fraction]]:
    """The meter's good readings the agent recorded, in steps of its resolution."""
    if not record.exists():
        return []
    lines = record.read_text(encoding="utf-8").splitlines()
    complete = lines if not lines or lines[-1].endswith("}") else lines[:-1]
    out = []
    for s in read_samples(complete, str(record)):
        if s.device == meter and s.signal == "energy_kwh" and s.quality != "bad":
            assert isinstance(s.value, int | float)
            out.append((s.ts_ms, Fraction(round(Fraction(s.value) / RESOLUTION))))
    return out


def _spread(readings: list[tuple[int, Fraction]], start: int, end: int) -> Fraction:
    """kWh of ``[start, end)``: each reading interval spread uniformly over it."""
    total = Fraction(0)
    for (t1, v1), (t2, v2) in itertools.pairwise(readings):
        lo, hi = max(t1, start), min(t2, end)
        if hi > lo:
            total += (v2 - v1) * (hi - lo) / (t2 - t1)
    return total * RESOLUTION


def _final(influxdb: ManagedInfluxd, record: Path, meter: str) -> bool:
    readings = _readings(record, meter)
    first, last = readings[0][0], readings[READINGS - 1][0]
    ends = set(range((first // 1000 // WINDOW_S + 1) * WINDOW_S * 1000 + WINDOW_S * 1000,
                     last + 1, WINDOW_S * 1000))
    rows = influxdb.rows("SELECT * FROM kpi")
    done = {int(r["time"]) for r in rows  # type: ignore[call-overload]
            if r["machine"] == "_site" and "energy_pending" not in str(r.get("flags") or "")}
    return ends <= done


def _settled(influxdb: ManagedInfluxd, previous: int | None) -> tuple[bool, int]:
    rows = len(influxdb.rows("SELECT * FROM kpi"))
    return rows > 0 and rows == previous, rows


async def test_a_slow_meter_ends_as_the_offline_spread_in_influxdb(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, tmp_path: Path,
    edge_agent: Any, ingest_toml: Path,
) -> None:
    async with Plant(default_scenario(machines=1, seed=11, fast=True),
                     ledger_dir=tmp_path / "ledger") as plant:
        raw = simulator_config(plant, mqtt_port=mosquitto.port, window=f"{WINDOW_S}s",
                               state_dir=tmp_path / "state", lateness_s=LATENESS_S)
        for source in raw["sources"]:
            if source["type"] == "modbus":
                source["poll_interval_s"] = POLL_S
        agent_toml = tmp_path / "agent.toml"
        agent_toml.write_text(tomli_w.dumps(raw))
        meter = plant.meters[0][0]
        record = tmp_path / "samples.jsonl"
        ingest_log, agent_log = tmp_path / "ingest.log", tmp_path / "agent.log"
        ingest = edge_agent(["ingest", "-c", str(ingest_toml)], ingest_log)
        agent = edge_agent(["run", "-c", str(agent_toml), "--record", str(record)], agent_log)
        try:
            deadline = time.monotonic() + MAX_RUN_S
            while time.monotonic() < deadline:
                assert agent.poll() is None, agent_log.read_text()
                await asyncio.sleep(1)
                if len(_readings(record, meter)) >= READINGS:
                    break
            # Then until every window between the first and the last reading stands
            # with its final energy (the last revisions follow the last reading).
            deadline = time.monotonic() + 6 * (WINDOW_S + LATENESS_S)
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                if _final(influxdb, record, meter):
                    break
            agent.stop()
            done, rows_before = False, None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                done, rows_before = _settled(influxdb, rows_before)
                if done:
                    break
        finally:
            if agent.poll() is None:
                agent.kill()
            ingest.stop()

    readings = _readings(record, meter)
    assert len(readings) >= READINGS, agent_log.read_text()
    first, last = readings[0][0], readings[-1][0]
    assert last - first >= (READINGS - 1) * (POLL_S - 1) * 1000, readings  # a slow meter
    rows = influxdb.rows("SELECT * FROM kpi")
    assert len(rows) == len({(r["machine"], r["line"], r["time"]) for r in rows})
    by_scope: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_scope[str(row["machine"])][int(row["time"])] = row  # type: ignore[call-overload]
    compared = revised = 0
    for scope in (plant.machines[0], "_line", "_site"):
        for end_ms, row in sorted(by_scope[scope].items()):
            start_ms = end_ms - WINDOW_S * 1000
            if start_ms < first or end_ms > last:
                continue  # energy before the first or after the last reading is unknown
            flags = str(row.get("flags") or "").split(",")
            want = _spread(readings, start_ms, end_ms)
            got = Fraction(str(row["energy_kwh"]))
            assert abs(got - want) <= Fraction(1, 10**9), (scope, end_ms, float(got),
                                                          float(want), flags)
            assert "energy_pending" not in flags and "energy_carried" not in flags, (
                scope, end_ms, flags)
            compared += 1
            revised += "revised" in flags
    assert compared >= 3 * 4, json.dumps(sorted(by_scope), default=str)
    # Windows closing between two readings were emitted on time and revised: at least
    # all but the last one or two windows of each reading interval, in every scope.
    assert revised >= 3 * 3, f"{revised} of {compared} windows were revised"
