"""``python -m simulators [opcua|modbus|plant] [options]``: the same as ``edge-agent sim``.

A thin wrapper around :func:`simulators.cli.run_simulator` (the kind defaults to
``plant``). Exit codes: 0 after Ctrl-C or ``--duration``, 2 for a bad scenario or
usage, 1 when a server fails.
"""

from __future__ import annotations

import argparse
import sys

from rules.errors import ConfigError, EdgeAgentError
from simulators.cli import add_sim_arguments, run_from_args


def build_parser() -> argparse.ArgumentParser:
    """The command line of the standalone simulator."""
    parser = argparse.ArgumentParser(prog="python -m simulators",
                                     description="Simulated CNC machines and energy meters.")
    add_sim_arguments(parser, kind_optional=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return run_from_args(args)
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except EdgeAgentError as err:
        print(f"python -m simulators: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
