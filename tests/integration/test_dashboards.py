"""Every Flux query of the provisioned Grafana dashboards runs against a real InfluxDB.

The test InfluxDB is 1.8.10 with Flux enabled (Flux 0.65, older than the 2.x the
dashboards are meant for), so a query that runs here uses nothing newer. Sample KPI
points are written exactly as the ingest writes them (``record_to_point``): machines with
and without a meter, line and site records, two KPI windows, undefined ratios left out and
flags; a second site, and the first site's baseline period one week earlier; agent
status points as the ingest writes them (``status_to_point``). Grafana's variables are
replaced by concrete values, as Grafana would, for "All" and for single, regex-escaped
selections, and the time range by RFC 3339 literals. Each query must answer without error
and with rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.ingest.points import InfluxPoint, record_to_point, status_to_point
from agent.ingest.schema import StatusMessage
from agent.services import ManagedInfluxd
from rules.errors import ServiceError
from rules.types import KpiRecord

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
SITE = "hb-sjz-01"
OTHER_SITE = "hb-bd-02"
WEEK_MS = 7 * 86_400_000
WINDOW_MS = 15 * 60_000
KGCE_PER_KWH = 0.1229
GRID = 0.5306


def _record(line: str | None, machine: str | None, window: str, end_ms: int, *,
            pbt: float, pt: float, pq: int, sq: int, ideal: float | None,
            energy: float | None, flags: tuple[str, ...] = (), site: str = SITE) -> KpiRecord:
    """A consistent record: the ratios follow from the times and counts (docs/kpi.md)."""
    gq = pq - sq
    schedule = pbt > 0 and ideal is not None
    kwh_fields: dict[str, Any] = {}
    if energy is not None:
        kwh_fields = {
            "energy_kwh": energy,
            "energy_per_unit_kwh": energy / pq if pq else None,
            "energy_per_good_unit_kwh": energy / gq if gq else None,
            "kgce": KGCE_PER_KWH * energy,
            "kgce_per_good_unit": KGCE_PER_KWH * energy / gq if gq else None,
            "co2_kg": GRID * energy,
            "co2_per_good_unit_kg": GRID * energy / gq if gq else None,
        }
    length_ms = WINDOW_MS if window == "15m" else 3_600_000
    return KpiRecord(
        site=site, line=line, machine=machine, window=window,
        window_start_ms=end_ms - length_ms, window_end_ms=end_ms,
        planned_busy_time_s=pbt, producing_time_s=pt, idle_time_s=pbt - pt,
        parts_produced=pq, parts_good=gq, parts_scrap=sq,
        availability=pt / pbt if schedule else None,
        performance=(ideal * pq / pt if ideal is not None and pt else None) if schedule else None,
        quality_ratio=gq / pq if schedule and pq else None,
        oee=ideal * gq / pbt if schedule and ideal is not None else None,
        defect_rate=sq / pq if schedule and pq else None,
        cycle_time_mean_s=pt / pq if schedule and pq else None,
        ideal_cycle_time_s=ideal,
        flags=flags if energy is not None else (*flags, "no_energy_data"),
        **kwh_fields,
    )


def sample_records(now_ms: int, site: str = SITE, *, scrap: int = 0,
                   energy_scale: float = 1.0) -> list[KpiRecord]:
    """Eight 15-minute windows and two hourly windows of a two-line site; ``scrap`` more
    scrap parts per output machine and window, energy times ``energy_scale``."""
    records: list[KpiRecord] = []
    last_end = now_ms // WINDOW_MS * WINDOW_MS
    for i in range(8):
        end = last_end - i * WINDOW_MS
        idle_window = i == 3  # nothing planned: schedule ratios undefined
        pbt = 0.0 if idle_window else 900.0
        c1: dict[str, Any] = dict(pbt=pbt, pt=0.0 if idle_window else 720.0,
                                  pq=0 if idle_window else 14, sq=0 if idle_window else 1,
                                  ideal=45.0)
        more = 0 if idle_window else scrap
        c2: dict[str, Any] = dict(pbt=pbt, pt=0.0 if idle_window else 810.0,
                                  pq=0 if idle_window else 15, sq=more, ideal=50.0)
        c3: dict[str, Any] = dict(pbt=pbt, pt=0.0 if idle_window else 600.0,
                                  pq=0 if idle_window else 20,
                                  sq=0 if idle_window else 2 + more, ideal=25.0)
        flags = ("incomplete",) if i == 5 else ()
        e1, e3, e_line_b = (energy_scale * e for e in (1.5 + 0.1 * i, 2.0, 0.5))
        records += [
            _record("line-a", "cnc-01", "15m", end, energy=e1, flags=flags, site=site, **c1),
            _record("line-a", "cnc-02", "15m", end, energy=None, site=site, **c2),  # no meter
            _record("line-b", "cnc-03", "15m", end, energy=e3, site=site, **c3),
            # line records: the output machine's counts, the line's energy
            _record("line-a", None, "15m", end, energy=e1, flags=flags, site=site, **c2),
            _record("line-b", None, "15m", end, energy=e3 + e_line_b, site=site, **c3),
        ]
        records.append(_record(
            None, None, "15m", end, pbt=2 * pbt, pt=c2["pt"] + c3["pt"],
            pq=c2["pq"] + c3["pq"], sq=c2["sq"] + c3["sq"], ideal=None,
            energy=e1 + e3 + e_line_b, site=site))
    for j in range(2):
        end = now_ms // 3_600_000 * 3_600_000 - j * 3_600_000
        records += [
            _record("line-a", "cnc-01", "1h", end, pbt=3600, pt=3000, pq=60, sq=3, ideal=45.0,
                    energy=6.0, site=site),
            _record("line-a", None, "1h", end, pbt=3600, pt=3300, pq=62, sq=0, ideal=50.0,
                    energy=6.0, site=site),
            _record(None, None, "1h", end, pbt=3600, pt=3300, pq=62, sq=0, ideal=None,
                    energy=6.0, site=site),
        ]
    return records


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def status_points(now_ms: int) -> list[InfluxPoint]:
    """Three agents: one died (its Last Will), one online, one that died and came back."""
    minute = 60_000

    def status(site: str, agent: str, state: str, at_ms: int, reason: str | None = None,
               version: str = "1.4.0") -> InfluxPoint:
        message = StatusMessage(agent_id=agent, state="online" if state == "online"
                                else "offline", version=version, started_ms=now_ms - 3_600_000,
                                uptime_s=60.0 if state == "online" else None,
                                outbox_depth=0 if state == "online" else None, reason=reason)
        return status_to_point(site, message, at_ms)

    return [
        status(SITE, "edge-1", "online", now_ms - 10 * minute, version="1.3.9"),
        status(SITE, "edge-1", "offline", now_ms - 5 * minute, "connection lost",
               version="1.3.9"),
        status(SITE, "edge-2", "online", now_ms - minute),
        status("hb-bd-02", "edge-9", "offline", now_ms - 20 * minute, "shutdown"),
        status("hb-bd-02", "edge-9", "online", now_ms - 2 * minute),
    ]


def write_records(influxdb: ManagedInfluxd, records: list[KpiRecord],
                  extra: Sequence[InfluxPoint] = ()) -> None:
    body = "\n".join([*(record_to_point(r).to_line_protocol() for r in records),
                      *(p.to_line_protocol() for p in extra)]).encode()
    status, text = _post(
        f"{influxdb.url}/api/v2/write?bucket={influxdb.bucket}&precision=ms", body,
        {"Authorization": f"Token {influxdb.token}", "Content-Type": "text/plain"})
    assert status == 204, text


def run_flux(influxdb: ManagedInfluxd, query: str) -> list[dict[str, str]]:
    """Rows of a Flux query (annotated CSV); fails on any error the server reports."""
    status, text = _post(f"{influxdb.url}/api/v2/query", query.encode(), {
        "Authorization": f"Token {influxdb.token}",
        "Accept": "application/csv",
        "Content-Type": "application/vnd.flux",
    })
    assert status == 200, f"HTTP {status}: {text}\n--- query:\n{query}"
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or row[0].startswith("#"):
            header = None if not row else header
            continue
        if header is None:
            header = row
            assert "error" not in header, f"{text}\n--- query:\n{query}"
            continue
        rows.append(dict(zip(header, row, strict=False)))
    return rows


def _rfc3339(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def substitute(query: str, *, bucket: str, line: str, machine: str, window: str = "15m",
               site: str = re.escape(SITE), offset: str = "7d") -> str:
    """What Grafana sends: variables replaced, the time range (six hours up to a minute
    after the newest record: the same for every query, so that their display intervals
    line up) as RFC 3339 literals and the interval filled in."""
    stop_ms = NOW_MS + 60_000
    values = {
        "${bucket}": bucket, "${site:regex}": site, "${window}": window,
        "${line:regex}": line, "${machine:regex}": machine, "${baseline_offset}": offset,
        "v.timeRangeStart": _rfc3339(stop_ms - 6 * 3_600_000),
        "v.timeRangeStop": _rfc3339(stop_ms), "v.windowPeriod": "15m",
    }
    for key, value in values.items():
        query = query.replace(key, value)
    left = re.findall(r"\$\{?\w+|v\.\w+", query)
    assert not left, f"unsubstituted variables {left} in:\n{query}"
    return query


def dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        yield path.name, json.loads(path.read_text())


def queries() -> list[tuple[str, str]]:
    """(where, Flux) of every panel target and every query variable."""
    out: list[tuple[str, str]] = []
    for name, board in dashboards():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{name}: variable {var['name']}", var["query"]))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{name}: {panel['title']} {target['refId']}", target["query"]))
    return out


NOW_MS = int(time.time() * 1000) - 60_000
SAMPLE = sample_records(NOW_MS)
# the same site one week earlier, one more scrap part per output machine and window
BASELINE = sample_records(NOW_MS - WEEK_MS, scrap=1)
# a second site: more scrap (lower OEE, higher defect rate) but half the energy
OTHER = sample_records(NOW_MS, OTHER_SITE, scrap=3, energy_scale=0.5)
STATUS = status_points(NOW_MS)


@pytest.fixture(scope="module")
def kpi_influxdb() -> Iterator[ManagedInfluxd]:
    """One InfluxDB with the sample records for the whole module (the queries only read)."""
    server = ManagedInfluxd()
    try:
        server.start()
    except ServiceError as err:
        server.close()
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"influxd unavailable: {err}")
        pytest.skip(f"influxd unavailable: {err}")
    try:
        write_records(server, [*SAMPLE, *BASELINE, *OTHER], STATUS)
        yield server
    finally:
        server.close()


def _run_all(influxdb: ManagedInfluxd, todo: list[tuple[str, str]], line: str,
             machine: str, site: str) -> list[str]:
    failures: list[str] = []
    for where, flux in todo:
        query = substitute(flux, bucket=influxdb.bucket, line=line, machine=machine, site=site)
        try:
            rows = run_flux(influxdb, query)
        except AssertionError as err:
            failures.append(f"{where} [{line}/{machine}]: {err}")
            continue
        if not rows:
            failures.append(f"{where} [{line}/{machine}]: no rows")
    return failures


def test_every_dashboard_query_runs_and_returns_rows(kpi_influxdb: ManagedInfluxd) -> None:
    # "All": Grafana's custom all value of the site, line and machine variables.
    all_queries = queries()
    assert len(all_queries) > 40
    failures = _run_all(kpi_influxdb, all_queries, ".*", ".*", ".*")
    assert not failures, "\n\n".join(failures)


def test_single_selections_work_as_grafana_escapes_them(kpi_influxdb: ManagedInfluxd) -> None:
    # One line and one machine, regex-escaped as Grafana's :regex format renders them; one
    # query for each distinct way the variables are used is enough.
    seen: set[str] = set()
    todo = []
    for where, flux in queries():
        uses = "\n".join(ln for ln in flux.splitlines() if ":regex}" in ln)
        if uses and uses not in seen:
            seen.add(uses)
            todo.append((where, flux))
    assert len(todo) >= 3
    failures = _run_all(kpi_influxdb, todo, r"line\-a", r"cnc\-01", r"hb\-sjz\-01")
    assert not failures, "\n\n".join(failures)


def _panel_query(board: str, title: str, ref: str = "A") -> str:
    for name, dash in dashboards():
        if name != board:
            continue
        for panel in dash["panels"]:
            if panel["title"] == title:
                for target in panel["targets"]:
                    if target["refId"] == ref:
                        return str(target["query"])
    raise AssertionError(f"{board}: no panel {title!r} {ref}")


def test_ratios_are_recomputed_from_sums_not_averaged(kpi_influxdb: ManagedInfluxd) -> None:
    records = [r for r in SAMPLE if r.window == "15m"]
    lines = [r for r in records if r.line is not None and r.machine is None]
    ideal_good = sum((r.ideal_cycle_time_s or 0) * r.parts_good for r in lines)
    expected_oee = ideal_good / sum(r.planned_busy_time_s for r in lines)
    query = substitute(_panel_query("intelligent-workshop.json", "OEE"),
                       bucket=kpi_influxdb.bucket, line=".*", machine=".*")
    rows = run_flux(kpi_influxdb, query)
    assert len(rows) == 1
    assert float(rows[0]["oee"]) == pytest.approx(expected_oee)

    site = [r for r in records if r.line is None]
    energy = sum(r.energy_kwh or 0 for r in site)
    good = sum(r.parts_good for r in site)
    query = substitute(_panel_query("green-factory.json", "Standard coal per good unit"),
                       bucket=kpi_influxdb.bucket, line=".*", machine=".*")
    rows = run_flux(kpi_influxdb, query)
    assert len(rows) == 1
    assert float(rows[0]["kgce_per_good_unit"]) == pytest.approx(KGCE_PER_KWH * energy / good)


def test_machine_without_meter_is_left_out_of_energy_intensity(
        kpi_influxdb: ManagedInfluxd) -> None:
    query = substitute(_panel_query("green-factory.json", "Totals by machine", "E"),
                       bucket=kpi_influxdb.bucket, line=".*", machine=".*")
    machines = {row["machine"] for row in run_flux(kpi_influxdb, query)}
    assert machines == {"cnc-01", "cnc-03"}


def test_agents_offline_lists_exactly_the_agents_whose_latest_status_is_offline(
        kpi_influxdb: ManagedInfluxd) -> None:
    query = substitute(_panel_query("intelligent-workshop.json", "Agents offline (all sites)"),
                       bucket=kpi_influxdb.bucket, line=".*", machine=".*")
    rows = run_flux(kpi_influxdb, query)
    assert [(r["site"], r["agent"], r["reason"], r["version"]) for r in rows] == [
        (SITE, "edge-1", "connection lost", "1.3.9")]
    online = next(p for p in STATUS if p.tags["agent"] == "edge-1" and
                  p.fields["state"] == "online")
    assert rows[0]["last_seen"] == online.fields["last_seen"]


def _line_oee(records: Sequence[KpiRecord], site: str) -> float:
    """OEE of a site's lines from sums: ideal cycle time x good parts / planned busy time."""
    lines = [r for r in records if r.site == site and r.window == "15m"
             and r.line is not None and r.machine is None]
    ideal_good = sum((r.ideal_cycle_time_s or 0) * r.parts_good for r in lines)
    return ideal_good / sum(r.planned_busy_time_s for r in lines)


