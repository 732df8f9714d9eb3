"""The demonstration report without a browser: the translation table, trend buckets,
the self-contained HTML, text in both languages, JSON and CSV, and the PDF renderer's
error when Chromium is absent."""

from __future__ import annotations

import csv
import io
import json
import re
import string
from pathlib import Path

import pytest

from agent.report import Period, ReportRequest
from agent.reporting import build_demonstration, format_for, load_targets, render, write
from agent.reporting.errors import RendererError
from agent.reporting.i18n import _TEXT, CHINA_ZONES, Lang, default_lang, kpi_name, kpi_unit
from agent.reporting.pdf import html_to_pdf
from agent.reporting.svg import nice_ticks
from rules.errors import ConfigError, InputError
from rules.report import PERIOD_FIELDS
from rules.targets import DEFAULT_TARGETS, OPERATING_COST
from rules.types import KPI_FIELDS, KpiRecord

H = 3_600_000
T0 = 1_700_000_000_000 // H * H  # 2023-11-14, far in the past
DAY = 24 * H


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_text_has_both_languages_with_the_same_placeholders() -> None:
    for key, (en, zh) in _TEXT.items():
        assert en and zh, key
        assert _fields(en) == _fields(zh), key
    for name in (*PERIOD_FIELDS, OPERATING_COST):
        assert kpi_unit(name, "en") and kpi_unit(name, "zh"), name
    assert kpi_name("oee", "zh") == "设备综合效率 OEE"
    assert kpi_name("defect_rate", "zh") == "不良品率"
    assert kpi_name("kgce_per_good_unit", "zh") == "单位产品综合能耗"


@pytest.mark.parametrize("name", sorted({*KPI_FIELDS, *PERIOD_FIELDS, OPERATING_COST}))
def test_every_record_field_has_an_english_and_a_chinese_name(name: str) -> None:
    en, zh = kpi_name(name, "en"), kpi_name(name, "zh")
    assert en != name and zh != name and en != zh, name
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), zh


@pytest.mark.parametrize(("name", "zh"), [
    ("kgce", "综合能耗"), ("energy_cost", "能源成本"), ("rolled_throughput_yield", "直通率"),
    ("scrap_all_machines", "全线不良品数"), ("observed_s", "观测时长"),
    ("energy_cost_per_good_unit", "单位产品能源成本"), ("natural_gas_m3", "天然气"),
    ("steam_kg", "蒸汽"), ("water_m3", "水"), ("compressed_air_m3", "压缩空气")])
def test_recent_fields_have_their_standard_chinese_names(name: str, zh: str) -> None:
    assert zh in kpi_name(name, "zh")


@pytest.mark.parametrize(("zone", "lang"), [
    ("Asia/Shanghai", "zh"), ("Asia/Chongqing", "zh"), ("Asia/Harbin", "zh"),
    ("Asia/Urumqi", "zh"), ("PRC", "zh"), ("UTC", "en"), ("Europe/Berlin", "en"),
    ("Asia/Tokyo", "en")])
def test_the_language_follows_the_sites_zone(zone: str, lang: str) -> None:
    assert default_lang(zone) == lang
    assert ("Asia/Shanghai" in CHINA_ZONES) and len(CHINA_ZONES) >= 5


@pytest.mark.parametrize(("lo", "hi", "ticks"), [
    (0, 1, [0, 0.25, 0.5, 0.75, 1]), (0, 0.0225, [0, 0.01, 0.02, 0.03]),
    (0.6, 0.9, [0.6, 0.7, 0.8, 0.9]), (5, 5, [4.5, 4.75, 5, 5.25, 5.5]),
    (0, 100, [0, 25, 50, 75, 100])])
def test_axis_ticks_are_round_and_cover_the_data(lo: float, hi: float,
                                                 ticks: list[float]) -> None:
    assert nice_ticks(lo, hi) == pytest.approx(ticks)


def _rec(machine: str | None, line: str | None, end: int, pq: int, sq: int,
         kwh: float | None) -> KpiRecord:
    gq = pq - sq
    machine_rates = line is not None
    return KpiRecord(
        site="s1", line=line, machine=machine, window="1h", window_start_ms=end - H,
        window_end_ms=end, observed_s=3600.0, planned_busy_time_s=3600.0,
        producing_time_s=3000.0, idle_time_s=600.0, parts_produced=pq, parts_good=gq,
        parts_scrap=sq, ideal_cycle_time_s=5.0 if machine_rates else None,
        oee=5.0 * gq / 3600 if machine_rates else None, energy_kwh=kwh,
        co2_kg=None if kwh is None else kwh * 0.5306)


def _records(days: int) -> list[KpiRecord]:
    out: list[KpiRecord] = []
    for start, scrap in ((T0, 10), (T0 + 30 * DAY, 5)):
        for hour in range(days * 24):
            end = start + (hour + 1) * H
            pq = 500 + (hour * 37) % 100
            kwh = 4.0 + 0.05 * pq
            out += [_rec("m1", "L1", end, pq, scrap, kwh), _rec("m2", "L1", end, pq, scrap, kwh),
                    _rec(None, "L1", end, pq, scrap, 2 * kwh), _rec(None, None, end, pq, scrap,
                                                                   2 * kwh)]
    return out


