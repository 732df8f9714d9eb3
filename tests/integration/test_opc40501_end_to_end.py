"""A plant whose machines publish only the umati model (``profile = "opc40501"`` in the
scenario) read by ``edge-agent run`` with ``profile = "opc40501"`` and no signals at all:
every window's state durations and part counts, as published over MQTT, equal the
simulator's ledger exactly.

The scenario has no planned breaks: a controller knows nothing of the plant's calendar,
so a break is the calendar's to say (docs/commissioning.md, "umati machine tools").
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo import simulator_config
from agent.services import ManagedMosquitto
from rules.types import rfc3339_to_ms
from simulators.ledger import parts_in, read_ledger
from simulators.plant import Plant
from simulators.scenario import CalendarSpec, Scenario, default_scenario

pytestmark = pytest.mark.integration

WINDOW_S = 5
MIN_WINDOWS = 4
MAX_RUN_S = 150
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
STATES = ("producing", "setup", "idle", "unplanned_down")


def umati_scenario() -> Scenario:
    """The fast default plant, every machine served as a MachineTool, no breaks."""
    base = default_scenario(machines=2, seed=11, fast=True)
    return base.model_copy(update={
        "calendar": CalendarSpec(),
        "machines": [m.model_copy(update={"profile": "opc40501"}) for m in base.machines]})


class Records:
    """Every machine KPI record the broker delivers, by machine and window end."""

    def __init__(self, broker: ManagedMosquitto) -> None:
        self._lock = threading.Lock()
        self.by_machine: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="umati-monitor")
        self.client.on_connect = lambda c, *_: c.subscribe("factory/+/+/+/kpi", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(30):
            raise AssertionError("the monitor could not subscribe to the broker")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        record = json.loads(msg.payload)
        if record.get("machine"):
            with self._lock:
                self.by_machine[record["machine"]][rfc3339_to_ms(record["window_end"])] = record

    def snapshot(self) -> dict[str, dict[int, dict[str, Any]]]:
        with self._lock:
            return {m: dict(rows) for m, rows in self.by_machine.items()}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def state_seconds(entries: list[dict[str, Any]], machine: str, start_ms: int, end_ms: int
                  ) -> dict[str, float]:
    """Seconds ``machine`` spent in each state in ``[start_ms, end_ms)`` by the ledger."""
    changes = sorted((rfc3339_to_ms(e["ts"]), i, e["state"]) for i, e in enumerate(entries)
                     if e["device"] == machine and e["kind"] in ("init", "state"))
    out: dict[str, float] = defaultdict(float)
    for k, (ts, _, state) in enumerate(changes):
        until = changes[k + 1][0] if k + 1 < len(changes) else end_ms
        overlap = min(until, end_ms) - max(ts, start_ms)
        if overlap > 0:
            out[state] += overlap / 1000
    return out


def comparable(record: dict[str, Any], started_ms: int) -> bool:
    return (rfc3339_to_ms(record["window_start"]) >= started_ms + 3000
            and "incomplete" not in (record.get("flags") or []))


def agent_config(plant: Plant, broker: ManagedMosquitto, state_dir: Path) -> dict[str, Any]:
    """The demo's config with the machines' signals replaced by the profile."""
    raw = simulator_config(plant, mqtt_port=broker.port, window=f"{WINDOW_S}s",
                           state_dir=state_dir, lateness_s=3.0)
    raw["sources"][0]["namespaces"]["ma"] = MACHINERY
    for machine in raw["machines"]:
        del machine["signals"]
        machine.update(profile="opc40501", source="cnc-opcua",
                       machine_tool=f"Objects/ma:Machines/cnc:{machine['id']}")
    return raw


async def test_profile_machines_match_the_ledger(
    mosquitto: ManagedMosquitto, tmp_path: Path, edge_agent: Any,
) -> None:
    records = Records(mosquitto)
    async with Plant(umati_scenario(), ledger_dir=tmp_path / "ledger") as plant:
        agent_toml = tmp_path / "agent.toml"
        agent_toml.write_text(tomli_w.dumps(agent_config(plant, mosquitto, tmp_path / "st")))
        agent_log = tmp_path / "agent.log"
        started_ms = int(time.time() * 1000)
        agent = edge_agent(["run", "-c", str(agent_toml)], agent_log)
        try:
            deadline = time.monotonic() + MAX_RUN_S
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                seen = records.snapshot()
                if all(sum(comparable(r, started_ms) for r in seen.get(m, {}).values())
                       >= MIN_WINDOWS for m in plant.machines):
                    break
                assert agent.poll() is None, agent_log.read_text()
        finally:
            agent.stop()
            records.close()
        entries = [e for e in read_ledger(plant.ledger_paths()["opcua"])]

    seen = records.snapshot()
    compared = 0
    moved = {s: 0.0 for s in STATES}
    for machine in plant.machines:
        assert seen.get(machine), f"no records for {machine}: {agent_log.read_text()}"
        for end_ms, row in sorted(seen[machine].items()):
            if not comparable(row, started_ms):
                continue
            start_ms = end_ms - WINDOW_S * 1000
            produced, scrap = parts_in(entries, machine, start_ms, end_ms)
            assert (row["parts_produced"], row["parts_scrap"], row["parts_good"]) == (
                produced, scrap, produced - scrap), (machine, row)
            truth = state_seconds(entries, machine, start_ms, end_ms)
            for state in STATES:
                assert row[f"{state}_time_s"] == pytest.approx(truth.get(state, 0.0),
                                                               abs=0.0015), (machine, state, row)
                moved[state] += truth.get(state, 0.0)
            compared += 1
    assert compared >= MIN_WINDOWS * len(plant.machines)
    assert moved["producing"] > 0 and moved["setup"] + moved["idle"] > 0, moved
    assert "unavailable" not in agent_log.read_text()
