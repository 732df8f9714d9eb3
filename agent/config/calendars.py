"""Working calendars: the config's calendars resolved into the engine's plain dates.

The engine (``rules``) stays pure: it gets shifts, off days and make-up days as plain
values (:class:`rules.spec.CalendarSpec`). Public holidays come from the ``holidays``
package, chosen over ``chinese-calendar`` because it is released monthly, covers every
country (a site outside China gets its own holidays, subdivisions included) and exposes
China's make-up working days (调休) as a public attribute (``weekend_workdays``), where
``chinese-calendar`` covers China alone and raises for a year it has no data for. Either
knows a year's official schedule only once the State Council has published it (usually
in November) and a release has picked it up; until then ``holidays`` gives the
statutory days without the make-up days, so upgrade the package then, or list the
year's days in ``off_days`` and ``make_up_days``.

Precedence, from weakest to strongest: the weekly shifts, the public holidays (off days
and make-up days), the calendar's own ``off_days`` and ``make_up_days``. A named calendar
(``[calendars.<name>]``) takes every key it leaves out from the site's ``[calendar]``.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

from agent.config.model import AgentConfig, CalendarSection, parse_weekday
from rules.spec import CalendarSpec, ShiftSpec

HOLIDAY_YEARS = range(2000, 2061)
"""The years public holidays are resolved for: the engine sees plain dates, so the set is
fixed when the config is loaded."""

_INHERITED = ("shifts", "off_days", "make_up_days", "public_holidays", "make_up_follows")


def effective(cfg: AgentConfig, name: str | None) -> CalendarSection:
    """The site's calendar (``name`` None) or a named one with the site's keys filled in."""
    if name is None:
        return cfg.calendar
    own = cfg.calendars[name]
    return cfg.calendar.model_copy(
        update={key: getattr(own, key) for key in _INHERITED if key in own.model_fields_set})


@lru_cache(maxsize=8)
def public_days(code: str) -> tuple[frozenset[date], frozenset[date]]:
    """``(holidays, make-up working days)`` of country ``code`` (``"CN"``, ``"DE-BY"``)
    over :data:`HOLIDAY_YEARS`.

    Raises ValueError naming what is wrong: the package missing, an unknown country or
    subdivision.
    """
    try:
        import holidays
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ValueError("public holidays need the 'holidays' package "
                         "(pip install holidays)") from err
    country, _, subdiv = code.partition("-")
    try:
        found = holidays.country_holidays(country.upper(), subdiv=subdiv.upper() or None,
                                          years=HOLIDAY_YEARS)
    except NotImplementedError as err:  # an unknown country or subdivision
        what = (f"country {country!r} (use an ISO 3166 code such as 'CN')" if not subdiv
                else f"{code!r} (a subdivision is written like 'DE-BY')")
        raise ValueError(f"the holidays package knows no {what}: {err}") from err
    off = frozenset(found.keys())
    make_up = frozenset(d for d in found.weekend_workdays if d not in off)
    return off, make_up


def calendar_spec(section: CalendarSection, name: str = "") -> CalendarSpec:
    """One resolved calendar: weekly shifts, then public holidays, then own exceptions."""
    shifts = []
    for s in section.shifts:
        start, end, breaks = s.times()
        shifts.append(ShiftSpec(s.name, start, end, breaks, s.weekdays()))
    off: set[date] = set()
    make_up: dict[date, int] = {}
    code = section.public_holidays
    if code is not None and code.lower() != "none":
        public_off, public_make_up = public_days(code)
        follows = parse_weekday(section.make_up_follows)
        off.update(public_off)
        make_up.update(dict.fromkeys(public_make_up, follows))
    own_off = section.off_dates()
    own_make_up = section.make_up_dates()
    for day in own_off:
        make_up.pop(day, None)
    off.update(own_off)
    off.difference_update(own_make_up)
    make_up.update(own_make_up)
    return CalendarSpec(name, tuple(shifts), frozenset(off), tuple(sorted(make_up.items())))


def machine_calendars(cfg: AgentConfig) -> dict[str, str | None]:
    """Per machine id, the named calendar it follows (its own, else its line's), None for
    the site's."""
    lines = {ln.id: ln.calendar for ln in cfg.lines}
    return {m.id: m.calendar if m.calendar is not None else lines.get(m.line)
            for m in cfg.machines}


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe(cfg: AgentConfig) -> str:
    """The calendars in a few words, for ``check-config``."""
    cal = cfg.calendar
    parts = [_count(len(cal.shifts), "shift") if cal.shifts else "every hour"]
    if cal.public_holidays is not None and cal.public_holidays.lower() != "none":
        parts.append(f"public holidays {cal.public_holidays.upper()}")
    if cal.off_days:
        parts.append(_count(len(cal.off_dates()), "off day"))
    if cal.make_up_days:
        parts.append(_count(len(cal.make_up_days), "make-up day"))
    if cfg.calendars:
        parts.append(f"named {', '.join(sorted(cfg.calendars))}")
    return "calendar " + ", ".join(parts)