def _request(days: int, line: str | None = "L1") -> ReportRequest:
    return ReportRequest(window="1h", current=Period(T0 + 30 * DAY, T0 + (30 + days) * DAY, "c"),
                         baseline=Period(T0, T0 + days * DAY, "b"), line=line)


@pytest.mark.parametrize(("days", "bucket", "points"), [(1, "window", 48), (3, "day", 8)])
def test_trend_points_follow_the_period_length(days: int, bucket: str, points: int) -> None:
    report = build_demonstration(_records(days), _request(days), timezone="Asia/Shanghai",
                                 lang="zh", targets=DEFAULT_TARGETS)
    assert report.bucket == bucket
    # Local (UTC+8) days: three UTC days touch four local ones in each period.
    assert len(report.buckets) == points
    assert sum(b.totals.windows for b in report.buckets) == days * 24 * 2
    assert [p.scope.id for p in report.parts] == ["m1", "m2"]


def test_the_html_is_one_self_contained_file_in_either_language() -> None:
    records = _records(1)
    cases: tuple[tuple[Lang, tuple[str, ...]], ...] = (
        ("en", ("Defect rate", "Plan 2020", "not measured", "improved")),
        ("zh", ("不良品率", "2020 年目标", "未计量", "改善")))
    for lang, words in cases:
        report = build_demonstration(records, _request(1), timezone="UTC", lang=lang,
                                     targets=DEFAULT_TARGETS)
        html = render(report, "html").decode()
        assert not re.search(r"<(script|link|img|iframe)\b|url\(|@import", html)
        assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
        assert "@page { size: A4" in html
        for word in words:
            assert word in html, (lang, word)
        assert html.count('role="img"') == html.count("<desc id=") == 10
        assert f'<html lang="{"zh-CN" if lang == "zh" else "en"}">' in html


def test_text_and_json_state_directions_and_verdicts() -> None:
    report = build_demonstration(_records(1), _request(1), timezone="UTC", lang="en",
                                 targets=DEFAULT_TARGETS)
    text = render(report, "text").decode()
    assert text.startswith("KPI report: line L1, 1h windows\n")
    assert "24 of 24 windows, 24.00 h of 24.00 h observed" in text
    assert re.search(r"Defect rate \(%\)\s+1\.83 %\s+0\.92 %\s+-50\.0 %\s+improved", text), text
    assert "Plan 2025: down 50 % vs baseline -> met" in text
    assert "Operating cost (energy cost per good unit)" in text and "not measured" in text
    data = json.loads(render(report, "json"))
    assert data["reduction"]["defect_rate"] == pytest.approx(0.5, abs=0.01)
    assert data["change"]["defect_rate"]["direction"] == "improved"
    assert data["energy_baseline"]["fits"]["parts_produced"]["r2"] == pytest.approx(1.0)
    zh = build_demonstration(_records(1), _request(1), timezone="UTC", lang="zh",
                             targets=DEFAULT_TARGETS)
    assert render(zh, "text").decode().startswith("关键指标报告：产线 L1，1h 窗口\n")


def test_csv_rows_are_the_windows_behind_the_sums(tmp_path: Path) -> None:
    report = build_demonstration(_records(1), _request(1, line=None), timezone="UTC",
                                 lang="en", targets=DEFAULT_TARGETS)
    out = tmp_path / "r.csv"
    write(report, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert {(r["scope"], r["id"]) for r in rows} == {("site", "s1"), ("line", "L1"),
                                                    ("machine", "m1"), ("machine", "m2")}
    site = [r for r in rows if r["scope"] == "site" and r["period"] == "current"]
    assert sum(int(r["parts_produced"]) for r in site) == \
        report.comparison.current.values["parts_produced"]
    assert not list(tmp_path.glob(".*partial"))


def test_formats_from_the_suffix_and_binary_formats_need_a_file() -> None:
    assert [format_for(Path(p)) for p in ("a.html", "b.PDF", "c.xlsx", "d.csv", "e.json",
                                          "f.txt", "g")] == [
        "html", "pdf", "xlsx", "csv", "json", "text", "text"]
    assert format_for(None) == "text"
    report = build_demonstration(_records(1), _request(1), timezone="UTC", lang="en",
                                 targets=DEFAULT_TARGETS)
    with pytest.raises(InputError, match="--out: --format pdf writes a file"):
        write(report, "pdf", None)


def test_a_targets_file_is_read_and_its_errors_name_the_file(tmp_path: Path) -> None:
    assert load_targets(None) == DEFAULT_TARGETS
    good = tmp_path / "t.toml"
    good.write_text('defaults = false\n[[target]]\nkpi = "oee"\nat_least = 0.85\n')
    assert [t.kpi for t in load_targets(good)] == ["oee"]
    with pytest.raises(InputError, match=r"--targets: .*missing\.toml: file not found"):
        load_targets(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[target]\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_targets(broken)


def test_pdf_without_chromium_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RendererError, match="install the Debian package chromium"):
        html_to_pdf("<html></html>")
