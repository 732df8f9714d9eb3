"""The shift calendar: site-local shift times turned into UTC epoch-millisecond intervals.

Shifts are written in the site's wall-clock time (``Asia/Shanghai``, ``Europe/Berlin``),
so their length in real time changes on DST nights: a 22:00-06:00 night shift in Berlin
lasts 7 h on the last Sunday of March and 9 h on the last Sunday of October. Local times
are resolved with :mod:`zoneinfo` and PEP 495 ``fold=0``: an ambiguous time (the repeated
hour in autumn) is its first occurrence, a non-existent time (the skipped hour in spring)
is read with the offset in force before the jump, i.e. it lands just after the gap.

A shift whose ``end <= start`` ends on the next day. A break belongs to the shift that
contains it: a break time earlier than the shift's start is on the next local day, and a
break is clipped to its shift.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rules.spec import ShiftSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_CACHE_DAYS = 32


def local_to_ms(day: date, at: time, zone: ZoneInfo) -> int:
    """Epoch milliseconds of wall-clock ``at`` on ``day`` in ``zone`` (``fold=0``)."""
    delta = datetime.combine(day, at.replace(tzinfo=None), tzinfo=zone) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_local_date(ts_ms: int, zone: ZoneInfo) -> date:
    """The site-local calendar date at epoch milliseconds ``ts_ms``."""
    return datetime.fromtimestamp(ts_ms // 1000, tz=zone).date()


@dataclass(frozen=True, slots=True)
class ShiftOccurrence:
    """One shift on one local date, as a half-open UTC interval with its breaks."""

    name: str
    day: date
    start_ms: int
    end_ms: int
    breaks: tuple[tuple[int, int], ...]

    def contains(self, ts_ms: int) -> bool:
        """True when ``ts_ms`` lies in ``[start_ms, end_ms)``."""
        return self.start_ms <= ts_ms < self.end_ms

    def in_break(self, ts_ms: int) -> bool:
        """True when ``ts_ms`` lies in one of this shift's breaks."""
        return any(a <= ts_ms < b for a, b in self.breaks)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time over which the calendar does not change.

    ``scheduled`` is True inside some shift (so the time is POT); ``in_break`` is True
    when it is planned break time (PDOT whatever the machine's state); ``shifts`` are the
    occurrences that contain the segment (the ``shift`` windows it belongs to).
    """

    start_ms: int
    end_ms: int
    scheduled: bool
    in_break: bool
    shifts: tuple[ShiftOccurrence, ...]


class ShiftCalendar:
    """Answers "which shifts and breaks cover this instant" for an unbounded time line.

    Occurrences are computed per local date on demand and cached (a bounded cache, so
    memory stays flat however long the engine runs).
    """

    def __init__(self, shifts: tuple[ShiftSpec, ...], timezone: str) -> None:
        self.shifts = shifts
        self.zone = ZoneInfo(timezone)
        self._by_day: dict[int, tuple[ShiftOccurrence, ...]] = {}

    def occurrences_on(self, day: date) -> tuple[ShiftOccurrence, ...]:
        """Every shift that starts on local date ``day``."""
        key = day.toordinal()
        found = self._by_day.get(key)
        if found is not None:
            return found
        if len(self._by_day) >= _CACHE_DAYS:
            self._by_day.clear()
        made = tuple(self._occurrence(spec, day) for spec in self.shifts)
        self._by_day[key] = made
        return made

    def _occurrence(self, spec: ShiftSpec, day: date) -> ShiftOccurrence:
        zone = self.zone
        start = local_to_ms(day, spec.start, zone)
        end_day = day + timedelta(days=1) if spec.end <= spec.start else day
        end = local_to_ms(end_day, spec.end, zone)
        breaks: list[tuple[int, int]] = []
        for b_start, b_end in spec.breaks:
            b_day = day + timedelta(days=1) if b_start < spec.start else day
            b_end_day = b_day + timedelta(days=1) if b_end <= b_start else b_day
            lo = max(start, local_to_ms(b_day, b_start, zone))
            hi = min(end, local_to_ms(b_end_day, b_end, zone))
            if hi > lo:
                breaks.append((lo, hi))
        return ShiftOccurrence(spec.name, day, start, max(start, end), tuple(sorted(breaks)))

    def around(self, ts_ms: int) -> list[ShiftOccurrence]:
        """Occurrences starting on the local dates from two days before to one after."""
        day = ms_to_local_date(ts_ms, self.zone)
        out: list[ShiftOccurrence] = []
        for offset in (-2, -1, 0, 1):
            out.extend(self.occurrences_on(day + timedelta(days=offset)))
        return out

    def segment_at(self, ts_ms: int) -> Segment:
        """The segment containing ``ts_ms``; it ends at the next shift or break boundary."""
        occurrences = self.around(ts_ms)
        points: set[int] = set()
        for occ in occurrences:
            points.add(occ.start_ms)
            points.add(occ.end_ms)
            for a, b in occ.breaks:
                points.add(a)
                points.add(b)
        ordered = sorted(points)
        idx = bisect_right(ordered, ts_ms)
        # A shift spans at most ~25 h, so a boundary exists within the next local day;
        # the cap only matters for a calendar with no shifts on those days.
        end = ordered[idx] if idx < len(ordered) else ts_ms + _DAY_MS
        end = min(end, ts_ms + _DAY_MS)
        containing = tuple(occ for occ in occurrences if occ.contains(ts_ms))
        in_break = bool(containing) and all(occ.in_break(ts_ms) for occ in containing)
        return Segment(ts_ms, end, bool(containing), in_break, containing)