def _site_sums(records: Sequence[KpiRecord], site: str) -> tuple[float, float]:
    """(defect rate, kgce per good unit) of a site's site records, from sums."""
    sites = [r for r in records if r.site == site and r.window == "15m" and r.line is None]
    defect = sum(r.parts_scrap for r in sites) / sum(r.parts_produced for r in sites)
    with_kgce = [r for r in sites if r.kgce is not None]
    kgce = sum(r.kgce or 0 for r in with_kgce) / sum(r.parts_good for r in with_kgce)
    return defect, kgce


def _value(rows: list[dict[str, str]], column: str) -> float:
    assert len(rows) == 1, rows
    return float(rows[0][column])


def test_baseline_series_return_the_baseline_periods_values(
        kpi_influxdb: ManagedInfluxd) -> None:
    def run(board: str, title: str, ref: str) -> list[dict[str, str]]:
        return run_flux(kpi_influxdb, substitute(_panel_query(board, title, ref),
                                                 bucket=kpi_influxdb.bucket, line=".*",
                                                 machine=".*"))

    workshop, green = "intelligent-workshop.json", "green-factory.json"
    current, baseline = _line_oee(SAMPLE, SITE), _line_oee(BASELINE, SITE)
    assert current != pytest.approx(baseline)
    assert _value(run(workshop, "OEE", "A"), "oee") == pytest.approx(current)
    assert _value(run(workshop, "OEE", "B"), "oee_baseline") == pytest.approx(baseline)
    defect, kgce = _site_sums(BASELINE, SITE)
    assert _value(run(workshop, "Defect rate", "B"), "defect_rate_baseline") == \
        pytest.approx(defect)
    assert _value(run(green, "Standard coal per good unit", "B"),
                  "kgce_per_good_unit_baseline") == pytest.approx(kgce)

    # The time-shifted series lies on the current period: same points, baseline values.
    now_rows = run(workshop, "Line OEE", "A")
    base_rows = run(workshop, "Line OEE", "B")
    assert {(r["_time"], r["line"]) for r in base_rows} == \
        {(r["_time"], r["line"]) for r in now_rows}
    lines = [r for r in BASELINE if r.window == "15m" and r.line == "line-b"
             and r.machine is None and r.oee is not None]
    # aggregateWindow labels a display interval by its end, so compare in time order
    expected = [r.oee for r in sorted(lines, key=lambda r: r.window_end_ms)]
    got = [float(r["oee_baseline"]) for r in sorted(base_rows, key=lambda r: r["_time"])
           if r["line"] == "line-b"]
    assert got == pytest.approx(expected)


