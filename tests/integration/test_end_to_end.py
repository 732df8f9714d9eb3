"""The whole chain on real sockets: simulators -> `edge-agent run` -> Mosquitto ->
`edge-agent ingest` -> InfluxDB, checked window by window against the simulators' ledger.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.request
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from agent.demo import simulator_config
from agent.services import ManagedInfluxd, ManagedMosquitto, free_port
from simulators.ledger import energy_in, max_power_kw, parts_in, read_ledger
from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

WINDOW_S = 5
POLL_S = 1.0
MIN_WINDOWS = 3
MAX_RUN_S = 120


def _ledger(plant: Plant) -> list[dict[str, Any]]:
    return [e for path in plant.ledger_paths().values() for e in read_ledger(path)]


def _check_health(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
        assert resp.status == 200, resp.read()
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {s.name: s.value for f in families.values() for s in f.samples}
    assert any(n.endswith("samples_total") for n in samples), sorted(samples)
    assert any("outbox" in n for n in samples), sorted(samples)


def _comparable(row: dict[str, Any], started_ms: int) -> bool:
    start_ms = int(row["time"]) - WINDOW_S * 1000  # type: ignore[call-overload]
    return start_ms >= started_ms + 3000 and "incomplete" not in str(row.get("flags") or "")


def _complete_windows(influxdb: ManagedInfluxd, machines: list[str], started_ms: int) -> int:
    rows = influxdb.rows("SELECT * FROM kpi")
    return min(sum(1 for r in rows if r["machine"] == m and _comparable(r, started_ms))
               for m in machines)


async def test_kpis_reach_influxdb_and_match_the_ledger(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, tmp_path: Path,
    edge_agent: Any, ingest_toml: Path,
) -> None:
    async with Plant(default_scenario(machines=2, seed=7, fast=True),
                     ledger_dir=tmp_path / "ledger") as plant:
        health_port = free_port()
        raw = simulator_config(plant, mqtt_port=mosquitto.port, window=f"{WINDOW_S}s",
                               state_dir=tmp_path / "state", lateness_s=3.0,
                               health_port=health_port)
        agent_toml = tmp_path / "agent.toml"
        agent_toml.write_text(tomli_w.dumps(raw))
        ingest_log, agent_log = tmp_path / "ingest.log", tmp_path / "agent.log"
        ingest = edge_agent(["ingest", "-c", str(ingest_toml)], ingest_log)
        started_ms = int(time.time() * 1000)
        agent = edge_agent(["run", "-c", str(agent_toml)], agent_log)
        try:
            # Run until every machine has MIN_WINDOWS complete windows (a loaded machine
            # starts the agent slower), then stop it and let the ingest catch up.
            deadline = time.monotonic() + MAX_RUN_S
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                if _complete_windows(influxdb, plant.machines, started_ms) >= MIN_WINDOWS:
                    break
            _check_health(health_port)
            agent.stop()
            deadline = time.monotonic() + 20
            expected_rows = None
            while time.monotonic() < deadline:
                rows = influxdb.rows("SELECT * FROM kpi")
                if rows and len(rows) == expected_rows:
                    break
                expected_rows = len(rows)
                await asyncio.sleep(2)
        finally:
            if agent.poll() is None:
                agent.kill()
            ingest.stop()
        events = _ledger(plant)

    rows = influxdb.rows("SELECT * FROM kpi")
    by_machine: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_machine[str(row["machine"])][int(row["time"])] = row  # type: ignore[call-overload]
    for machine in plant.machines:
        assert by_machine[machine], f"no KPI points for {machine}: {agent_log.read_text()}"
    assert by_machine["_line"], "no line records"
    assert by_machine["_site"], "no site records"

    compared = 0
    for i, machine in enumerate(plant.machines):
        meter, _ = plant.meters[i]
        tolerance = max_power_kw(events, meter) * Decimal(POLL_S) / 3600 + Decimal("0.02")
        for end_ms, row in sorted(by_machine[machine].items()):
            start_ms = end_ms - WINDOW_S * 1000
            assert row["window"] == f"{WINDOW_S}s"
            assert row["site"] == "demo-site" and row["line"] == "line-a"
            # Only windows the agent saw from the start can match the ledger exactly.
            if not _comparable(row, started_ms):
                continue
            produced, scrap = parts_in(events, machine, start_ms, end_ms)
            assert (row["parts_produced"], row["parts_scrap"]) == (produced, scrap), (
                machine, end_ms)
            assert row["parts_good"] == produced - scrap
            energy = energy_in(events, meter, start_ms, end_ms)
            assert abs(Decimal(str(row["energy_kwh"])) - energy) <= tolerance, (
                machine, end_ms, row["energy_kwh"], energy, tolerance)
            compared += 1
    assert compared >= MIN_WINDOWS * len(plant.machines), f"only {compared} windows compared"
    # SIGTERM lost nothing: every record left the outbox, and no window is missing in between.
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite") as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    for machine in (*plant.machines, "_line", "_site"):
        ends = sorted(by_machine[machine])
        assert ends == list(range(ends[0], ends[-1] + 1, WINDOW_S * 1000)), (machine, ends)
    # every closed window reached InfluxDB exactly once (idempotent key: tags + window end)
    assert len(rows) == len({(r["machine"], r["line"], r["time"]) for r in rows})
