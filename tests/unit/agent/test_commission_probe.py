"""``edge-agent test`` without devices: what is expected of a config, the table, the
summary, the JSON document and the exit codes (the live reads are in
tests/integration/test_commission_test_live.py)."""

from __future__ import annotations

import argparse
import io
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.commission import probe
from agent.commission.probe import (
    Expected,
    Result,
    expected_signals,
    format_results,
    results_json,
    shorten,
    summary,
)
from agent.config.model import AgentConfig
from rules.types import Sample

REPO = Path(__file__).resolve().parents[3]
NOW_MS = 1_741_939_200_000  # 2025-03-14T08:00:00Z
PATH = "Objects/cnc:Machines/cnc:cnc-01/cnc:Monitoring/cnc:MachineTool/cnc:MachineState"


def _state(**kw: Any) -> Expected:
    return Expected(**{"item": 'machines[0] "cnc-01"', "table": "signals", "role": "state",
                       "device": "cnc-01", "source": "cnc-opcua", "address": PATH, **kw})


ENERGY = Expected('meters[0] "meter-01"', 'preset "sdm630"', "energy_kwh", "meter-01",
                  "meters", "1 input 72 f32")


def _results() -> list[Result]:
    return [
        Result(_state(), "ok", None, Sample(NOW_MS - 500, "cnc-01", "state", "producing"), 2),
        Result(_state(role="parts_total", address=PATH.replace("MachineState", "Parts")),
               "unresolved", "browse path not found (BadNoMatch)"),
        Result(ENERGY, "ok", None,
               Sample(NOW_MS, "meter-01", "energy_kwh", 4821.41, "good", "receive"), 4821.41),
    ]


def test_the_simulators_example_expects_every_signal_and_preset_register() -> None:
    raw = tomllib.loads((REPO / "agent/examples/simulators.toml").read_text())
    signals = expected_signals(AgentConfig.model_validate(raw))
    places = [s.place for s in signals]
    assert places[:3] == ['machines[0] "cnc-01": signals.state',
                          'machines[0] "cnc-01": signals.parts_total',
                          'machines[0] "cnc-01": signals.parts_bad']
    assert 'meters[0] "meter-01": preset (energy_kwh)' in places
    assert 'meters[2] "meter-03": signals.energy_kwh' in places
    # machines first, then meters, each in file order
    items = [s.item for s in signals]
    assert items.index('meters[0] "meter-01"') > items.index('machines[2] "cnc-03"')
    assert items.index('meters[2] "meter-03"') > items.index('meters[1] "meter-02"')
    (e,) = [s for s in signals if s.place == 'meters[2] "meter-03": signals.energy_kwh']
    assert e.address == "3 holding 0 u32 le" and e.source == "meters"


def test_the_table_groups_by_config_table_and_fits_100_columns() -> None:
    lines = format_results(_results(), now_ms=NOW_MS)
    assert all(len(line) <= 100 for line in lines)
    assert lines[0].split() == ["SIGNAL", "SOURCE", "ADDRESS", "RAW", "VALUE", "QUALITY",
                                "TIME", "(UTC)"]
    assert lines[1] == 'machines[0] "cnc-01": signals'
    state = lines[2].split()
    assert state[0] == "state" and state[1] == "cnc-opcua"
    assert state[2] == "Objects/…/cnc:MachineState"
    assert state[3:] == ["2", "producing", "good", "07:59:59.500"]
    assert lines[3].split()[-4:] == ["-", "-", "UNRESOLVED", "-"]
    assert lines[4] == 'meters[0] "meter-01": preset "sdm630"'
    assert lines[5].split() == ["energy_kwh", "meters", "1", "input", "72", "f32", "4821.41",
                                "4821.41", "good", "08:00:00.000", "r"]  # receipt, marked


def test_a_narrow_table_cuts_addresses_first_keeping_their_end() -> None:
    lines = format_results(_results(), width=86, now_ms=NOW_MS)
    assert all(len(line) <= 86 for line in lines)
    assert "producing" in lines[2] and "4821.41" in lines[5]
    assert "…" in lines[2]


def test_a_timestamp_of_another_day_is_shown_whole() -> None:
    old = Result(_state(), "ok", None, Sample(NOW_MS - 3 * 86_400_000, "cnc-01", "state",
                                              "idle"), 1)
    (line,) = [ln for ln in format_results([old], now_ms=NOW_MS) if "idle" in ln]
    assert line.endswith("2025-03-11 08:00:00")


