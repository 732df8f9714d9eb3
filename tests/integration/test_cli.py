"""Each command's happy path and bad-input path, run as a user would: as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "tests" / "unit" / "agent" / "config_cases"


def edge_agent(*args: str, stdin: str | None = None, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def test_check_config_ok_prints_a_summary() -> None:
    res = edge_agent("check-config", "-c", str(REPO / "deploy/examples/small-plant.toml"),
                     env={"EDGE_AGENT_MQTT_PASSWORD": "x"})
    assert res.returncode == 0, res.stderr
    assert "2 machines, 2 meters, 3 sources" in res.stdout


def test_check_config_bad_exits_2_naming_every_error() -> None:
    res = edge_agent("check-config", "-c", str(CASES / "missing_roles" / "agent.toml"))
    assert res.returncode == 2
    assert 'machines[0] "cnc-01": signals.parts_total: required role' in res.stderr
    assert 'machines[0] "cnc-01": signals.parts_bad:' in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_invalid_toml_exits_2(command: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\nhost = 1\n")
    res = edge_agent(command, "-c", str(bad))
    assert res.returncode == 2
    assert "not valid TOML" in res.stderr and "Traceback" not in res.stderr


def test_run_missing_key_exits_2_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[kpi]\nwindows = ['1m']\n")
    res = edge_agent("run", "-c", str(cfg))
    assert res.returncode == 2
    assert "site: required key is missing" in res.stderr


def test_ingest_missing_key_exits_2_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "ingest.toml"
    cfg.write_text("[mqtt]\nport = 'x'\n")
    res = edge_agent("ingest", "-c", str(cfg))
    assert res.returncode == 2
    assert "mqtt.port" in res.stderr and "Traceback" not in res.stderr


def test_usage_error_exits_2() -> None:
    res = edge_agent("kpi", "--input")
    assert res.returncode == 2


KPI_CONFIG = """
[site]
id = "s"
[kpi]
windows = ["1m"]
[[lines]]
id = "l"
output_machine = "m"
[[machines]]
id = "m"
line = "l"
ideal_cycle_time_s = 30
"""


def _sample(ts: str, signal: str, value: object) -> str:
    return json.dumps({"ts": ts, "device": "m", "signal": signal, "value": value})


def test_kpi_recomputes_records(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(KPI_CONFIG)
    lines = [
        _sample("2026-11-26T08:00:00Z", "state", "producing"),
        _sample("2026-11-26T08:00:00Z", "parts_total", 100),
        _sample("2026-11-26T08:00:00Z", "parts_bad", 1),
        _sample("2026-11-26T08:00:30Z", "parts_total", 101),
        _sample("2026-11-26T08:00:59Z", "parts_total", 102),
        _sample("2026-11-26T08:01:30Z", "parts_bad", 2),
        _sample("2026-11-26T08:02:05Z", "parts_total", 103),
    ]
    res = edge_agent("kpi", "--input", "-", "-c", str(cfg), stdin="\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    first = next(r for r in records if r["machine"] == "m")
    assert first["schema"] == "factory-kpi/1"
    assert first["window_start"] == "2026-11-26T08:00:00.000Z"
    assert first["parts_produced"] == 2 and first["parts_scrap"] == 0
    assert first["producing_time_s"] == 60.0
    assert first["performance"] == pytest.approx(1.0)
    ends = [r["window_end"] for r in records]
    assert ends == sorted(ends)


def test_kpi_malformed_line_exits_2_with_line_number(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(KPI_CONFIG)
    samples = tmp_path / "s.jsonl"
    samples.write_text(_sample("2026-11-26T08:00:00Z", "state", "idle") + "\n{oops\n")
    res = edge_agent("kpi", "--input", str(samples), "-c", str(cfg))
    assert res.returncode == 2
    assert f"{samples}:2: not valid JSON" in res.stderr and "Traceback" not in res.stderr


def test_kpi_missing_input_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(KPI_CONFIG)
    res = edge_agent("kpi", "--input", str(tmp_path / "nope.jsonl"), "-c", str(cfg))
    assert res.returncode == 2 and "file not found" in res.stderr
