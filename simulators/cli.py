"""Run the bundled simulators standalone and print what they serve.

One implementation behind both ``edge-agent sim opcua|modbus|plant`` and
``python -m simulators``: :func:`run_simulator`. The meters' power follows the
machines' states, so a plant is one model and both servers always run; ``opcua`` and
``modbus`` print only that server's map, ``plant`` both. Bound to loopback unless
``host`` says otherwise.

Exit codes follow the agent's CLI: 0 after Ctrl-C or ``duration_s``; a bad scenario or
option raises :class:`~rules.errors.ConfigError` naming the key (exit 2); a server
that cannot start raises :class:`~rules.errors.ServiceError` (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rules.errors import ConfigError, ServiceError
from rules.types import ms_to_rfc3339, rfc3339_to_ms

if TYPE_CHECKING:
    from simulators.plant import Plant, SimClock
    from simulators.scenario import Scenario

# The servers (asyncua, pymodbus) are imported where they run, not here: building a
# command-line parser must not pay for them.

__all__ = [
    "KINDS",
    "add_sim_arguments",
    "print_node_map",
    "print_register_map",
    "run_from_args",
    "run_simulator",
]

KINDS = ("opcua", "modbus", "plant")


def print_node_map(plant: Plant, out: TextIO) -> None:
    """The OPC UA endpoint and every variable's browse path, as an agent config needs it."""
    from simulators.machine import STATE_CODES
    from simulators.nodes import NAMESPACE_URI, VARIABLES

    state_codes = " ".join(f"{code}={name}" for name, code in STATE_CODES.items())
    print(f"OPC UA endpoint: {plant.opcua_endpoint}", file=out)
    print(f"  namespace URI: {NAMESPACE_URI} (alias it, e.g. cnc = \"{NAMESPACE_URI}\")",
          file=out)
    print(f"  MachineState codes: {state_codes}", file=out)
    for machine in plant.machines:
        for var in VARIABLES:
            path = "/".join(["Objects", "cnc:Machines", f"cnc:{machine}",
                             *(f"cnc:{p}" for p in var.path)])
            print(f"  {path}  ({var.type_name})", file=out)


def print_register_map(plant: Plant, out: TextIO) -> None:
    """The Modbus endpoint, each meter's unit id and layout, and the layouts' registers."""
    from simulators.registers import __doc__ as register_doc

    print(f"Modbus TCP: {plant.host}:{plant.modbus_port}", file=out)
    if plant.rtu_port is not None:
        print(f"Modbus RTU: {plant.rtu_port} ({plant.rtu_baudrate} baud, 8N1)", file=out)
    specs = {m.id: m for m in plant.scenario.effective_meters}
    for meter, unit in plant.meters:
        spec = specs[meter]
        print(f"  unit {unit}: {meter} ({spec.layout}, {spec.resolution_kwh} kWh steps, "
              f"rolls over at {spec.effective_modulus_kwh} kWh), follows {spec.machine}",
              file=out)
    doc = register_doc or ""
    doc = doc[doc.find("``sdm630``"):]
    print("  Addresses are 0-based protocol addresses (mbpoll: -0).", file=out)
    print("  " + doc.replace("\n", "\n  ").rstrip(), file=out)


def _clock(time_scale: float, start: str | None) -> SimClock:
    from simulators.plant import SimClock

    errors: list[tuple[str, str]] = []
    start_ms: int | None = None
    if start is not None:
        try:
            start_ms = rfc3339_to_ms(start)
        except ValueError as err:
            errors.append(("--start", f"not an RFC 3339 timestamp with offset: {err}"))
    if not time_scale >= 0 or time_scale == float("inf"):
        errors.append(("--time-scale", "must be a finite number >= 0"))
    if errors:
        raise ConfigError(errors)
    return SimClock(time_scale=time_scale, start_ms=start_ms)


