"""Each command's happy path and bad-input path, run as a user would: as a process."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import cli
from rules.errors import ConfigError, DeliveryError

REPO = Path(__file__).resolve().parents[2]
CASES = REPO / "tests" / "unit" / "agent" / "config_cases"


def edge_agent(*args: str, stdin: str | None = None, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def test_check_config_ok_prints_a_summary() -> None:
    # --file-only: the example's CA file lives on the industrial PC, not here (the
    # examples pass the full check in test_example_configs.py, files provided).
    res = edge_agent("check-config", "--file-only", "-c",
                     str(REPO / "deploy/examples/small-plant.toml"))
    assert res.returncode == 0, res.stderr
    assert "2 machines, 3 meters, 3 sources" in res.stdout


def test_check_config_checks_the_host_by_default() -> None:
    res = edge_agent("check-config", "-c", str(REPO / "deploy/examples/small-plant.toml"),
                     env={"EDGE_AGENT_MQTT_PASSWORD": "x"})
    if Path("/etc/edge-agent/ca.pem").exists():
        pytest.skip("this host has the example's CA file")
    assert res.returncode == 2
    assert res.stderr.strip().endswith(
        "small-plant.toml: mqtt.tls.ca_file: file not found: /etc/edge-agent/ca.pem")


RUNNABLE = """
[agent]
state_dir = "{state_dir}"
[site]
id = "s"
[mqtt]
host = "127.0.0.1"
port = 1
[health]
enabled = false
[[sources]]
id = "gw"
type = "modbus"
port = 1
[[lines]]
id = "l"
output_machine = "m"
[[machines]]
id = "m"
line = "l"
ideal_cycle_time_s = 10
[machines.signals.state]
source = "gw"
unit = 1
table = "holding"
address = 0
map = {{ "1" = "producing" }}
[machines.signals.parts_total]
source = "gw"
unit = 1
table = "holding"
address = 1
[machines.signals.parts_bad]
source = "gw"
unit = 1
table = "holding"
address = 2
"""


def test_run_runtime_failure_exits_1_with_one_line(tmp_path: Path) -> None:
    # A valid config whose state directory cannot be created: a runtime failure, not a
    # config problem (check-config passes; works for root too, unlike a permission).
    (tmp_path / "file").write_text("")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(RUNNABLE.format(state_dir=tmp_path / "file" / "state"))
    assert edge_agent("check-config", "-c", str(cfg)).returncode == 0
    res = edge_agent("run", "-c", str(cfg), timeout=30)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.splitlines()
    assert "ERROR" in line and str(tmp_path / "file" / "state") in line


@pytest.mark.parametrize(("raised", "code", "wanted"), [
    (ExceptionGroup("g", [ConfigError([("mqtt.tls", "bad")], source="a.toml")]), 2,
     "a.toml: mqtt.tls: bad"),
    (ExceptionGroup("g", [ExceptionGroup("h", [DeliveryError("broker refused")])]), 1,
     "broker refused"),
    (ExceptionGroup("g", [OSError(98, "Address already in use")]), 1,
     "[Errno 98] Address already in use"),
    (ExceptionGroup("g", [KeyError("x")]), 1,
     "unexpected KeyError: 'x' (a bug: rerun with --log-level debug for the traceback"),
])
def test_task_group_failures_are_unwrapped(
    raised: BaseException, code: int, wanted: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise raised

    monkeypatch.setitem(cli.COMMANDS, "demo", fail)
    assert cli.main(["demo"]) == code
    err = capsys.readouterr().err
    assert wanted in err and "Traceback" not in err


def test_a_bug_shows_its_traceback_at_debug_level(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    async def task(divisor: int) -> float:
        return 1 / divisor

    async def group() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(task(0))

    def fail(args: argparse.Namespace) -> int:
        asyncio.run(group())
        return 0

    monkeypatch.setitem(cli.COMMANDS, "demo", fail)
    assert cli.main(["--log-level", "debug", "demo"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in task" in err and "ZeroDivisionError" in err
    assert cli.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1


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


def _write_cfg(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text)
    return cfg


def test_kpi_unsupported_value_type_exits_2_naming_the_line(tmp_path: Path) -> None:
    cfg = _write_cfg(tmp_path, KPI_CONFIG)
    samples = tmp_path / "s.jsonl"
    samples.write_text(_sample("2026-11-26T08:00:00Z", "state", "idle") + "\n\n"
                       + _sample("2026-11-26T08:00:01Z", "parts_total", [1]) + "\n")
    res = edge_agent("kpi", "--input", str(samples), "-c", str(cfg))
    assert res.returncode == 2
    assert f"{samples}:3: 'value' has unsupported type list" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("text", "named"), [
    (KPI_CONFIG.replace('windows = ["1m"]', 'windows = ["7x"]'), "kpi.windows"),
    (KPI_CONFIG.replace('windows = ["1m"]', 'windows = ["shift"]'), "kpi.windows"),
    (KPI_CONFIG + "colour = 'red'\n", "machines[0] \"m\": colour: unknown key"),
    (KPI_CONFIG.replace('output_machine = "m"', 'output_machine = "x"'),
     'lines[0] "l": output_machine'),
    (KPI_CONFIG + '[[alarms]]\nname = "a"\nkind = "state_duration"\nmachine = "m"\n'
     'state = "sleeping"\nmax_duration_s = 5\n', 'alarms[0] "a": state'),
])
def test_kpi_invalid_config_exits_2_naming_the_key(tmp_path: Path, text: str,
                                                   named: str) -> None:
    cfg = _write_cfg(tmp_path, text)
    res = edge_agent("kpi", "--input", "-", "-c", str(cfg), stdin="")
    assert res.returncode == 2, res.stderr
    assert named in res.stderr and "Traceback" not in res.stderr


def test_kpi_counts_what_it_ignores_on_stderr(tmp_path: Path) -> None:
    """Values valid JSON but not valid for their role, unknown devices or signals, late
    and bad-quality samples are left out of the KPIs as the live agent leaves them out,
    flagged on the record and counted in the one-line summary: never silently."""
    cfg = _write_cfg(tmp_path, KPI_CONFIG)
    lines = [
        _sample("2026-11-26T08:00:00Z", "state", "producing"),
        _sample("2026-11-26T08:00:00Z", "parts_total", 100),
        _sample("2026-11-26T08:00:10Z", "state", "running"),  # not one of the six states
        _sample("2026-11-26T08:00:20Z", "parts_total", "101"),  # a counter as a string
        _sample("2026-11-26T08:00:30Z", "spindle_rpm", 1200),  # unknown signal
        json.dumps({"ts": "2026-11-26T08:00:30Z", "device": "cnc-9", "signal": "state",
                    "value": "idle"}),  # unknown device
        json.dumps({"ts": "2026-11-26T08:00:40Z", "device": "m", "signal": "parts_total",
                    "value": 105, "quality": "bad"}),
        _sample("2026-11-26T08:01:30Z", "parts_total", 106),
        _sample("2026-11-26T08:00:50Z", "parts_total", 103),  # 40 s late, lateness 5 s
        _sample("2026-11-26T08:01:40Z", "parts_total", 107),
    ]
    res = edge_agent("kpi", "--input", "-", "-c", str(cfg), stdin="\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr
    summary = res.stderr.strip().splitlines()
    assert summary == [
        "edge-agent kpi: 10 samples, 6 records; ignored: 2 unknown device/signal, "
        "2 invalid values, 1 late, 1 bad quality (unknown: cnc-9/state x1, m/spindle_rpm x1)"
    ]
    records = [json.loads(line) for line in res.stdout.splitlines()]
    first = next(r for r in records if r["machine"] == "m")
    assert set(first["flags"]) >= {"invalid_value", "bad_quality"}
    # the state became unknown at the invalid value: 10 s producing, the rest unknown
    assert first["producing_time_s"] == 10.0 and "incomplete" in first["flags"]
    assert first["parts_produced"] == 0


SHIFT_CONFIG = """
[site]
id = "s"
timezone = "Asia/Shanghai"

