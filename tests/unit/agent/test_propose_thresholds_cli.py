"""``edge-agent propose-thresholds``: a sample log in, a ready-to-paste TOML table out."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

from agent.config.model import MachineSection
from rules.types import Sample, ms_to_rfc3339
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_767_254_400_000  # 2026-01-01T08:00:00Z


def _write_log(path: Path) -> None:
    """Ten minutes of meter-01 at 1 s: off, idle and cutting, and a machine's counter."""
    lines = [json.dumps({"ts": ms_to_rfc3339(T0), "device": "_agent", "signal": "observing",
                         "value": "start"})]
    for i in range(600):
        phase = (i // 20) % 4
        kw = (0.0, 2.5, 18.0, 18.0)[phase] + 0.01 * (i % 5)
        lines.append(json.dumps(Sample(T0 + i * 1000, "meter-01", "power_kw",
                                       kw).to_json_dict()))
        if i % 50 == 0:
            lines.append(json.dumps(Sample(T0 + i * 1000, "cnc-01", "parts_total",
                                           i).to_json_dict()))
    lines.append(json.dumps({**Sample(T0, "meter-02", "power_kw", 1.0).to_json_dict(),
                             "quality": "bad"}))
    path.write_text("\n".join(lines) + "\n")


def test_it_prints_a_table_that_loads_as_the_machines_config(tmp_path: Path) -> None:
    log = tmp_path / "samples.jsonl"
    _write_log(log)
    done = run_cli("propose-thresholds", "--input", str(log), "--machine", "cnc-01",
                   "--device", "meter-01")
    assert done.returncode == 0, done.stderr
    assert "under the [[machines]] entry of 'cnc-01'" in done.stdout
    table = tomllib.loads(done.stdout)["machines"]
    machine = MachineSection.model_validate(
        {"id": "cnc-01", "line": "L", "ideal_cycle_time_s": 20, **table})
    ps = machine.power_state
    assert ps is not None and ps.meter == "meter-01"
    assert 0 < ps.off_below_kw < 2.5 < ps.producing_above_kw < 18


def test_the_config_names_the_meter(tmp_path: Path) -> None:
    log = tmp_path / "samples.jsonl"
    _write_log(log)
    config = tmp_path / "agent.toml"
    config.write_text(tomli_w.dumps({
        "site": {"id": "s"},
        "lines": [{"id": "L", "output_machine": "cnc-01"}],
        "machines": [{"id": "cnc-01", "line": "L", "ideal_cycle_time_s": 20}],
        "meters": [{"id": "meter-01", "machine": "cnc-01", "source": "gw", "unit": 1,
                    "preset": "sdm630"}],
    }))
    done = run_cli("propose-thresholds", "--input", str(log), "--machine", "cnc-01", "-c",
                   str(config))
    assert done.returncode == 0, done.stderr
    assert 'meter = "meter-01"' in done.stdout


def test_a_log_without_the_devices_power_names_those_it_has(tmp_path: Path) -> None:
    log = tmp_path / "samples.jsonl"
    _write_log(log)
    done = run_cli("propose-thresholds", "--input", str(log), "--machine", "cnc-01")
    assert done.returncode == 2
    assert "no good power_kw readings of 'cnc-01'" in done.stderr
    assert "meter-01" in done.stderr and "meter-02" not in done.stderr  # bad only
    assert "Traceback" not in done.stderr


def test_a_log_of_one_level_is_refused_with_the_reason(tmp_path: Path) -> None:
    log = tmp_path / "flat.jsonl"
    log.write_text("".join(json.dumps(Sample(T0 + i * 1000, "m", "power_kw",
                                             4.0).to_json_dict()) + "\n" for i in range(50)))
    done = run_cli("propose-thresholds", "--input", str(log), "--machine", "m")
    assert done.returncode == 2
    assert "one power level only" in done.stderr
    missing = run_cli("propose-thresholds", "--input", str(tmp_path / "none.jsonl"),
                      "--machine", "m")
    assert missing.returncode == 2 and "file not found" in missing.stderr


_PROBE = """
import contextlib, io, json, sys
from agent import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli._parser().parse_args(json.loads(sys.argv[1]))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"numpy"})))
"""


def test_parsing_the_command_imports_no_numpy() -> None:
    for argv in (["--help"], ["propose-thresholds", "--help"],
                 ["propose-thresholds", "--input", "x", "--machine", "m"]):
        done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=True)
        assert json.loads(done.stdout.strip().splitlines()[-1]) == [], argv
