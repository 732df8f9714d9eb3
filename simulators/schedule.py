"""The shift calendar the simulated machines follow.

Separate from the machine model so its boundaries can be tested on their own: a
machine only asks "what kind of time is it" and "when does that next change", both in
integer epoch milliseconds so every transition lands on an exact instant.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from simulators.scenario import CalendarSpec, parse_hhmm

__all__ = ["Calendar", "CalendarState"]

CalendarState = Literal["scheduled", "break", "off"]

_DAY_MS = 86_400_000


class Calendar:
    """Answers which calendar state holds at an instant and when the next edge is.

    Three forms: always scheduled (no shifts), wall-clock shifts with breaks in a time
    zone, or a cyclic pattern aligned to the epoch (demos and tests).
    """

    def __init__(self, spec: CalendarSpec) -> None:
        self._spec = spec
        self._zone = ZoneInfo(spec.timezone)
        cyclic = spec.cyclic
        self._period_ms = round(cyclic.period_s * 1000) if cyclic else 0
        spans: list[tuple[int, int, CalendarState]] = []
        if cyclic:
            spans += [(round(a * 1000), round(b * 1000), "break") for a, b in cyclic.breaks]
            spans += [(round(a * 1000), round(b * 1000), "off") for a, b in cyclic.off]
        self._cyclic_spans = sorted(spans)
        self._cyclic_edges = sorted({edge for a, b, _ in spans for edge in (a, b)})
        self._day_cache: dict[date, list[tuple[int, int, list[tuple[int, int]]]]] = {}

    @property
    def always_scheduled(self) -> bool:
        """True when no calendar edges exist at all."""
        return not self._spec.shifts and not self._cyclic_spans

    def state_at(self, ts_ms: int) -> CalendarState:
        """Scheduled (working), planned break, or off (not scheduled) at ``ts_ms``."""
        if self._spec.cyclic is not None:
            if not self._cyclic_spans:
                return "scheduled"
            phase = ts_ms % self._period_ms
            for start, end, kind in self._cyclic_spans:
                if start <= phase < end:
                    return kind
            return "scheduled"
        if not self._spec.shifts:
            return "scheduled"
        for start, end, breaks in self._shifts_around(ts_ms):
            if start <= ts_ms < end:
                for b_start, b_end in breaks:
                    if b_start <= ts_ms < b_end:
                        return "break"
                return "scheduled"
        return "off"

    def next_edge(self, ts_ms: int) -> int | None:
        """The first instant strictly after ``ts_ms`` where the state may change."""
        if self._spec.cyclic is not None:
            if not self._cyclic_edges:
                return None
            base = ts_ms - ts_ms % self._period_ms
            phase = ts_ms - base
            for edge in self._cyclic_edges:
                if edge > phase:
                    return base + edge
            return base + self._period_ms + self._cyclic_edges[0]
        if not self._spec.shifts:
            return None
        edges = [
            edge
            for start, end, breaks in self._shifts_around(ts_ms)
            for edge in (start, end, *(e for b in breaks for e in b))
            if edge > ts_ms
        ]
        return min(edges) if edges else None

    def _shifts_around(self, ts_ms: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
        local_day = datetime.fromtimestamp(ts_ms / 1000, tz=self._zone).date()
        out: list[tuple[int, int, list[tuple[int, int]]]] = []
        for offset in (-1, 0, 1, 2):
            out += self._shifts_of(local_day + timedelta(days=offset))
        return out

    def _shifts_of(self, day: date) -> list[tuple[int, int, list[tuple[int, int]]]]:
        cached = self._day_cache.get(day)
        if cached is not None:
            return cached
        result: list[tuple[int, int, list[tuple[int, int]]]] = []
        for shift in self._spec.shifts:
            start = self._at(day, shift.start)
            end = self._at(day, shift.end)
            if end <= start:
                end = self._at(day + timedelta(days=1), shift.end)
            breaks: list[tuple[int, int]] = []
            for b_start_s, b_end_s in shift.breaks:
                b_start = self._at(day, b_start_s)
                if b_start < start:
                    b_start = self._at(day + timedelta(days=1), b_start_s)
                b_end = self._at(day, b_end_s)
                while b_end <= b_start:
                    b_end += _DAY_MS
                breaks.append((max(b_start, start), min(b_end, end)))
            result.append((start, end, breaks))
        if len(self._day_cache) > 64:
            self._day_cache.clear()
        self._day_cache[day] = result
        return result

    def _at(self, day: date, hhmm: str) -> int:
        hour, minute = parse_hhmm(hhmm)
        extra_day = 1 if hour == 24 else 0
        local = datetime(day.year, day.month, day.day, hour % 24, minute, tzinfo=self._zone)
        return round(local.timestamp() * 1000) + extra_day * _DAY_MS