async def _serve(kind: str, scenario: Scenario, *, host: str, opcua_port: int,
                 modbus_port: int, ledger_dir: Path | None, duration_s: float | None,
                 rtu_port: str | None, rtu_baudrate: int, seed: int | None,
                 clock: SimClock) -> None:
    from simulators.plant import Plant

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    plant = Plant(scenario, host=host, opcua_port=opcua_port, modbus_port=modbus_port,
                  ledger_dir=ledger_dir, seed=seed, rtu_port=rtu_port,
                  rtu_baudrate=rtu_baudrate, clock=clock)
    try:
        await plant.start()
    except (OSError, RuntimeError) as err:  # pymodbus: RuntimeError when it cannot listen
        await plant.stop()
        raise ServiceError(f"cannot start the simulators: {err}") from err
    try:
        if kind in ("opcua", "plant"):
            print_node_map(plant, sys.stdout)
        if kind in ("modbus", "plant"):
            print_register_map(plant, sys.stdout)
        if not clock.realtime:
            print(f"Clock: {clock.time_scale:g}x from {ms_to_rfc3339(plant.start_ms)}")
        for name, path in plant.ledger_paths().items():
            print(f"Ledger ({name}): {path}")
        print("Running; Ctrl-C stops.", flush=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration_s):
                await stop.wait()
    finally:
        await plant.stop()
    if plant.error is not None:
        raise ServiceError(f"the simulated plant stopped: {plant.error}") from plant.error


def run_simulator(
    *,
    kind: str = "plant",
    scenario: Path | None = None,
    host: str = "127.0.0.1",
    opcua_port: int = 4840,
    modbus_port: int = 5020,
    ledger_dir: Path | None = None,
    duration_s: float | None = None,
    rtu_port: str | None = None,
    rtu_baudrate: int = 19200,
    fast: int | None = None,
    seed: int | None = None,
    time_scale: float = 1.0,
    start: str | None = None,
) -> int:
    """Load the scenario (a bad one raises ConfigError naming the key) and serve it.

    ``fast`` replaces the file with N generated machines with seconds-long cycles;
    ``seed`` overrides the scenario's; ``rtu_port`` also serves the meters over Modbus
    RTU on that serial device; ``time_scale`` runs the model that many times faster
    than real time (0 holds it still) from ``start`` (RFC 3339, default now).
    """
    from simulators.scenario import default_scenario, load_scenario

    if kind not in KINDS:
        raise ConfigError([("kind", f"{kind!r} is not one of {', '.join(KINDS)}")])
    if fast is not None and scenario is not None:
        raise ConfigError([("--fast", "use either --scenario or --fast, not both")])
    if fast is not None and fast < 1:
        raise ConfigError([("--fast", "must be at least 1 machine")])
    if fast is not None:
        loaded = default_scenario(machines=fast, seed=seed or 1, fast=True)
    else:
        loaded = load_scenario(scenario)
    clock = _clock(time_scale, start)
    asyncio.run(_serve(kind, loaded, host=host, opcua_port=opcua_port,
                       modbus_port=modbus_port, ledger_dir=ledger_dir, duration_s=duration_s,
                       rtu_port=rtu_port, rtu_baudrate=rtu_baudrate, seed=seed, clock=clock))
    return 0


def add_sim_arguments(parser: argparse.ArgumentParser, *, kind_optional: bool = False) -> None:
    """The simulator's command-line options, for any parser that runs :func:`run_simulator`."""
    if kind_optional:
        parser.add_argument("kind", nargs="?", choices=KINDS, default="plant")
    else:
        parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--scenario", type=Path, default=None,
                        help="scenario TOML (default: bundled)")
    parser.add_argument("--fast", type=int, metavar="N", default=None,
                        help="instead of a file: N generated machines with seconds-long cycles")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--opcua-port", type=int, default=4840)
    parser.add_argument("--modbus-port", type=int, default=5020)
    parser.add_argument("--rtu-port", default=None,
                        help="also serve the meters over Modbus RTU on this serial device")
    parser.add_argument("--rtu-baudrate", type=int, default=19200)
    parser.add_argument("--ledger-dir", type=Path, default=None,
                        help="write the ground-truth ledger here")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="model seconds per wall-clock second (0 holds the model still)")
    parser.add_argument("--start", default=None,
                        help="model start instant, RFC 3339 (default: now)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many wall-clock seconds")


def run_from_args(args: argparse.Namespace) -> int:
    """:func:`run_simulator` with the options :func:`add_sim_arguments` defined."""
    return run_simulator(kind=args.kind, scenario=args.scenario, host=args.host,
                         opcua_port=args.opcua_port, modbus_port=args.modbus_port,
                         ledger_dir=args.ledger_dir, duration_s=args.duration,
                         rtu_port=args.rtu_port, rtu_baudrate=args.rtu_baudrate,
                         fast=args.fast, seed=args.seed, time_scale=args.time_scale,
                         start=args.start)
