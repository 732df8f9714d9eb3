"""The command line starts without the device libraries: ``--help`` and ``kpi`` must not
import asyncua, pymodbus, paho, influxdb_client or numpy just to build the parser, and
``kpi``, which only reads files, must not import them to load a config and recompute
its records either (seconds of start-up per call of an audit script)."""

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


_RUN = """
import contextlib, io, json, sys
from agent import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = cli.main(json.loads(sys.argv[1]))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"code": code, "records": len(out.getvalue().splitlines()), "heavy": heavy}))
"""

CASE = ROOT / "tests" / "cases" / "kpi" / "counter_reset"


@pytest.mark.parametrize("config", [
    CASE / "agent.toml",
    ROOT / "agent" / "examples" / "opcua-secure.toml",  # secure OPC UA sources
    ROOT / "agent" / "examples" / "modbus-rtu.toml",  # Modbus sources, meter presets
], ids=lambda path: path.parent.name if path.name == "agent.toml" else path.stem)
def test_running_kpi_imports_no_device_library(config: Path) -> None:
    argv = ["kpi", "--input", str(CASE / "samples.jsonl"), "-c", str(config)]
    done = subprocess.run([sys.executable, "-c", _RUN, json.dumps(argv), json.dumps(HEAVY)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    assert result["records"] > 0
    assert result["heavy"] == []


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
