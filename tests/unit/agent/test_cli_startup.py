"""The command line starts without the device libraries: ``--help`` and ``kpi`` must not
import asyncua, pymodbus, paho, influxdb_client or numpy just to build the parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("asyncua", "pymodbus", "paho", "influxdb_client", "numpy")

_PROBE = """
import contextlib, io, json, sys
from agent import cli
argv = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli._parser().parse_args(argv)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps(heavy))
"""


def _imported(argv: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("argv", [
    [],
    ["--help"],
    ["kpi", "--help"],
    ["kpi", "--input", "samples.jsonl", "-c", "agent.toml"],
    ["report", "--help"],
    ["check-config", "-c", "agent.toml"],
])
def test_building_and_parsing_imports_no_device_library(argv: list[str]) -> None:
    assert _imported(argv) == []


def test_a_deferred_command_gets_its_options_when_chosen() -> None:
    from agent import cli

    args = cli._parser().parse_args(["sim", "modbus", "--modbus-port", "5502"])
    assert (args.command, args.kind, args.modbus_port) == ("sim", "modbus", 5502)
    args = cli._parser().parse_args(["modbus-read", "--host", "h", "--unit", "1",
                                     "--address", "0"])
    assert args.command == "modbus-read" and callable(args.handler)


def test_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from agent import cli

    with pytest.raises(SystemExit) as done:
        cli._parser().parse_args(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in out
