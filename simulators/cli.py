"""``edge-agent sim``: run the bundled simulators standalone and print what they serve.

The meters' power follows the machines' states, so a plant is one model and both servers
always run; ``opcua`` and ``modbus`` print only that server's map, ``plant`` both. Bound
to loopback unless ``--host`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TextIO

from simulators.opcua_server import NAMESPACE_URI, VARIABLES
from simulators.plant import Plant
from simulators.registers import __doc__ as REGISTER_DOC
from simulators.scenario import Scenario, load_scenario

STATE_CODES = "0=off 1=idle 2=producing 3=setup 4=unplanned_down 5=planned_down"


def print_node_map(plant: Plant, out: TextIO) -> None:
    """The OPC UA endpoint and every variable's browse path, as an agent config needs it."""
    print(f"OPC UA endpoint: {plant.opcua_endpoint}", file=out)
    print(f"  namespace URI: {NAMESPACE_URI} (alias it, e.g. cnc = \"{NAMESPACE_URI}\")",
          file=out)
    print(f"  MachineState codes: {STATE_CODES}", file=out)
    for machine in plant.machines:
        for var in VARIABLES:
            path = "/".join(["Objects", "cnc:Machines", f"cnc:{machine}",
                             *(f"cnc:{p}" for p in var.path)])
            print(f"  {path}  ({var.vtype.name})", file=out)


def print_register_map(plant: Plant, out: TextIO) -> None:
    """The Modbus endpoint, each meter's unit id and layout, and the layouts' registers."""
    print(f"Modbus TCP: {plant.host}:{plant.modbus_port}", file=out)
    layouts = {m.id: m.layout for m in plant.scenario.effective_meters}
    for (meter, unit), machine in zip(plant.meters, plant.machines, strict=False):
        print(f"  unit {unit}: {meter} ({layouts.get(meter, 'sdm630')}), follows {machine}",
              file=out)
    doc = (REGISTER_DOC or "").split("\n\n", 1)[-1]
    print("  " + doc.replace("\n", "\n  ").rstrip(), file=out)


async def _serve(kind: str, scenario: Scenario, host: str, opcua_port: int, modbus_port: int,
                 ledger_dir: Path | None, duration_s: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with Plant(scenario, host=host, opcua_port=opcua_port, modbus_port=modbus_port,
                     ledger_dir=ledger_dir) as plant:
        if kind in ("opcua", "plant"):
            print_node_map(plant, sys.stdout)
        if kind in ("modbus", "plant"):
            print_register_map(plant, sys.stdout)
        if ledger_dir is not None:
            print(f"Ledger: {ledger_dir}")
        print("Running; Ctrl-C stops.", flush=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration_s):
                await stop.wait()


def run_simulator(*, kind: str, scenario: Path | None, host: str, opcua_port: int,
                  modbus_port: int, ledger_dir: Path | None, duration_s: float | None) -> int:
    """Load the scenario (a bad one raises ConfigError naming the key) and serve it."""
    loaded = load_scenario(scenario)
    asyncio.run(_serve(kind, loaded, host, opcua_port, modbus_port, ledger_dir, duration_s))
    return 0
