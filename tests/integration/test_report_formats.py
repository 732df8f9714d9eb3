"""The demonstration report as a person looks at it: HTML rendered by headless Chromium
(a screenshot that is not blank, the key figures in its DOM), the PDF's pages and text,
the workbook's and CSV's window sums against the JSON report, and the demo's own report.

Under CI (``CI=true``) a missing Chromium or poppler is a failure, not a skip.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from agent.reporting.fmt import value
from agent.reporting.pdf import chromium_command, find_chromium
from agent.services import ManagedInfluxd
from rules.types import KpiRecord, rfc3339_to_ms
from tests.helpers import hourly_record
from tests.helpers import run_cli as edge_agent

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
H = 3_600_000
DAY = 24 * H
BASE_DAY = rfc3339_to_ms("2025-03-03T00:00:00Z")
CURRENT_DAY = BASE_DAY + 14 * DAY
ARGS = ("--period", "2025-03-17/2025-03-18", "--baseline", "2025-03-03/2025-03-04",
        "--window", "1h")


def _need(tool: str | None, what: str) -> str:
    if tool is None:
        message = f"{what} is not installed (scripts/test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return tool


def _record(*args: Any) -> KpiRecord:
    return hourly_record(*args, observed_s=3600.0)


def plant() -> list[KpiRecord]:
    """Two machines of line-a (cnc-02 its output) on a baseline day and, two weeks later,
    a current day with fewer defects and a faster cycle; energy follows the parts made
    (3 kWh base load + 0.05 kWh a part), a little less of it per part in the current day."""
    rng = random.Random(11)
    out: list[KpiRecord] = []
    for day, defect, cycle, per_part in ((BASE_DAY, 0.03, 6.0, 0.05),
                                         (CURRENT_DAY, 0.012, 4.0, 0.045)):
        for hour in range(24):
            end = day + (hour + 1) * H
            parts: dict[str, tuple[int, int, float, float]] = {}
            load = rng.uniform(2000, 3400)  # the hour's orders keep both machines busy alike
            for machine in ("cnc-01", "cnc-02"):
                apt = load * rng.uniform(0.97, 1.03)
                pq = int(apt // (cycle * rng.uniform(0.95, 1.05)))
                sq = round(pq * defect)
                kwh = round(3 + per_part * pq + rng.uniform(-0.5, 0.5), 2)
                parts[machine] = (pq, sq, apt, kwh)
                out.append(_record("line-a", machine, end, pq, sq, apt, kwh, 3.5))
            pq, sq, apt, _ = parts["cnc-02"]
            line_kwh = round(sum(p[3] for p in parts.values()), 2)
            out.append(_record("line-a", None, end, pq, sq, apt, line_kwh, 3.5))
            out.append(_record(None, None, end, pq, sq, apt, line_kwh, None))
    return out


@pytest.fixture(scope="module")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("records") / "kpi.jsonl"
    path.write_text("".join(json.dumps(r.to_json_dict()) + "\n" for r in plant()))
    return path


@pytest.fixture(scope="module")
def line_json(records_file: Path) -> dict[str, Any]:
    res = edge_agent("report", "--records", str(records_file), "--line", "line-a", *ARGS,
                     "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit grey/RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (0, 2, 6), (depth, color)
    bpp = {0: 1, 2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def _grey_variance(rows: list[bytes], step: int = 7) -> tuple[float, int]:
    """Variance of the sampled pixels' first channel, and how many of them are dark."""
    samples = [row[i] for row in rows[::step] for i in range(0, len(row), step * 4)]
    mean = sum(samples) / len(samples)
    return sum((s - mean) ** 2 for s in samples) / len(samples), sum(s < 128 for s in samples)


