"""The working calendar in ``agent.toml``: weekdays, dated exceptions, China's public
holidays and make-up days, named calendars for lines and machines, and what
``check-config`` says about the windows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

import agent.cli
from agent.config import load_agent_config
from agent.config.build import engine_spec
from agent.config.model import parse_days
from rules.errors import ConfigError
from rules.spec import EngineSpec

BASE = """
[site]
id = "s"
timezone = "Asia/Shanghai"
[kpi]
windows = ["1h", "1d", "1w", "1mo", "shift"]
[[lines]]
id = "L"
output_machine = "m1"
[[machines]]
id = "m1"
line = "L"
ideal_cycle_time_s = 10
"""
SHIFTS = """
[[calendar.shifts]]
name = "A"
days = ["mon-fri"]
start = "08:00"
end = "16:00"
"""

SIGNALS = """
[[sources]]
id = "plc"
type = "opcua"
url = "opc.tcp://127.0.0.1:4840"
[machines.signals.state]
source = "plc"
node = "ns=2;s=state"
[machines.signals.parts_total]
source = "plc"
node = "ns=2;s=total"
[machines.signals.parts_bad]
source = "plc"
node = "ns=2;s=bad"
"""


def _spec(tmp_path: Path, text: str) -> EngineSpec:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return engine_spec(load_agent_config(path, kpi_only=True))


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path, kpi_only=True)
    return [msg for _, msg in info.value.errors] + [f"{w}: {m}" for w, m in info.value.errors]


def test_weekdays_and_ranges() -> None:
    assert parse_days(["mon-fri"]) == {1, 2, 3, 4, 5}
    assert parse_days(["sat-mon"]) == {6, 7, 1}
    assert parse_days(["Sun", "wed"]) == {7, 3}
    assert parse_days(["mon-sun"]) == set(range(1, 8))


def test_no_days_means_every_day_as_before(tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE + '[[calendar.shifts]]\nname = "A"\nstart = "08:00"\n'
                 'end = "16:00"\n')
    assert spec.shifts[0].days == frozenset(range(1, 8))
    assert not spec.off_days and not spec.make_up_days and not spec.calendars


def test_dated_exceptions(tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE + """
[calendar]
off_days = ["2024-08-05..2024-08-07", 2024-12-31]
make_up_days = { "2024-08-10" = "fri" }
""" + SHIFTS)
    assert spec.off_days == {date(2024, 8, 5), date(2024, 8, 6), date(2024, 8, 7),
                             date(2024, 12, 31)}
    assert spec.make_up_days == ((date(2024, 8, 10), 5),)


def test_china_public_holidays_and_make_up_days(tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE + '[calendar]\npublic_holidays = "CN"\n' + SHIFTS)
    # Spring Festival 2024: off 10 to 17 February, Sundays 4 and 18 February worked.
    assert {date(2024, 2, d) for d in range(10, 17)} <= spec.off_days
    make_up = dict(spec.make_up_days)
    assert make_up[date(2024, 2, 4)] == make_up[date(2024, 2, 18)] == 1  # follow Monday
    assert date(2024, 10, 1) in spec.off_days and date(2024, 10, 12) in make_up
    assert date(2024, 2, 5) not in spec.off_days


def test_own_exceptions_win_over_public_holidays(tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE + """
[calendar]
public_holidays = "CN"
make_up_follows = "fri"
off_days = ["2024-02-18"]
make_up_days = { "2024-02-16" = "wed" }
""" + SHIFTS)
    make_up = dict(spec.make_up_days)
    assert date(2024, 2, 18) in spec.off_days and date(2024, 2, 18) not in make_up
    assert date(2024, 2, 16) not in spec.off_days and make_up[date(2024, 2, 16)] == 3
    assert make_up[date(2024, 2, 4)] == 5


def test_named_calendars_inherit_what_they_leave_out(tmp_path: Path) -> None:
    spec = _spec(tmp_path, BASE + """
