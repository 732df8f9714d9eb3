"""A machine read by its meter alone: simulator -> `edge-agent run` -> Mosquitto ->
`edge-agent ingest` -> InfluxDB, its power-derived states and part counts checked
against the simulator's ledger.

The simulated saw has no OPC UA mapping at all: the agent reads only its meter (SDM630
preset, polled every ``POLL_S``) and derives ``off`` / ``idle`` / ``producing`` from the
power with ``[machines.power_state]``, counting one part per rise of the power. The
machine makes one part per job (a cycle of 4-6 s, then 2-3 s idle and 1.5-2 s setup),
is switched off for the last 12 s of every minute, and never breaks down.

Tolerances, from how the method works (docs/commissioning.md, "Machines without a
controller"):

* Every true state change is seen late by ``d``: the time to the next poll (0 to
  ``POLL_S``) plus the dwell, plus scheduling jitter (``SLACK_S``). So over a span of
  windows the booked time of a level differs from the truth by at most ``D_MAX`` at each
  end of the span (time shifted across its ends) plus, for each true change into or out
  of that level, the spread of ``d`` (``POLL_S + SLACK_S``).
* A part is counted at the first reading after the power falls, within ``POLL_S`` of the
  ledger's part: a part near either end of the span may fall on the other side (1 each).
  The method counts rises of the right length, and a cycle cut by the machine being
  switched off is two rises, which may count 0, 1 or 2 parts: each such interruption
  (from the ledger) may add or take one, as may a rise whose length is within the reading
  spread of ``min_s``.

The records must also carry ``state_source = "power"`` as an InfluxDB tag (the machine's,
its line's and the site's), equal those ``edge-agent kpi`` recomputes from the sample log
the agent recorded, and the log must give usable thresholds to
``edge-agent propose-thresholds``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agent.config.model import PowerStateSection
from agent.services import ManagedInfluxd, ManagedMosquitto
from rules.types import rfc3339_to_ms
from simulators.ledger import read_ledger
from simulators.plant import Plant
from simulators.scenario import scenario_from_dict
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

WINDOW_S = 10
POLL_S = 0.5
DWELL_S = 1.0
SLACK_S = 0.5
D_MAX = DWELL_S + POLL_S + SLACK_S
MIN_S, MAX_S = 2.0, 10.0
MIN_WINDOWS = 10
MAX_RUN_S = 200
MACHINE = "saw-01"
LEVELS = {"producing": 20.0, "idle": 3.0, "setup": 5.0, "off": 0.0}

SCENARIO = scenario_from_dict({
    "name": "power-only", "seed": 5,
    "calendar": {"cyclic": {"period_s": 60.0, "off": [[48.0, 60.0]]}},
    "machines": [{
        "id": MACHINE,
        "programs": [{"name": "P1", "cycle_time_s": {"kind": "uniform", "mean": 5.0,
                                                     "min": 4.0, "max": 6.0},
                      "batch_size": [1, 1]}],
        "setup_time_s": {"kind": "uniform", "mean": 1.75, "min": 1.5, "max": 2.0},
        "idle_time_s": {"kind": "uniform", "mean": 2.5, "min": 2.0, "max": 3.0},
        "mtbf_s": None,
        "scrap_probability": 0.0,
        "power": {**LEVELS, "unplanned_down": 2.0, "planned_down": 1.5, "jitter": 0.03},
    }],
    "meters": [{"id": "meter-01", "machine": MACHINE, "update_interval_s": 0.5}],
}, source="test")


def _agent_config(plant: Plant, mqtt_port: int, state_dir: Path) -> dict[str, Any]:
    meter, unit = plant.meters[0]
    return {
        "agent": {"id": "power-agent", "state_dir": str(state_dir)},
        "health": {"enabled": False},
        "site": {"id": "power-site", "timezone": "UTC"},
        "kpi": {"windows": [f"{WINDOW_S}s"], "lateness_s": 2.0},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "reconnect_min_s": 0.5,
                 "reconnect_max_s": 5.0},
        "sources": [{"id": "meters", "type": "modbus", "host": "127.0.0.1",
                     "port": plant.modbus_port, "poll_interval_s": POLL_S, "timeout_s": 0.2,
                     "retries": 1}],
        "lines": [{"id": "line-p", "output_machine": MACHINE}],
        "machines": [{
            "id": MACHINE, "line": "line-p", "ideal_cycle_time_s": 4.0,
            "power_state": {"off_below_kw": 0.75, "producing_above_kw": 10.0,
                            "hysteresis_kw": 0.5, "min_dwell_s": DWELL_S,
                            "cycles": {"above_kw": 10.0, "min_s": MIN_S, "max_s": MAX_S}},
        }],
        "meters": [{"id": meter, "machine": MACHINE, "source": "meters", "unit": unit,
                    "preset": "sdm630", "resolution_kwh": 0.01}],
    }


def _level(state: str) -> str:
    return state if state in ("producing", "off") else "idle"


def _segments(entries: list[dict[str, Any]], until_ms: int) -> list[tuple[int, int, str]]:
    """The true power level over time, ``(start, end, level)``, merged."""
    changes = [(rfc3339_to_ms(e["ts"]), _level(e["state"])) for e in entries
               if e["device"] == MACHINE and e["kind"] in ("init", "state")]
    out: list[tuple[int, int, str]] = []
    for (t, level), nxt in zip(changes, [*changes[1:], (until_ms, "")], strict=True):
        if out and out[-1][2] == level:
            out[-1] = (out[-1][0], nxt[0], level)
        elif nxt[0] > t:
            out.append((t, nxt[0], level))
    return out


def _time_in(segments: list[tuple[int, int, str]], level: str, a: int, b: int) -> float:
    return sum(max(0, min(e, b) - max(s, a)) for s, e, lv in segments if lv == level) / 1000


def _changes_of(segments: list[tuple[int, int, str]], level: str, a: int, b: int) -> int:
    """True changes into or out of ``level`` in ``[a, b]``."""
    return sum(1 for (_, e, lv), (_, _, nxt) in itertools.pairwise(segments)
               if a <= e <= b and level in (lv, nxt))


def _longest_run(ends: list[int]) -> list[int]:
    best: list[int] = []
    run: list[int] = []
    for end in sorted(ends):
        run = [*run, end] if run and end - run[-1] == WINDOW_S * 1000 else [end]
        if len(run) > len(best):
            best = run
    return best


def _comparable(row: dict[str, Any], started_ms: int) -> bool:
    start = int(row["time"]) - WINDOW_S * 1000
    return (row["machine"] == MACHINE and start >= started_ms + 3000
            and float(row["observed_s"]) == WINDOW_S and "incomplete" not in str(row["flags"]))


async def _kpi_rows(influxdb: ManagedInfluxd) -> list[dict[str, Any]]:
    # In a thread: the simulated plant runs on this event loop, and a blocking query
    # would hold back the meter's register updates.
    return await asyncio.to_thread(influxdb.rows, "SELECT * FROM kpi")


async def test_a_machine_read_by_its_meter_matches_the_ledger(
    mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd, tmp_path: Path,
    edge_agent: Any, ingest_toml: Path,
) -> None:
    record = tmp_path / "samples.jsonl"
    agent_toml = tmp_path / "agent.toml"
    async with Plant(SCENARIO, ledger_dir=tmp_path / "ledger") as plant:
        agent_toml.write_text(tomli_w.dumps(_agent_config(plant, mosquitto.port,
                                                          tmp_path / "state")))
        ingest = edge_agent(["ingest", "-c", str(ingest_toml)], tmp_path / "ingest.log")
        started_ms = int(time.time() * 1000)
        agent = edge_agent(["run", "-c", str(agent_toml), "--record", str(record)],
                           tmp_path / "agent.log")
        try:
            deadline = time.monotonic() + MAX_RUN_S
            span: list[int] = []
            while len(span) < MIN_WINDOWS:
                assert time.monotonic() < deadline, (
                    f"only {len(span)} complete windows:\n{agent.text()[-3000:]}")
                assert agent.poll() is None, agent.text()[-3000:]
                await asyncio.sleep(1)
                rows = await _kpi_rows(influxdb)
                span = _longest_run([int(r["time"]) for r in rows
                                     if _comparable(r, started_ms)])
            agent.stop()
        finally:
            if agent.poll() is None:
                agent.kill()
            ingest.stop()
        entries = read_ledger(plant.ledger_paths()["opcua"])
        until = plant.model_time_ms

    rows = await _kpi_rows(influxdb)
    by_end = {int(r["time"]): r for r in rows if r["machine"] == MACHINE}
    # the flag survives the ingest, as a tag of the machine's, its line's and the site's points
    assert {r.get("state_source") for r in rows} == {"power"}, rows[:3]
    assert {r["machine"] for r in rows} == {MACHINE, "_line", "_site"}

    a, b = span[0] - WINDOW_S * 1000, span[-1]
    got = {name: sum(float(by_end[end][f"{name}_time_s"]) for end in span)
           for name in ("producing", "idle", "unplanned_down")}
    segments = _segments(entries, until)
    truth = {"producing": _time_in(segments, "producing", a, b),
             "idle": _time_in(segments, "idle", a, b),
             "unplanned_down": _time_in(segments, "off", a, b)}  # off is unplanned down
    assert truth["producing"] > 20 and truth["unplanned_down"] > 10, truth  # not vacuous
    for name, level in (("producing", "producing"), ("idle", "idle"),
                        ("unplanned_down", "off")):
        changes = _changes_of(segments, level, a - round(D_MAX * 1000), b)
        tolerance = 2 * D_MAX + changes * (POLL_S + SLACK_S)
        assert abs(got[name] - truth[name]) <= tolerance, (name, got, truth, tolerance)

    parts = sum(int(by_end[end]["parts_produced"]) for end in span)
    ledger_parts = [rfc3339_to_ms(e["ts"]) for e in entries
                    if e["kind"] == "part" and e["device"] == MACHINE]
    true_parts = sum(1 for t in ledger_parts if a <= t < b)
    rises = [(s, e) for s, e, lv in segments if lv == "producing" and a <= e < b]
    interrupted = sum(1 for _, e in rises if e not in ledger_parts)
    near_bound = sum(1 for s, e in rises if abs((e - s) / 1000 - MIN_S) <= POLL_S + SLACK_S)
    assert true_parts >= 5, true_parts
    assert abs(parts - true_parts) <= 2 + interrupted + near_bound, (
        parts, true_parts, interrupted, near_bound)
    assert all(int(by_end[end]["parts_scrap"]) == 0 for end in span)

    # live == offline: the recorded raw samples give the published records again
    offline = run_cli("kpi", "--input", str(record), "-c", str(agent_toml))
    assert offline.returncode == 0, offline.stderr
    recomputed = {rfc3339_to_ms(r["window_end"]): r for r in map(json.loads,
                  offline.stdout.splitlines()) if r["machine"] == MACHINE}
    for end in span:
        again, row = recomputed[end], by_end[end]
        assert again["state_source"] == "power"
        for name in ("producing_time_s", "idle_time_s", "unplanned_down_time_s",
                     "parts_produced"):
            assert again[name] == row[name], (end, name, again[name], row[name])

    # and the recorded log proposes thresholds that separate the simulator's levels
    proposed = run_cli("propose-thresholds", "--input", str(record), "--machine", MACHINE,
                       "-c", str(agent_toml))
    assert proposed.returncode == 0, proposed.stderr
    table = PowerStateSection.model_validate(
        tomllib.loads(proposed.stdout)["machines"]["power_state"])
    assert 0 < table.off_below_kw < LEVELS["idle"] * 0.97
    assert LEVELS["setup"] * 1.03 < table.producing_above_kw < LEVELS["producing"] * 0.97