def test_the_html_renders_in_chromium_with_its_figures(tmp_path: Path, records_file: Path,
                                                       line_json: dict[str, Any]) -> None:
    chromium = _need(find_chromium(), "chromium (Debian package chromium)")
    html = tmp_path / "line.html"
    res = edge_agent("report", "--records", str(records_file), "--line", "line-a", *ARGS,
                     "--lang", "zh", "--out", str(html))
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    # One self-contained file: nothing to fetch, no script.
    assert not re.search(r"<(script|link|img|iframe)\b", text)
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}
    shot = tmp_path / "shot.png"
    done = subprocess.run(chromium_command(chromium, tmp_path / "profile", "--hide-scrollbars",
                                           f"--screenshot={shot}", "--window-size=900,1400",
                                           html.as_uri()),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (900, 1400)
    variance, dark = _grey_variance(rows)
    assert variance > 100 and dark > 50, (variance, dark)  # text and lines, not a blank page
    dom = subprocess.run(chromium_command(chromium, tmp_path / "profile", "--dump-dom",
                                          html.as_uri()),
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    page = dom.stdout
    for name in ("不良品率", "设备综合效率 OEE", "生产周期（平均节拍）", "单位产品综合能耗",
                 "单位产品碳排放", "运营成本", "未计量", "能源基准", "2020 年目标"):
        assert name in page, name
    cur, base = line_json["current"], line_json["baseline"]
    for field in ("defect_rate", "oee", "cycle_time_mean_s", "kgce_per_good_unit"):
        for period in (cur, base):
            assert value(field, period[field], "zh") in page, (field, period[field])
    # Every chart is labelled: the scatter, 6 trends, 3 machine comparisons.
    assert page.count('role="img"') == page.count("<title id=") == 10


def test_the_pdf_has_its_pages_and_text(tmp_path: Path, records_file: Path,
                                        line_json: dict[str, Any]) -> None:
    _need(find_chromium(), "chromium (Debian package chromium)")
    pdfinfo = _need(shutil.which("pdfinfo"), "pdfinfo (Debian package poppler-utils)")
    pdftotext = _need(shutil.which("pdftotext"), "pdftotext (Debian package poppler-utils)")
    for lang, words in (("en", ("KPI report against the baseline", "Defect rate",
                                "Normalized saving", "not measured")),
                        ("zh", ("智能制造示范项目关键指标报告", "不良品率", "归一化节能量",
                                "未计量"))):
        pdf = tmp_path / f"line-{lang}.pdf"
        res = edge_agent("report", "--records", str(records_file), "--line", "line-a", *ARGS,
                         "--lang", lang, "--out", str(pdf))
        assert res.returncode == 0, res.stderr
        assert pdf.read_bytes()[:5] == b"%PDF-"
        info = subprocess.run([pdfinfo, str(pdf)], capture_output=True, text=True, check=True)
        pages = int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))  # type: ignore[union-attr]
        # A4, one section a page: verdicts; energy baseline; trends (two pages);
        # machines; coverage, targets and method; all figures with the trend data (two).
        assert pages == 8, info.stdout
        assert re.search(r"^Page size:.*\(A4\)", info.stdout, re.M), info.stdout
        text = subprocess.run([pdftotext, "-layout", str(pdf), "-"], capture_output=True,
                              text=True, check=True).stdout
        for word in words:
            assert word in text, (lang, word)
        assert value("defect_rate", line_json["current"]["defect_rate"], "en") in text


def _sums(rows: list[dict[str, Any]], period: str, scope: str) -> dict[str, float]:
    mine = [r for r in rows if r["period"] == period and r["scope"] == scope]
    out: dict[str, float] = {"windows": len(mine)}
    for name in ("parts_produced", "parts_good", "parts_scrap", "producing_time_s",
                 "planned_busy_time_s"):
        out[name] = sum(float(r[name]) for r in mine)
    out["energy_kwh"] = sum(float(r["energy_kwh"]) for r in mine if r["energy_kwh"] not in
                            (None, ""))
    return out


def _check_sums(rows: list[dict[str, Any]], report: dict[str, Any], scope: str) -> None:
    for period in ("current", "baseline"):
        got = _sums(rows, period, scope)
        for name, total in got.items():
            assert total == pytest.approx(report[period][name], rel=1e-12), (period, name)
        # ... and the rates follow from those sums.
        assert got["parts_scrap"] / got["parts_produced"] == pytest.approx(
            report[period]["defect_rate"], rel=1e-12)


def test_the_workbook_and_csv_add_up_to_the_json_report(tmp_path: Path, records_file: Path,
                                                         line_json: dict[str, Any]) -> None:
    openpyxl = pytest.importorskip("openpyxl") if not IN_CI else __import__("openpyxl")
    book_path = tmp_path / "line.xlsx"
    res = edge_agent("report", "--records", str(records_file), "--line", "line-a", *ARGS,
                     "--out", str(book_path))
    assert res.returncode == 0, res.stderr
    book = openpyxl.load_workbook(book_path, read_only=True)
    assert {"line line-a", "machine cnc-01", "machine cnc-02", "sums"} <= set(book.sheetnames)
    sheet = list(book["line line-a"].iter_rows(values_only=True))
    rows = [dict(zip(sheet[0], row, strict=True)) for row in sheet[1:]]
    assert len(rows) == 48
    _check_sums(rows, line_json, "line")
    sums = list(book["sums"].iter_rows(values_only=True))
    by_key = {(r[0], r[1], r[2]): dict(zip(sums[0], r, strict=True)) for r in sums[1:]}
    for part in line_json["parts"]:
        for period in ("current", "baseline"):
            got = by_key[(part["scope"], part["id"], period)]
            assert got["parts_produced"] == part[period]["parts_produced"]
            assert got["energy_kwh"] == pytest.approx(part[period]["energy_kwh"])
    # The CSV holds the same rows, every scope's.
    res = edge_agent("report", "--records", str(records_file), "--line", "line-a", *ARGS,
                     "--format", "csv")
    assert res.returncode == 0, res.stderr
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {r["id"] for r in table} == {"line-a", "cnc-01", "cnc-02"}
    _check_sums([r for r in table if r["id"] == "line-a"], line_json, "line")


