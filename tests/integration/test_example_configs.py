"""deploy/examples/simulators.toml really reads the bundled simulators: every configured
role of every machine and meter delivers good samples."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from pathlib import Path

import pytest

from agent.config.model import AgentConfig
from agent.config.validate import check_agent
from agent.runtime import build_collectors
from rules.types import Sample
from simulators.plant import Plant
from simulators.scenario import load_scenario

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "simulators.toml"


async def test_simulators_example_reads_every_role(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    async with Plant(load_scenario(), ledger_dir=tmp_path) as plant:
        for src in raw["sources"]:
            if src["type"] == "opcua":
                src["url"] = plant.opcua_endpoint
            else:
                src["port"] = plant.modbus_port
        cfg = AgentConfig.model_validate(raw)
        assert check_agent(cfg) == []
        queue: asyncio.Queue[Sample] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c.run(queue)) for c in build_collectors(cfg)]
            await asyncio.sleep(4)
            for task in tasks:
                task.cancel()
    seen: dict[tuple[str, str], Sample] = {}
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            s = queue.get_nowait()
            if s.quality == "good":
                seen[(s.device, s.signal)] = s
    for m in cfg.machines:
        for role in ("state", "parts_total", "parts_bad"):
            assert (m.id, role) in seen, (m.id, role)
        assert seen[(m.id, "state")].value in {"off", "idle", "producing", "setup",
                                               "unplanned_down", "planned_down"}
    for mt in cfg.meters:
        energy = seen[(mt.id, "energy_kwh")].value
        power = seen[(mt.id, "power_kw")].value
        assert isinstance(energy, float) and energy >= 0
        assert isinstance(power, float) and 0 <= power <= 100
