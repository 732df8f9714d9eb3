"""``edge-agent report`` as a user runs it: from KPI JSON Lines, and from a real InfluxDB
holding the same records as the ingest writes them; both must give the same report."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.ingest.points import record_to_point
from agent.services import ManagedInfluxd, free_port
from rules.calendar import calendar_window
from rules.types import KpiRecord, rfc3339_to_ms
from tests.helpers import GRID_KG_PER_KWH as GRID
from tests.helpers import hourly_record
from tests.helpers import run_cli as edge_agent

pytestmark = pytest.mark.integration

H = 3_600_000
DAY = 24 * H
BASE_DAY = rfc3339_to_ms("2026-10-05T00:00:00Z")
CURRENT_DAY = BASE_DAY + 7 * DAY
_record = hourly_record


def plant_records() -> list[KpiRecord]:
    """A baseline day and a current day a week later: machine, line and site records,
    fewer defects in the current day, one hour of the current day without energy data."""
    rng = random.Random(7)
    records: list[KpiRecord] = []
    for day, defect in ((BASE_DAY, 0.02), (CURRENT_DAY, 0.015)):
        for hour in range(24):
            end = day + (hour + 1) * H
            apt = rng.uniform(2400, 3400)
            pq = int(apt // 5)
            sq = round(pq * defect + rng.choice([-1, 0, 1]))
            kwh = None if (day == CURRENT_DAY and hour == 5) else round(rng.uniform(20, 40), 1)
            records += [
                _record("line-a", "cnc-01", end, pq, sq, apt, kwh, 4.5),
                _record("line-a", None, end, pq, sq, apt, kwh, 4.5),
                _record(None, None, end, pq, sq, apt, kwh, None),
            ]
    return records


ARGS = ("--period", "2026-10-12/2026-10-13", "--baseline", "2026-10-05/2026-10-06",
        "--window", "1h", "--format", "json")


def _expected(records: list[KpiRecord], start: int, end: int) -> dict[str, float]:
    """Independent sums for the machine scope over one day."""
    mine = [r for r in records if r.machine == "cnc-01" and start <= r.window_start_ms
            and r.window_end_ms <= end]
    pq = sum(r.parts_produced for r in mine)
    sq = sum(r.parts_scrap for r in mine)
    with_energy = [r for r in mine if r.energy_kwh is not None]
    kwh = sum(r.energy_kwh or 0 for r in with_energy)
    return {"defect_rate": sq / pq,
            "oee": sum(4.5 * r.parts_good for r in mine) / (3600 * len(mine)),
            "energy_per_good_unit_kwh": kwh / sum(r.parts_good for r in with_energy)}


def _jsonl(tmp_path: Path, records: list[KpiRecord]) -> Path:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r.to_json_dict()) + "\n" for r in records))
    return path


def test_report_from_jsonl_compares_the_periods(tmp_path: Path) -> None:
    records = plant_records()
    res = edge_agent("report", "--records", str(_jsonl(tmp_path, records)),
                     "--machine", "cnc-01", *ARGS)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    cur, base = report["current"], report["baseline"]
    assert (report["scope"], report["site"], report["window"]) == ("machine", "hb-sjz-01", "1h")
    assert (cur["windows"], cur["windows_expected"], cur["energy_windows"]) == (24, 24, 23)
    assert cur["complete"] is False and base["complete"] is True
    assert cur["flags"] == {"no_energy_data": 1}
    for name, want in _expected(records, CURRENT_DAY, CURRENT_DAY + DAY).items():
        assert cur[name] == pytest.approx(want), name
    for name, want in _expected(records, BASE_DAY, BASE_DAY + DAY).items():
        assert base[name] == pytest.approx(want), name
    assert report["reduction"]["defect_rate"] == pytest.approx(
        (base["defect_rate"] - cur["defect_rate"]) / base["defect_rate"])
    assert report["reduction"]["defect_rate"] > 0.1  # 2 % -> ~1.5 %

    text = edge_agent("report", "--records", str(_jsonl(tmp_path, records)),
                      "--line", "line-a", *ARGS[:-2])
    assert text.returncode == 0, text.stderr
    assert "KPI report: line line-a, 1h windows" in text.stdout
    assert "24 of 24 windows, 1 without energy data" in text.stdout
    assert "defect_rate" in text.stdout and "reduction" in text.stdout


def test_report_from_influxdb_equals_the_report_from_jsonl(
        tmp_path: Path, influxdb: ManagedInfluxd) -> None:
    records = plant_records()
    body = "\n".join(record_to_point(r).to_line_protocol() for r in records).encode()
    import urllib.request

    req = urllib.request.Request(
        f"{influxdb.url}/api/v2/write?bucket={influxdb.bucket}&precision=ms", data=body,
        headers={"Authorization": f"Token {influxdb.token}"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204
    ingest = tmp_path / "ingest.toml"
    ingest.write_text(f'[mqtt]\nhost = "127.0.0.1"\n\n[influxdb]\nurl = "{influxdb.url}"\n'
                      f'org = "-"\nbucket = "{influxdb.bucket}"\ntoken_env = "REPORT_TOKEN"\n')
    env = {"REPORT_TOKEN": influxdb.token}
    for scope in (("--machine", "cnc-01"), ("--line", "line-a"), ()):
        from_db = edge_agent("report", "--influx", str(ingest), *scope, *ARGS, env=env)
        assert from_db.returncode == 0, from_db.stderr
        from_file = edge_agent("report", "--records", str(_jsonl(tmp_path, records)), *scope,
                               *ARGS)
        assert from_file.returncode == 0, from_file.stderr
        db, file = json.loads(from_db.stdout), json.loads(from_file.stdout)
        assert db["current"]["windows"] == 24
        for part in ("current", "baseline", "reduction"):
            for key, want in file[part].items():
                got = db[part][key]
                if isinstance(want, float):
                    assert got == pytest.approx(want, rel=1e-12), (scope, part, key)
                else:
                    assert got == want, (scope, part, key)


def test_unreachable_influxdb_is_a_runtime_failure_naming_it(tmp_path: Path) -> None:
    port = free_port()
    ingest = tmp_path / "ingest.toml"
    ingest.write_text(f'[mqtt]\nhost = "127.0.0.1"\n\n[influxdb]\n'
                      f'url = "http://127.0.0.1:{port}"\ntimeout_s = 2\n')
    res = edge_agent("report", "--influx", str(ingest), *ARGS)
    assert res.returncode == 1, res.stderr
    assert f"InfluxDB at http://127.0.0.1:{port} did not answer" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--period": "2026-10-12"}, "--period: '2026-10-12' is not START/END"),
        ({"--baseline": "2026-10-06/2026-10-05"}, "--baseline: '2026-10-06/2026-10-05' ends "
                                                  "before it starts"),
        ({"--period": "2026-13-01/2026-10-13"}, "--period: '2026-13-01' is neither a date"),
        ({"--window": "7x"}, "--window: window '7x' is not a duration"),
        ({"--machine": "cnc-99"}, "machine cnc-99: no 1h record in either period"),
        ({"--timezone": "Mars/Olympus"}, "--timezone: unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(tmp_path: Path, change: dict[str, str],
                                                message: str) -> None:
    options = dict(zip(ARGS[::2], ARGS[1::2], strict=True))
    options["--machine"] = "cnc-01"
    options.update(change)
    args = [item for pair in options.items() for item in pair]
    res = edge_agent("report", "--records", str(_jsonl(tmp_path, plant_records())), *args)
    assert res.returncode == 2, res.stdout
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_bad_record_line_names_the_file_line_and_key(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, plant_records()[:3])
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["parts_produced"] = -4
    path.write_text("\n".join([lines[0], json.dumps(bad), lines[2]]) + "\n")
    res = edge_agent("report", "--records", str(path), *ARGS)
    assert res.returncode == 2
    assert f"KPI record at {path}:2: key 'parts_produced'" in res.stderr, res.stderr


def test_several_sites_need_a_site_and_dates_follow_the_timezone(tmp_path: Path) -> None:
    records = plant_records()
    other = [KpiRecord(**{**{f: getattr(r, f) for f in r.__dataclass_fields__},
                          "site": "hb-ts-02"}) for r in records[:3]]
    path = _jsonl(tmp_path, records + other)
    res = edge_agent("report", "--records", str(path), *ARGS)
    assert res.returncode == 2
    assert "--site: the records hold 2 sites (hb-sjz-01, hb-ts-02)" in res.stderr
    # Local days in Shanghai start at 16:00 UTC the day before: 8 of the day's 24 UTC
    # hours fall outside, and the previous local day's last 8 hours are not in the data.
    res = edge_agent("report", "--records", str(path), "--site", "hb-sjz-01",
                     "--timezone", "Asia/Shanghai", *ARGS)
    assert res.returncode == 0, res.stderr
    cur = json.loads(res.stdout)["current"]
    assert cur["start"] == "2026-10-11T16:00:00.000Z"
    assert (cur["windows"], cur["windows_expected"]) == (16, 24)


def _calendar_records(window: str, zone: str, days: list[str]) -> list[KpiRecord]:
    """Machine records of the calendar windows containing ``days`` (local dates), bounded
    as the engine bounds them in ``zone``."""
    tz = ZoneInfo(zone)
    out: list[KpiRecord] = []
    for i, text in enumerate(days):
        noon = int(datetime.combine(date.fromisoformat(text), time(12), tz).timestamp() * 1000)
        start, end = calendar_window(window, noon, tz)
        span = (end - start) / 1000
        pq = 1000 + 10 * i
        out.append(KpiRecord(
            site="hb-sjz-01", line="line-a", machine="cnc-01", window=window,
            window_start_ms=start, window_end_ms=end, observed_s=span,
            planned_busy_time_s=span, producing_time_s=span * 0.8, parts_produced=pq,
            parts_good=pq - 20, parts_scrap=20, ideal_cycle_time_s=4.5,
            oee=4.5 * (pq - 20) / span, energy_kwh=span / 100, co2_kg=span / 100 * GRID,
            kgce=0.1229 * span / 100, energy_cost=0.8 * span / 100))
    return out


def test_calendar_windows_follow_the_sites_local_calendar(tmp_path: Path) -> None:
    """1d windows of a Shanghai site and 1mo windows of a Berlin one: each period expects
    the site's local days and months, however long the DST change makes them."""
    days = _calendar_records("1d", "Asia/Shanghai",
                             [f"2024-03-{d:02d}" for d in range(1, 15)])
    path = _jsonl(tmp_path, days)
    args = ("report", "--records", str(path), "--machine", "cnc-01", "--window", "1d",
            "--period", "2024-03-08/2024-03-15", "--baseline", "2024-03-01/2024-03-08",
            "--format", "json")
    res = edge_agent(*args, "--timezone", "Asia/Shanghai")
    assert res.returncode == 0, res.stderr
    cur = json.loads(res.stdout)["current"]
    assert cur["start"] == "2024-03-07T16:00:00.000Z"
    assert (cur["windows"], cur["windows_expected"], cur["complete"]) == (7, 7, True)
    assert cur["observed_s"] == cur["expected_s"] == 7 * 86_400
    assert cur["parts_produced"] == sum(r.parts_produced for r in days[7:])
    # Read as UTC days, no record is a window of the period: refused, naming the offset.
    res = edge_agent(*args)
    assert res.returncode == 2, res.stdout
    assert "--timezone: the 1d record of machine cnc-01" in res.stderr, res.stderr
    assert "UTC+08:00" in res.stderr and "Traceback" not in res.stderr

    months = _calendar_records("1mo", "Europe/Berlin", [f"2023-{m:02d}-15" for m in range(1, 13)])
    path = _jsonl(tmp_path, months)
    out = tmp_path / "months.html"
    args = ("report", "--records", str(path), "--machine", "cnc-01", "--window", "1mo",
            "--timezone", "Europe/Berlin", "--period", "2023-10-01/2023-11-01",
            "--baseline", "2023-03-01/2023-04-01")
    res = edge_agent(*args, "--format", "json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    cur, base = report["current"], report["baseline"]
    assert (cur["windows"], cur["windows_expected"], cur["complete"]) == (1, 1, True)
    assert (base["windows"], base["windows_expected"], base["complete"]) == (1, 1, True)
    assert cur["expected_s"] == 745 * 3600 and base["expected_s"] == 743 * 3600
    assert (cur["start"], cur["end"]) == ("2023-09-30T22:00:00.000Z", "2023-10-31T23:00:00.000Z")
    october_cost = months[9].energy_cost
    assert october_cost is not None
    assert cur["energy_cost"] == pytest.approx(october_cost)
    assert cur["energy_cost_per_good_unit"] == pytest.approx(october_cost / months[9].parts_good)
    res = edge_agent(*args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "1mo" in out.read_text(encoding="utf-8")