def test_the_json_report_states_verdicts_and_the_energy_baseline(
        line_json: dict[str, Any]) -> None:
    verdicts = {v["kpi"]: v for v in line_json["verdicts"]}
    defect = verdicts["defect_rate"]
    assert defect["direction"] == "improved"  # 3 % -> 1.2 %: -60 %
    assert [(t["group"], t["status"]) for t in defect["targets"]] == [
        ("plan-2020", "met"), ("plan-2025", "met")]
    cycle = verdicts["cycle_time_mean_s"]
    assert cycle["direction"] == "improved" and cycle["relative"] < -0.3
    assert [t["status"] for t in verdicts["energy_cost_per_good_unit"]["targets"]] == [
        "not_measured", "not_measured"]
    assert line_json["change"]["oee"]["direction"] == "improved"
    assert line_json["reduction"]["oee"] < 0  # the old key keeps its old meaning
    energy = line_json["energy_baseline"]
    # The line's energy is both machines', its parts the output machine's: either driver
    # explains it, well enough to claim the saving.
    fit = energy["fits"][energy["driver"]]
    assert fit["points"] == 24 and fit["r2"] > 0.75
    assert fit["r2"] >= energy["fits"]["parts_produced"]["r2"]
    assert energy["saving"]["claimable"] is True and energy["saving"]["saving_kwh"] > 0
    assert [p["id"] for p in line_json["parts"]] == ["cnc-01", "cnc-02"]
    assert line_json["trend"]["bucket"] == "window" and len(line_json["trend"]["points"]) == 48


def test_a_targets_file_and_the_language_default(tmp_path: Path, records_file: Path) -> None:
    targets = tmp_path / "targets.toml"
    targets.write_text('[[target]]\nkpi = "kgce_per_good_unit"\nat_most = 0.0001\n'
                       'group = "plant 2025"\n')
    res = edge_agent("report", "--records", str(records_file), "--line", "line-a", *ARGS,
                     "--targets", str(targets), "--timezone", "Asia/Shanghai")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("关键指标报告：产线 line-a，1h 窗口")
    assert "plant 2025: 不高于 0.00010 kgce/件 -> 未达标" in res.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[target]]\nkpi = "kgce_per_good_unit"\nat_most = "low"\n')
    res = edge_agent("report", "--records", str(records_file), *ARGS, "--targets", str(bad))
    assert res.returncode == 2
    assert (f'{bad}: target[0] "kgce_per_good_unit": at_most: must be a number, not \'low\''
            in res.stderr), res.stderr
    res = edge_agent("report", "--records", str(records_file), *ARGS, "--format", "xlsx")
    assert res.returncode == 2 and "--out: --format xlsx writes a file" in res.stderr


def test_pdf_without_chromium_is_a_runtime_failure_naming_the_package(
        tmp_path: Path, records_file: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    res = edge_agent("report", "--records", str(records_file), *ARGS, "--out",
                     str(tmp_path / "r.pdf"), env={"PATH": str(empty)})
    assert res.returncode == 1, res.stderr
    assert "install the Debian package chromium" in res.stderr
    assert not (tmp_path / "r.pdf").exists() and "Traceback" not in res.stderr


def test_the_demo_writes_its_own_report(tmp_path: Path) -> None:
    res = edge_agent("demo", "--duration", "14", "--window", "3s", "--broker", "embedded",
                     "--state-dir", str(tmp_path / "state"))
    assert res.returncode == 0, res.stdout + res.stderr
    found = re.search(r"^Report: (\S+demo-report\.html)", res.stdout, re.M)
    assert found, res.stdout
    path = Path(found.group(1))
    assert path == (tmp_path / "state" / "demo-report.html").resolve()
    html = path.read_text()
    assert "<svg" in html and "line line-a" in html and "Targets and verdicts" in html


def test_from_influxdb_the_report_compares_the_same_machines(
        tmp_path: Path, records_file: Path, line_json: dict[str, Any],
        influxdb: ManagedInfluxd) -> None:
    import urllib.request

    from agent.ingest.points import record_to_point

    body = "\n".join(record_to_point(r).to_line_protocol() for r in plant()).encode()
    req = urllib.request.Request(
        f"{influxdb.url}/api/v2/write?bucket={influxdb.bucket}&precision=ms", data=body,
        headers={"Authorization": f"Token {influxdb.token}"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204
    ingest = tmp_path / "ingest.toml"
    ingest.write_text(f'[mqtt]\nhost = "127.0.0.1"\n\n[influxdb]\nurl = "{influxdb.url}"\n'
                      f'org = "-"\nbucket = "{influxdb.bucket}"\ntoken_env = "REPORT_TOKEN"\n')
    res = edge_agent("report", "--influx", str(ingest), "--line", "line-a", *ARGS,
                     "--format", "json", env={"REPORT_TOKEN": influxdb.token})
    assert res.returncode == 0, res.stderr
    from_db = json.loads(res.stdout)
    assert [p["id"] for p in from_db["parts"]] == ["cnc-01", "cnc-02"]
    for got, want in zip(from_db["parts"], line_json["parts"], strict=True):
        for period in ("current", "baseline"):
            for key, number in want[period].items():
                expected = None if number is None else pytest.approx(number, rel=1e-12)
                assert got[period][key] == expected, (key, period)
    assert from_db["verdicts"] == line_json["verdicts"]