[kpi]
windows = ["shift"]

[[calendar.shifts]]
name = "A"
start = "08:00"
end = "20:00"
breaks = [["12:00", "12:30"]]

[[calendar.shifts]]
name = "N"
start = "20:00"
end = "08:00"
breaks = [["00:00", "00:30"], ["03:00", "03:15"]]

[[lines]]
id = "l"
output_machine = "m"

[[machines]]
id = "m"
line = "l"
ideal_cycle_time_s = 60

[[meters]]
id = "e"
machine = "m"
resolution_kwh = 0.1
"""


def test_kpi_night_shift_across_midnight_with_breaks(tmp_path: Path) -> None:
    """Night shift N of 2026-11-26 in Shanghai (UTC+8): 20:00-08:00 local is
    12:00Z-00:00Z, POT 720 min; breaks 00:00-00:30 and 03:00-03:15 local (16:00Z and
    19:00Z, 45 min). Hand-computed timeline (UTC):

    12:00 producing 120 | 14:00 setup 30 | 14:30 producing 100, of which 10 in the break
    -> 90 | 16:10 unplanned_down 30, of which 20 in the break -> 10 | 16:40 producing 80 |
    18:00 idle 20 | 18:20 producing 220, of which 15 in the break -> 205 | 22:00
    planned_down 30 | 22:30 producing 90.

    APT = 120 + 90 + 80 + 205 + 90 = 585 min; PDOT = 45 + 30 = 75 min; PBT = 645 min.
    PQ = 1500 - 1000 = 500, SQ 25, GQ 475; the meter reads 100.0 kWh at 12:00Z and
    220.0 kWh at 00:00Z: energy 120 kWh.
    """
    cfg = _write_cfg(tmp_path, SHIFT_CONFIG)
    day = "2026-11-26T"

    def line(ts: str, device: str, signal: str, value: object) -> str:
        return json.dumps({"ts": ts, "device": device, "signal": signal, "value": value})

    lines = [
        line(day + "12:00:00Z", "m", "state", "producing"),
        line(day + "12:00:00Z", "m", "parts_total", 1000),
        line(day + "12:00:00Z", "m", "parts_bad", 0),
        line(day + "14:00:00Z", "m", "state", "setup"),
        line(day + "14:30:00Z", "m", "state", "producing"),
        line(day + "16:10:00Z", "m", "state", "unplanned_down"),
        line(day + "16:40:00Z", "m", "state", "producing"),
        line(day + "18:00:00Z", "m", "state", "idle"),
        line(day + "18:20:00Z", "m", "state", "producing"),
        line(day + "22:00:00Z", "m", "state", "planned_down"),
        line(day + "22:30:00Z", "m", "state", "producing"),
        line(day + "23:00:00Z", "m", "parts_total", 1500),
        line(day + "23:00:00Z", "m", "parts_bad", 25),
        line("2026-11-27T00:00:00Z", "m", "parts_total", 1500),
    ]
    # The meter is polled every 4 s, well within the lateness, so no energy is carried.
    t0 = datetime(2026, 11, 26, 12, tzinfo=UTC)
    lines += [line((t0 + timedelta(seconds=4 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"), "e",
                   "energy_kwh", round(100.0 + i * 4 * 120.0 / 43200, 1))
              for i in range(43200 // 4 + 1)]
    lines.sort(key=lambda x: json.loads(x)["ts"])
    res = edge_agent("kpi", "--input", "-", "-c", str(cfg), stdin="\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr
    records = [json.loads(x) for x in res.stdout.splitlines()]
    night = [r for r in records if r["machine"] == "m"
             and r["window_start"] == "2026-11-26T12:00:00.000Z"]
    assert len(night) == 1
    r = night[0]
    assert r["window"] == "shift" and r["window_end"] == "2026-11-27T00:00:00.000Z"
    assert r["flags"] == []
    assert r["planned_busy_time_s"] == 645 * 60
    assert r["producing_time_s"] == 585 * 60
    assert r["setup_time_s"] == 30 * 60
    assert r["unplanned_down_time_s"] == 10 * 60
    assert r["idle_time_s"] == 20 * 60
    assert (r["parts_produced"], r["parts_scrap"], r["parts_good"]) == (500, 25, 475)
    assert r["availability"] == pytest.approx(585 / 645)
    assert r["performance"] == pytest.approx(60 * 500 / (585 * 60))
    assert r["quality_ratio"] == pytest.approx(0.95)
    assert r["oee"] == pytest.approx(60 * 475 / (645 * 60))
    assert r["defect_rate"] == pytest.approx(0.05)
    assert r["cycle_time_mean_s"] == pytest.approx(70.2)
    assert r["energy_kwh"] == pytest.approx(120.0)
    assert r["energy_per_good_unit_kwh"] == pytest.approx(120 / 475)
    assert r["co2_kg"] == pytest.approx(120 * 0.5306)
    line_rec = next(x for x in records if x["line"] == "l" and x["machine"] is None
                    and x["window_start"] == r["window_start"])
    assert line_rec["oee"] == pytest.approx(r["oee"])
    # the next morning's shift A starts at the last sample: closed, and says it is partial
    morning = [x for x in records if x["machine"] == "m"
               and x["window_start"] == "2026-11-27T00:00:00.000Z"]
    assert len(morning) == 1 and "incomplete" in morning[0]["flags"]


def test_certs_creates_then_shows_the_client_certificate(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    created = edge_agent("certs", "--pki-dir", str(pki), "--application-uri", "urn:t:agent")
    assert created.returncode == 0, created.stderr
    assert "(created now)" in created.stdout and "urn:t:agent" in created.stdout
    shown = edge_agent("certs", "--pki-dir", str(pki), "--show")
    assert shown.returncode == 0, shown.stderr
    assert "created now" not in shown.stdout
    sha256 = [line for line in created.stdout.splitlines() if line.startswith("SHA-256:")]
    assert sha256 and sha256[0] in shown.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "5x"], "--window: window '5x' is not a duration"),
    (["--machines", "0"], "--machines: give 1 to 200"),
    (["--duration", "-1"], "--duration: give a positive number"),
    (["--broker", "carrier-pigeon"], "invalid choice"),
])
def test_demo_bad_arguments_exit_2(args: list[str], message: str) -> None:
    res = edge_agent("demo", *args)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_sim_bad_scenario_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "scenario.toml"
    bad.write_text("[[machines]]\nid = 'm'\ncolour = 'red'\n")
    res = edge_agent("sim", "plant", "--scenario", str(bad), "--duration", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