@pytest.mark.parametrize(("text", "width", "expected"), [
    ("ns=2;s=x", 20, "ns=2;s=x"),
    (PATH, 40, "Objects/…/cnc:MachineTool/cnc:MachineState"[:40]),
    ("nsu=urn:factory-edge:simulator:cnc;s=Machines.cnc-01.State", 24,
     "nsu=urn…cnc-01.State"),
])
def test_shorten(text: str, width: int, expected: str) -> None:
    got = shorten(text, width)
    assert len(got) <= width
    if len(text) <= width:
        assert got == text
    else:
        assert "…" in got and text.endswith(got.rsplit("…", 1)[1].lstrip("/"))


def test_the_summary_names_each_problem_by_its_config_place() -> None:
    assert summary(_results()) == [
        "1 of 3 signals not read with good quality:",
        '  machines[0] "cnc-01": signals.parts_total: unresolved: browse path not found '
        "(BadNoMatch)",
    ]
    good = [r for r in _results() if r.good]
    assert summary(good) == ["all 2 signals read with good quality"]
    bad_quality = Result(ENERGY, "failing", "status BadSensorFailure",
                         Sample(NOW_MS, "meter-01", "energy_kwh", 1.0, "bad"), 1.0)
    nothing = Result(ENERGY, "pending")
    assert summary([bad_quality, nothing])[1:] == [
        '  meters[0] "meter-01": preset (energy_kwh): quality bad: status BadSensorFailure',
        '  meters[0] "meter-01": preset (energy_kwh): no value within the timeout',
    ]


def test_the_json_document_carries_every_signal() -> None:
    doc = results_json(_results())
    assert doc["ok"] is False
    assert doc["not_good"] == ['machines[0] "cnc-01": signals.parts_total']
    first = doc["signals"][0]
    assert first["place"] == 'machines[0] "cnc-01": signals.state'
    assert (first["raw"], first["value"], first["quality"]) == (2, "producing", "good")
    assert first["ts"] == "2025-03-14T07:59:59.500Z" and first["ts_source"] == "source"
    assert doc["signals"][1]["state"] == "unresolved" and doc["signals"][1]["value"] is None
    json.dumps(doc)


def _args(path: Path, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(config=path, timeout=kw.get("timeout", 5.0),
                              json=kw.get("json", False))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    text = (REPO / "agent/examples/simulators.toml").read_text()
    path = tmp_path / "agent.toml"
    path.write_text(text.replace("/tmp/edge-agent-sim", str(tmp_path / "state")))
    return path


@pytest.mark.parametrize(("results", "code"), [
    (lambda: [r for r in _results() if r.good], 0),
    (_results, 1),
    (lambda: [], 0),
])
def test_exit_code_is_0_only_when_every_signal_is_good(
    config: Path, monkeypatch: pytest.MonkeyPatch, results: Any, code: int
) -> None:
    async def canned(cfg: AgentConfig, timeout_s: float) -> list[Result]:
        return list(results())

    monkeypatch.setattr(probe, "probe", canned)
    level = logging.getLogger("collectors").level
    out = io.StringIO()
    assert probe.run(_args(config), out) == code
    assert logging.getLogger("collectors").level == level  # quieted for the run only
    text = out.getvalue()
    assert ("not read with good quality" in text) == (code != 0)
    out = io.StringIO()
    assert probe.run(_args(config, json=True), out) == code
    assert json.loads(out.getvalue())["ok"] is (code == 0)


def test_an_invalid_config_exits_2_naming_the_place(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[site]\nid = "s"\n[[machines]]\nid = "m1"\nline = "nope"\n')
    assert main(["test", "-c", str(path)]) == 2
    assert 'machines[0] "m1"' in capsys.readouterr().err


def test_a_non_positive_timeout_is_bad_usage(config: Path) -> None:
    assert main(["test", "-c", str(config), "--timeout", "0"]) == 2


_PROBE = """
import contextlib, io, json, sys
from agent import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli._parser().parse_args(json.loads(sys.argv[1]))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules}
                        & {"asyncua", "pymodbus", "paho", "influxdb_client", "numpy"})))
"""


@pytest.mark.parametrize("argv", [["test", "--help"], ["test", "-c", "agent.toml"],
                                  ["init", "--help"], ["init", "-o", "x.toml"]])
def test_choosing_test_or_init_imports_no_device_library(argv: list[str]) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
