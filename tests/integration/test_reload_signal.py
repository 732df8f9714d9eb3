"""SIGHUP reloads `edge-agent run`'s config: a valid change applies without a restart, an
invalid file is rejected with its errors and the running config stays in force."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from agent.demo import simulator_config
from agent.services import ManagedMosquitto
from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration


async def _wait_for(log: Path, text: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        await asyncio.sleep(0.3)
    raise AssertionError(f"{text!r} not logged within {timeout_s} s:\n{log.read_text()}")


async def test_sighup_applies_a_valid_config_and_rejects_an_invalid_one(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    async with Plant(default_scenario(machines=2, seed=3, fast=True)) as plant:
        raw = simulator_config(plant, mqtt_port=mosquitto.port, window="5s",
                               state_dir=tmp_path / "state")
        cfg = tmp_path / "agent.toml"
        cfg.write_text(tomli_w.dumps(raw))
        log = tmp_path / "agent.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg)],
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            # logged from inside the agent's task group: the SIGHUP handler is in place
            await _wait_for(log, "connected to MQTT broker")
            raw["machines"][0]["ideal_cycle_time_s"] = 1.5
            cfg.write_text(tomli_w.dumps(raw))
            proc.send_signal(signal.SIGHUP)
            text = await _wait_for(log, f"reload of {cfg}:")
            assert "cnc-01" in text.split(f"reload of {cfg}:")[-1]

            cfg.write_text("[site\nid = 1\n")
            proc.send_signal(signal.SIGHUP)
            text = await _wait_for(log, "the running config stays in force")
            assert "not valid TOML" in text
            await asyncio.sleep(1)
            assert proc.poll() is None, "the agent must keep running after a bad reload"
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        assert code == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
