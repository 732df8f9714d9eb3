"""Run the simulated plant standalone: ``python -m simulators [--scenario FILE] ...``.

Prints where the servers listen and runs until interrupted. Exit codes follow the
agent's CLI: 0 after Ctrl-C, 2 for a bad scenario or usage, 1 when a server fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from rules.errors import ConfigError
from simulators.plant import Plant
from simulators.scenario import Scenario, default_scenario, load_scenario


def build_parser() -> argparse.ArgumentParser:
    """The command line of the standalone simulator."""
    parser = argparse.ArgumentParser(prog="python -m simulators",
                                     description="Simulated CNC machines and energy meters.")
    parser.add_argument("--scenario", type=Path, help="scenario TOML (default: packaged)")
    parser.add_argument("--fast", type=int, metavar="N",
                        help="instead of a file: N generated machines with seconds-long cycles")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--opcua-port", type=int, default=4840)
    parser.add_argument("--modbus-port", type=int, default=5020)
    parser.add_argument("--rtu-port", help="also serve the meters over Modbus RTU here")
    parser.add_argument("--ledger-dir", type=Path, help="write the ground-truth ledger here")
    parser.add_argument("--seed", type=int)
    return parser


async def _serve(scenario: Scenario, args: argparse.Namespace) -> None:
    async with Plant(scenario, host=args.host, opcua_port=args.opcua_port,
                     modbus_port=args.modbus_port, ledger_dir=args.ledger_dir,
                     seed=args.seed, rtu_port=args.rtu_port) as plant:
        print(f"OPC UA  {plant.opcua_endpoint}  namespace {plant.namespace_uri}", flush=True)
        units = ", ".join(f"{meter}=unit {unit}" for meter, unit in plant.meters)
        print(f"Modbus  tcp://{args.host}:{plant.modbus_port}  {units}", flush=True)
        for name, path in plant.ledger_paths().items():
            print(f"ledger  {name}: {path}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.fast:
            scenario = default_scenario(machines=args.fast, seed=args.seed or 1, fast=True)
        else:
            scenario = load_scenario(args.scenario)
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(scenario, args))
    except OSError as err:
        print(f"cannot start the simulators: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
