"""Time-of-use electricity prices: the exact cost of energy spread over an interval.

An interval's energy is spread uniformly over it (as for windows, :func:`rules.energy.share`),
so the cost of the part of an interval that falls in ``[a, b)`` is the energy share of
every tariff piece it overlaps times that piece's price, summed as exact fractions. The
periods are local times of day (``site.timezone``), chosen by the month of the local day
they fall in, so a DST day is priced by its wall clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from rules.energy import exact
from rules.spec import TARIFF_PERIODS, TariffSpec

_DAY_MIN = 24 * 60
_CACHE_DAYS = 64


def day_pieces(periods: tuple[tuple[time, time, str], ...]) -> list[tuple[int, int, str]]:
    """A season's periods as ``(start_min, end_min, period)`` pieces of one day, sorted;
    a period crossing midnight is two pieces. ValueError unless they tile the day."""
    pieces: list[tuple[int, int, str]] = []
    for start, end, period in periods:
        if period not in TARIFF_PERIODS:
            raise ValueError(f"period {period!r} is not one of {', '.join(TARIFF_PERIODS)}")
        lo = start.hour * 60 + start.minute
        hi = end.hour * 60 + end.minute
        if hi > lo:
            pieces.append((lo, hi, period))
        else:
            if hi > 0:
                pieces.append((0, hi, period))
            pieces.append((lo, _DAY_MIN, period))
    pieces.sort()
    at = 0
    for lo, hi, _ in pieces:
        if lo != at:
            what = "overlap" if lo < at else "leave a gap"
            raise ValueError(f"periods {what} at {at // 60:02d}:{at % 60:02d}: they must "
                             "cover the day exactly once")
        at = hi
    if at != _DAY_MIN:
        raise ValueError(f"periods leave a gap at {at // 60:02d}:{at % 60:02d}: they must "
                         "cover the day exactly once")
    return pieces


class TariffModel:
    """A :class:`TariffSpec` in one time zone, priced to exact fractions."""

    def __init__(self, spec: TariffSpec, timezone: str) -> None:
        self._tz = ZoneInfo(timezone)
        prices = {name: exact(value) for name, value in spec.prices}
        self._season: dict[int, list[tuple[int, int, Fraction]]] = {}
        for season in spec.seasons:
            pieces = day_pieces(season.periods)
            missing = sorted({p for _, _, p in pieces} - set(prices))
            if missing:
                raise ValueError(f"no price for period {', '.join(missing)}")
            for month in season.months:
                if month in self._season:
                    raise ValueError(f"month {month} is in two seasons")
                self._season[month] = [(lo, hi, prices[p]) for lo, hi, p in pieces]
        absent = [m for m in range(1, 13) if m not in self._season]
        if absent:
            raise ValueError(f"months {absent} are in no season")
        self._days: dict[date, list[tuple[int, int, Fraction]]] = {}

    def _local_ms(self, day: date, minute: int) -> int:
        if minute == _DAY_MIN:
            day, minute = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self._tz)
        return round(local.timestamp() * 1000)

    def _day(self, day: date) -> list[tuple[int, int, Fraction]]:
        """The day's pieces as UTC ``(start_ms, end_ms, price)``."""
        cached = self._days.get(day)
        if cached is None:
            if len(self._days) >= _CACHE_DAYS:
                self._days.clear()
            cached = [(self._local_ms(day, lo), self._local_ms(day, hi), price)
                      for lo, hi, price in self._season[day.month]]
            self._days[day] = cached
        return cached

    def _date(self, ts_ms: int) -> date:
        return datetime.fromtimestamp(ts_ms // 1000, tz=UTC).astimezone(self._tz).date()

    def priced_ms(self, lo: int, hi: int) -> Fraction:
        """The integral of the price over ``[lo, hi)`` in price x ms."""
        total = Fraction(0)
        if hi <= lo:
            return total
        day = self._date(lo)
        last = self._date(hi - 1)
        while day <= last:
            for start, end, price in self._day(day):
                overlap = min(end, hi) - max(start, lo)
                if overlap > 0:
                    total += price * overlap
            day += timedelta(days=1)
        return total

    def cost(self, quantity: Fraction | int, t1: int, t2: int, a: int, b: int) -> Fraction:
        """Cost of the part in ``[a, b)`` of ``quantity`` spread uniformly over ``[t1, t2)``."""
        lo = max(t1, a)
        hi = min(t2, b)
        if hi <= lo or quantity == 0 or t2 <= t1:
            return Fraction(0)
        return quantity * self.priced_ms(lo, hi) / (t2 - t1)
