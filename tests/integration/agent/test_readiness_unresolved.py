"""A signal whose browse path the server lacks keeps a running agent unready: the real
runtime against the bundled simulators and a real Mosquitto answers ``/readyz`` with 503
naming the signal by its config place, and ``/metrics`` counts it per source, while the
broker, the collectors and the other signals are fine. Fixing the path in the file and
reloading makes it ready."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from agent.config.model import AgentConfig
from agent.demo import simulator_config
from agent.runtime import Agent
from agent.services import ManagedMosquitto, free_port
from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

PLACE = 'machines[1] "cnc-02": signals.parts_total'


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""  # not listening yet


async def _eventually(check: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    """``check()``'s first truthy answer, asked off the loop the agent runs on."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


def _signals(port: int) -> dict[str, float]:
    status, body = _get(port, "/metrics")
    if status != 200:
        return {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "edge_agent_source_signals":
            return {s.labels["status"]: s.value for s in family.samples
                    if s.labels["source"] == "cnc-opcua"}
    return {}


async def test_an_unresolved_node_makes_readyz_503_and_is_counted(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    async with Plant(default_scenario(machines=2, seed=3), ledger_dir=tmp_path / "ledger"
                     ) as plant:
        port = free_port()
        raw = simulator_config(plant, mqtt_port=mosquitto.port, state_dir=tmp_path / "state",
                               health_port=port)
        good_path = raw["machines"][1]["signals"]["parts_total"]["browse_path"]
        raw["machines"][1]["signals"]["parts_total"]["browse_path"] = good_path.replace(
            "PartsProducedInLifetime", "PartsMade")
        agent = Agent(AgentConfig.model_validate(raw))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            def unready_for_the_signal() -> dict[str, Any] | None:
                status, body = _get(port, "/readyz")
                doc = json.loads(body) if body else {}
                checks = doc.get("checks", {})
                if (status == 503 and checks.get("broker", {}).get("ok")
                        and not checks.get("signals", {}).get("ok", True)):
                    return doc
                return None

            doc = await _eventually(unready_for_the_signal, "503 for the unresolved signal")
            assert doc["status"] == "not ready"
            (reason,) = doc["reasons"]
            assert reason.startswith(f"signals: 1 unresolved: {PLACE} (browse path not found")
            assert doc["checks"]["sources"]["ok"] and doc["checks"]["collectors"]["ok"]
            counts = await _eventually(lambda: (c := _signals(port)) and c["ok"] == 5 and c,
                                       "the other signals to read")
            assert counts == {"ok": 5, "pending": 0, "failing": 0, "unresolved": 1}

            raw["machines"][1]["signals"]["parts_total"]["browse_path"] = good_path
            fixed = tmp_path / "agent.toml"
            fixed.write_text(tomli_w.dumps(raw))
            outcome = await agent.reload(fixed)
            assert outcome.applicable, outcome.message
            def settled() -> dict[str, Any] | None:
                status, body = _get(port, "/readyz")
                doc = json.loads(body) if body else {}
                detail = doc.get("checks", {}).get("signals", {}).get("detail", "")
                return doc if status == 200 and "pending" not in detail else None

            doc = await _eventually(settled, "ready after the fix")
            # 6 OPC UA signals and the two meters' presets (11 registers each)
            assert doc["checks"]["signals"] == {"ok": True, "detail": "28 ok"}
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await task
