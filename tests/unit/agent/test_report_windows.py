"""The report reads windows as the engine cuts them: calendar windows in the site's zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agent.report import Period, ReportRequest, _from_row, build_report, check_window
from rules.errors import InputError
from rules.types import KpiRecord


def _row(end: datetime, window: str) -> dict[str, Any]:
    return {"site": "s", "line": "L1", "machine": "m1", "_time": end, "parts_produced": 10,
            "parts_good": 10, "planned_busy_time_s": 3600.0, "observed_s": 3600.0}


@pytest.mark.parametrize(("window", "zone", "end", "start"), [
    ("1h", "Asia/Shanghai", datetime(2024, 3, 1, 5, tzinfo=UTC), "2024-03-01T04:00:00"),
    ("1d", "Asia/Shanghai", datetime(2024, 3, 1, 16, tzinfo=UTC), "2024-02-29T16:00:00"),
    ("1w", "Europe/Berlin", datetime(2023, 10, 29, 23, tzinfo=UTC), "2023-10-22T22:00:00"),
    ("1mo", "Europe/Berlin", datetime(2023, 10, 31, 23, tzinfo=UTC), "2023-09-30T22:00:00"),
])
def test_a_point_read_back_starts_where_its_window_does(window: str, zone: str,
                                                        end: datetime, start: str) -> None:
    record = _from_row(_row(end, window), window, zone)
    got = datetime.fromtimestamp(record.window_start_ms / 1000, UTC)
    assert got.isoformat() == start + "+00:00"


def test_calendar_windows_are_report_windows() -> None:
    for window in ("1d", "1w", "1mo", "shift", "15m"):
        check_window(window)
    with pytest.raises(InputError, match="--window"):
        check_window("2mo")


def test_records_of_another_zone_are_refused_naming_the_offset() -> None:
    day = 86_400_000
    start = 19_782 * day - 8 * 3_600_000  # 2024-02-29 00:00 in Shanghai
    record = KpiRecord(site="s", line="L1", machine="m1", window="1d",
                       window_start_ms=start, window_end_ms=start + day, parts_produced=1)
    period = Period(start, start + day, "p")
    request = ReportRequest("1d", period, period, machine="m1")
    with pytest.raises(InputError, match=r"--timezone: .* UTC\+08:00"):
        build_report([record], request)
    ok = build_report([record], ReportRequest("1d", period, period, machine="m1",
                                              timezone="Asia/Shanghai"))
    assert (ok.current.windows, ok.current.windows_expected) == (1, 1)