def test_baseline_queries_accept_every_offset_of_the_variable(
        kpi_influxdb: ManagedInfluxd) -> None:
    offsets = set()
    shifted = [(where, flux) for where, flux in queries() if "${baseline_offset}" in flux]
    assert len(shifted) >= 7
    for _, board in dashboards():
        var = next(v for v in board["templating"]["list"] if v["name"] == "baseline_offset")
        offsets |= {o["value"] for o in var["options"]}
    assert offsets == {"7d", "28d", "1y"}
    for offset in sorted(offsets):
        for where, flux in shifted:
            query = substitute(flux, bucket=kpi_influxdb.bucket, line=".*", machine=".*",
                               offset=offset)
            try:
                run_flux(kpi_influxdb, query)  # no data that far back: no rows, no error
            except AssertionError as err:
                pytest.fail(f"{where} [{offset}]: {err}")


@pytest.mark.parametrize("site", [".*", rf"({re.escape(SITE)}|{re.escape(OTHER_SITE)})"],
                         ids=["all", "two-selected"])
def test_site_ranking_orders_the_sites_by_each_kpi(kpi_influxdb: ManagedInfluxd,
                                                   site: str) -> None:
    def ranked(ref: str, column: str) -> list[tuple[str, float]]:
        query = substitute(_panel_query("intelligent-workshop.json", "Site ranking", ref),
                           bucket=kpi_influxdb.bucket, line=".*", machine=".*", site=site)
        return [(r["site"], float(r[column])) for r in run_flux(kpi_influxdb, query)]

    records = [*SAMPLE, *OTHER]
    oee = {s: _line_oee(records, s) for s in (SITE, OTHER_SITE)}
    sums = {s: _site_sums(records, s) for s in (SITE, OTHER_SITE)}
    # the sample is built so that the order differs between the KPIs
    assert oee[SITE] > oee[OTHER_SITE]
    assert sums[SITE][0] < sums[OTHER_SITE][0] and sums[SITE][1] > sums[OTHER_SITE][1]

    got = ranked("A", "oee")  # best (highest) first
    assert [s for s, _ in got] == [SITE, OTHER_SITE]
    assert dict(got) == pytest.approx(oee)
    got = ranked("B", "defect_rate")  # best (lowest) first
    assert [s for s, _ in got] == [SITE, OTHER_SITE]
    assert dict(got) == pytest.approx({s: v[0] for s, v in sums.items()})
    got = ranked("C", "kgce_per_good_unit")
    assert [s for s, _ in got] == [OTHER_SITE, SITE]
    assert dict(got) == pytest.approx({s: v[1] for s, v in sums.items()})


def test_agents_overview_counts_and_lists_every_agent(kpi_influxdb: ManagedInfluxd) -> None:
    def run(title: str, ref: str = "A") -> list[dict[str, str]]:
        return run_flux(kpi_influxdb, substitute(
            _panel_query("intelligent-workshop.json", title, ref), bucket=kpi_influxdb.bucket,
            line=".*", machine=".*"))

    assert _value(run("Agents online / offline", "A"), "online") == 2
    assert _value(run("Agents online / offline", "B"), "offline") == 1
    rows = run("Agents (all sites)")
    assert [(r["site"], r["agent"], r["state"]) for r in rows] == [
        (OTHER_SITE, "edge-9", "online"), (SITE, "edge-1", "offline"), (SITE, "edge-2", "online")]
    last = {p.tags["agent"]: p.fields["last_seen"] for p in STATUS if "last_seen" in p.fields}
    assert {r["agent"]: r["last_seen"] for r in rows} == last
