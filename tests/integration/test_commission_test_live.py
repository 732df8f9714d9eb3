"""``edge-agent test`` against the bundled simulators, run as a process the way an
engineer runs it while the simulators answer from this event loop: the shipped example
reads every signal (exit 0); a wrong browse path and a wrong Modbus address are each
named by their config place (exit 1) while every other signal still reads."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from agent.commission.probe import expected_signals
from agent.config.model import AgentConfig
from simulators.plant import Plant
from simulators.scenario import load_scenario

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "agent" / "examples" / "simulators.toml"
WRONG_PATH = 'machines[1] "cnc-02": signals.parts_total'
WRONG_REGISTER = 'meters[2] "meter-03": signals.energy_kwh'


async def _edge_agent(*args: str) -> tuple[int, str, str]:
    """Run the command without blocking the loop the simulators answer from."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _config(plant: Plant, tmp_path: Path, *, broken: bool) -> Path:
    text = EXAMPLE.read_text()
    text = text.replace("opc.tcp://127.0.0.1:4840", plant.opcua_endpoint)
    text = text.replace("port = 5020", f"port = {plant.modbus_port}")
    text = text.replace("/tmp/edge-agent-sim", str(tmp_path / "state"))
    if broken:
        good_path = "cnc:cnc-02/cnc:Production/cnc:PartsProducedInLifetime"
        assert good_path in text
        text = text.replace(good_path, "cnc:cnc-02/cnc:Production/cnc:PartsMade")
        register = "address = 0x0000\n"  # meter-03's energy register, the first one
        assert text.count(register) == 1
        text = text.replace(register, "address = 0x0900\n")
    path = tmp_path / ("broken.toml" if broken else "agent.toml")
    path.write_text(text)
    return path


async def test_the_simulators_example_reads_every_signal(tmp_path: Path) -> None:
    async with Plant(load_scenario(), ledger_dir=tmp_path / "ledger") as plant:
        path = _config(plant, tmp_path, broken=False)
        code, out, err = await _edge_agent("test", "-c", str(path))
        json_code, doc_text, _ = await _edge_agent("test", "-c", str(path), "--json")
    assert code == 0, out + err
    places = [s.place for s in expected_signals(
        AgentConfig.model_validate(tomllib.loads(path.read_text())))]
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines[:lines.index("")])  # the table
    for place in places:
        item, _, key = place.partition(": ")
        role = key.removeprefix("signals.").removeprefix("preset (").rstrip(")")
        heading = lines.index(item + (": signals" if key.startswith("signals.")
                                      else ': preset "sdm630"'))
        assert any(line.split()[:1] == [role] and " good " in line
                   for line in lines[heading:]), place
    assert lines[-1] == f"all {len(places)} signals read with good quality"
    assert json_code == 0
    doc = json.loads(doc_text)
    assert doc["ok"] is True and [s["place"] for s in doc["signals"]] == places
    states = {s["place"]: s for s in doc["signals"]}
    state = states['machines[0] "cnc-01": signals.state']
    assert isinstance(state["raw"], int) and state["value"] in {
        "off", "idle", "producing", "setup", "unplanned_down", "planned_down"}
    energy = states['meters[2] "meter-03": signals.energy_kwh']
    assert energy["ts_source"] == "receive"
    assert energy["value"] == pytest.approx(energy["raw"] * 0.01)


async def test_a_wrong_browse_path_and_a_wrong_register_are_named(tmp_path: Path) -> None:
    async with Plant(load_scenario(), ledger_dir=tmp_path / "ledger") as plant:
        path = _config(plant, tmp_path, broken=True)
        code, out, err = await _edge_agent("test", "-c", str(path))
        _, doc_text, _ = await _edge_agent("test", "-c", str(path), "--json")
    assert code == 1, out + err
    summary = [line.strip() for line in
               out.split("signals not read with good quality:", 1)[1].strip().splitlines()]
    assert len(summary) == 2
    assert summary[0].startswith(f"{WRONG_PATH}: unresolved: browse path not found")
    assert summary[1].startswith(f"{WRONG_REGISTER}: unresolved: holding 2304+2 unit 3: "
                                 "exception response 2 (illegal data address)")
    doc = json.loads(doc_text)
    assert doc["ok"] is False and sorted(doc["not_good"]) == sorted([WRONG_PATH,
                                                                     WRONG_REGISTER])
    # the meter's other register is still read, the machine's other signals too
    good = {s["place"] for s in doc["signals"] if s["ok"]}
    assert 'meters[2] "meter-03": signals.power_kw' in good
    assert 'machines[1] "cnc-02": signals.state' in good
