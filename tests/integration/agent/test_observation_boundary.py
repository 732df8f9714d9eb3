"""A first start with an empty state directory, end to end: the simulated plant has been
running for minutes, so its OPC UA values carry source timestamps from before the agent
started. ``edge-agent run`` must publish no record for a window before its start, and
the first records (machines, line, site) are for the window in progress at the start,
flagged ``incomplete`` with ``observed_s`` short of the window's length."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo import DEMO_LINE, simulator_config
from agent.services import ManagedMosquitto
from rules.types import rfc3339_to_ms
from simulators.plant import Plant, SimClock
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

WINDOW_S = 5
WINDOW_MS = WINDOW_S * 1000
RAN_BEFORE_MS = 10 * 60_000  # how long the plant ran before the agent's first start


class Records:
    """Every KPI payload the broker delivers, by series (the topic's line and machine)."""

    def __init__(self, broker: ManagedMosquitto) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="boundary-monitor")
        self.client.on_connect = lambda c, *_: c.subscribe("factory/+/+/+/kpi", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(30):
            raise AssertionError("the monitor could not subscribe to the broker")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        level = msg.topic.split("/")
        with self._lock:
            self._series[f"{level[2]}/{level[3]}"].append(json.loads(msg.payload))

    def series(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {k: list(v) for k, v in self._series.items()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def eventually(check: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def plant_running_for_minutes(tmp_path: Path
                                   ) -> AsyncIterator[tuple[Plant, asyncio.Lock]]:
    """A plant whose models started RAN_BEFORE_MS ago (a manual clock, caught up at
    once) and then follow the wall clock, so every value it serves was set before now.
    Holding the lock it yields freezes the plant (no model advances meanwhile)."""
    clock = SimClock(manual=True, start_ms=int(time.time() * 1000) - RAN_BEFORE_MS)
    plant = Plant(default_scenario(machines=2, seed=21, fast=True), clock=clock,
                  ledger_dir=tmp_path / "ledger")
    await plant.start()
    frozen = asyncio.Lock()

    async def follow_the_wall_clock() -> None:
        while True:
            async with frozen:
                await plant.run_until(int(time.time() * 1000))
            await asyncio.sleep(0.2)

    await plant.run_until(int(time.time() * 1000))
    task = asyncio.create_task(follow_the_wall_clock())
    try:
        yield plant, frozen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await plant.stop()


def _states_recorded(record: Path) -> set[str]:
    if not record.exists():
        return set()
    devices = set()
    for line in record.read_text().splitlines():
        with contextlib.suppress(ValueError):
            sample = json.loads(line)
            if sample.get("signal") == "state":
                devices.add(sample["device"])
    return devices


async def test_first_start_publishes_nothing_before_it(
    tmp_path: Path, mosquitto: ManagedMosquitto, edge_agent: Any
) -> None:
    records = Records(mosquitto)
    state_dir = tmp_path / "state"
    assert not state_dir.exists()
    record, log = tmp_path / "samples.jsonl", tmp_path / "agent.log"
    try:
        async with plant_running_for_minutes(tmp_path) as (plant, frozen):
            raw = simulator_config(plant, mqtt_port=mosquitto.port, window=f"{WINDOW_S}s",
                                   state_dir=state_dir, lateness_s=2.0)
            config = tmp_path / "agent.toml"
            config.write_text(tomli_w.dumps(raw))
            expected = {f"{DEMO_LINE}/{m}" for m in plant.machines}
            expected |= {f"{DEMO_LINE}/_line", "_site/_site"}
            # The premise, made certain: the plant stands still from before the window in
            # which the agent starts until the agent has read every machine's state, so
            # those states are dated before that window (a fast scenario changes state
            # every few seconds, and a loaded machine starts the agent slowly).
            async with frozen:
                now_ms = int(time.time() * 1000)
                await asyncio.sleep((WINDOW_MS - now_ms % WINDOW_MS) / 1000 + 0.05)
                launched_ms = int(time.time() * 1000)
                agent = edge_agent(["run", "-c", str(config), "--record", str(record)], log)
                try:
                    await eventually(lambda: _states_recorded(record) >= set(plant.machines),
                                     timeout_s=60, what="every machine's state in the log")
                except BaseException:
                    agent.stop()
                    raise
            try:
                # Three windows per series: the one in progress at the start and two whole.
                await eventually(
                    lambda: (set(records.series()) == expected
                             and all(len(v) >= 3 for v in records.series().values())),
                    timeout_s=90, what="three windows of records in every series")
            finally:
                agent.stop()
    finally:
        records.close()

    lines = record.read_text().splitlines()
    marker = json.loads(lines[0])
    assert (marker["device"], marker["signal"], marker["value"]) == ("_agent", "observing",
                                                                     "start"), lines[0]
    start_ms = rfc3339_to_ms(marker["ts"])
    assert launched_ms <= start_ms, (launched_ms, start_ms)
    assert "observing from" in log.read_text()
    # The premise: the OPC UA values the agent found were set before its start, some of
    # them (a machine state) before the window in progress then.
    samples = [json.loads(line) for line in lines[1:]]
    first_window_start = start_ms - start_ms % WINDOW_MS
    expected_observed = (first_window_start + WINDOW_MS - start_ms) / 1000
    assert any(rfc3339_to_ms(s["ts"]) < first_window_start for s in samples
               if s["signal"] == "state"), "no state was dated before the start's window"

    for name, got in records.series().items():
        got.sort(key=lambda r: r["window_end"])
        first, second = got[0], got[1]
        ends = [rfc3339_to_ms(r["window_end"]) for r in got]
        assert min(ends) > start_ms, (name, "a record for a window before the start")
        assert rfc3339_to_ms(first["window_start"]) == first_window_start, (name, first)
        assert "incomplete" in first["flags"], (name, first)
        assert 0 <= first["observed_s"] < WINDOW_S, (name, first)
        assert first["observed_s"] == pytest.approx(expected_observed, abs=1e-9), (name, first)
        assert second["observed_s"] == WINDOW_S, (name, second)
        if name.split("/")[1] in plant.machines:
            # The state the agent found counts from its start, not from its timestamp.
            assert first["planned_busy_time_s"] <= first["observed_s"], (name, first)

    # The recorded log replayed offline starts at the same boundary (the marker).
    out = subprocess.run([sys.executable, "-m", "agent.cli", "kpi", "--input", str(record),
                          "-c", str(config)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    offline = [json.loads(line) for line in out.stdout.splitlines()]
    assert min(rfc3339_to_ms(r["window_end"]) for r in offline) > start_ms
    for r in offline:
        if rfc3339_to_ms(r["window_start"]) == first_window_start:
            assert r["observed_s"] == pytest.approx(expected_observed, abs=1e-9), r