[[machines]]
id = "m2"
line = "L"
ideal_cycle_time_s = 10
calendar = "nights"
[[machines]]
id = "m3"
line = "L2"
ideal_cycle_time_s = 10
[[lines]]
id = "L2"
output_machine = "m3"
calendar = "continuous"
[calendar]
off_days = ["2024-05-01"]
public_holidays = "CN"
[calendars.continuous]
shifts = []
public_holidays = "none"
[calendars.nights]
[[calendars.nights.shifts]]
name = "N"
start = "22:00"
end = "06:00"
days = ["sun-thu"]
""" + SHIFTS)
    assert [m.calendar for m in spec.machines] == [None, "nights", "continuous"]
    cont, nights = spec.calendars
    assert (cont.name, cont.shifts, cont.off_days) == ("continuous", (), {date(2024, 5, 1)})
    assert cont.make_up_days == ()
    assert nights.shifts[0].days == {7, 1, 2, 3, 4}
    assert date(2024, 10, 1) in nights.off_days  # the site's public holidays


@pytest.mark.parametrize(("extra", "want"), [
    ('[[calendar.shifts]]\nname = "A"\nstart = "08:00"\nend = "16:00"\ndays = ["mon-fry"]\n',
     "calendar.shifts[0] \"A\": 'fry' is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
    ('[[calendar.shifts]]\nname = "A"\nstart = "08:00"\nend = "16:00"\ndays = []\n',
     "days is empty"),
    ('[calendar]\noff_days = ["2024-02-30"]\n', "calendar.off_days: '2024-02-30' is not a date"),
    ('[calendar]\noff_days = ["2024-03-02..2024-03-01"]\n', "ends before it starts"),
    ('[calendar]\nmake_up_days = { "2024-03-02" = "fr" }\n',
     "calendar.make_up_days: 2024-03-02: 'fr' is not a weekday"),
    ('[calendar]\noff_days = ["2024-03-01..2024-03-03"]\nmake_up_days = { "2024-03-02" = "fri" }\n',
     "calendar: 2024-03-02 is both in off_days and in make_up_days"),
    ('[calendar]\npublic_holidays = "XX"\n',
     "calendar.public_holidays: the holidays package knows no country 'XX'"),
    ('[calendar]\npublic_holidays = "CN-XY"\n', "knows no 'CN-XY'"),
    ('[calendar]\nmake_up_days = { "2024-03-02" = "sat" }\n' + SHIFTS.replace(
        '"08:00"', '"09:00"'),
     "calendar.make_up_days.2024-03-02: no shift starts on 'sat'"),
    ('[[machines]]\nid = "m2"\nline = "L"\nideal_cycle_time_s = 1\ncalendar = "x"\n',
     'machines[1] "m2": calendar: calendar "x" is not defined (there is no '
     '[calendars.<name>] table)'),
    ('[calendars.a]\nshifts = []\n[[calendars.b.shifts]]\nname = "X"\nstart = "1:00"\n'
     'end = "2:00"\n', "calendars.b.shifts[0] \"X\": '1:00' is not a time of day"),
])
def test_calendar_errors_name_their_place(tmp_path: Path, extra: str, want: str) -> None:
    errors = _errors(tmp_path, BASE.replace(', "shift"', "") + extra)
    assert any(want in e for e in errors), errors


def test_check_config_explains_the_windows(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + SIGNALS + '[calendar]\npublic_holidays = "CN"\n' + SHIFTS)
    rc = agent.cli.main(["check-config", "-c", str(path), "--file-only"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "windows 1h, 1d, 1w, 1mo, shift (1h = fixed, aligned to the UTC epoch; " in out
    assert "1d = local days in Asia/Shanghai (00:00-00:00 +08:00)" in out
    assert "1w = ISO weeks in Asia/Shanghai (Monday 00:00 +08:00)" in out
    assert "calendar 1 shift, public holidays CN" in out
