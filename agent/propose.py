"""``edge-agent propose-thresholds``: power thresholds for a machine, from a sample log.

It reads the log ``edge-agent run --record`` writes, takes the good ``power_kw``
readings of the machine's power device, and prints a ``[machines.power_state]`` table
to paste under the machine's ``[[machines]]`` entry (method: :mod:`rules.power_thresholds`).
The device is ``--device``, else the one the config (``-c``) reads the machine's power
from, else the machine itself; a log without its readings is an error naming the
devices that have some.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from rules.errors import InputError

DESCRIPTION = """\
Propose [machines.power_state] thresholds for a machine read by its power alone, from a
sample log (edge-agent run --record FILE): the power levels off, idle and producing are
found by a time-weighted 1-D k-means split, the thresholds lie in the gaps between them.
Prints a TOML snippet to paste under the machine's [[machines]] entry; check it against
what you know of the machine. Exit codes: 0 printed, 2 bad arguments, log or config."""


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    """The command's options."""
    cmd.add_argument("--input", type=Path, required=True,
                     help="sample log (JSON Lines) as `edge-agent run --record` writes it, "
                          "- = stdin (as for `edge-agent kpi`)")
    cmd.add_argument("--machine", required=True, help="the machine to propose thresholds for")
    cmd.add_argument("--device", help="whose power_kw to read (default: from -c, else the "
                                      "machine itself)")
    cmd.add_argument("-c", "--config", type=Path,
                     help="agent.toml: read the power of the meter it attaches to the machine")


def _device(args: argparse.Namespace) -> str:
    if args.device:
        return str(args.device)
    if args.config is None:
        return str(args.machine)
    from agent.config import load_agent_config
    from agent.config.derived import power_device

    cfg = load_agent_config(args.config, kpi_only=True)
    machine = next((m for m in cfg.machines if m.id == args.machine), None)
    if machine is None:
        raise InputError(f"--machine: {args.machine!r} is not a machine of {args.config}")
    if machine.power_state is not None:
        found, why = power_device(cfg, machine)
        if found is None:
            raise InputError(f"--machine {machine.id}: {why}")
        return found
    if machine.signals.power_kw is not None:
        return machine.id
    meters = [mt.id for mt in cfg.meters if mt.machine == machine.id
              and (mt.signals.power_kw is not None or mt.preset is not None)]
    if len(meters) != 1:
        raise InputError(f"--machine {machine.id}: {len(meters)} meters with power measure it "
                         "in the config; name the one to read with --device")
    return meters[0]


def propose(lines: TextIO, name: str, machine: str, device: str) -> str:
    """The TOML snippet for ``machine`` from the ``power_kw`` readings of ``device``."""
    from agent.samplelog import read_samples
    from rules.power_thresholds import propose_thresholds, to_toml

    times: list[int] = []
    values: list[float] = []
    others: set[str] = set()
    for sample in read_samples(lines, name):
        if sample.signal != "power_kw" or sample.quality == "bad":
            continue
        if sample.device != device:
            others.add(sample.device)
            continue
        value = sample.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            times.append(sample.ts_ms)
            values.append(float(value))
    if not values:
        have = ", ".join(sorted(others)) if others else "none"
        raise InputError(f"{name}: no good power_kw readings of {device!r} (devices with "
                         f"power_kw: {have}; choose one with --device)")
    try:
        proposal = propose_thresholds(times, values)
    except ValueError as err:
        raise InputError(f"{name}: {device}: {err}") from None
    return to_toml(proposal, machine=machine, device=device, source=name)


def run(args: argparse.Namespace) -> int:
    """The command: print the snippet; 0, or InputError/ConfigError (exit 2)."""
    device = _device(args)
    if str(args.input) == "-":
        sys.stdout.write(propose(sys.stdin, "<stdin>", args.machine, device))
        return 0
    try:
        with args.input.open(encoding="utf-8") as fh:
            text = propose(fh, str(args.input), args.machine, device)
    except FileNotFoundError:
        raise InputError(f"{args.input}: file not found") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{args.input}: not UTF-8 text ({err.reason})") from None
    sys.stdout.write(text)
    return 0
