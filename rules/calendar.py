"""The working calendar: site-local shifts, weekdays and dated exceptions, turned into UTC
epoch-millisecond intervals; and the local days, weeks and months of calendar windows.

Shifts are written in the site's wall-clock time (``Asia/Shanghai``, ``Europe/Berlin``),
so their length in real time changes on DST nights: a 22:00-06:00 night shift in Berlin
lasts 7 h on the last Sunday of March and 9 h on the last Sunday of October. Local times
are resolved with :mod:`zoneinfo` and PEP 495 ``fold=0``: an ambiguous time (the repeated
hour in autumn) is its first occurrence, a non-existent time (the skipped hour in spring)
is read with the offset in force before the jump, i.e. it lands just after the gap.

A shift whose ``end <= start`` ends on the next day. A break belongs to the shift that
contains it: a break time earlier than the shift's start is on the next local day, and a
break is clipped to its shift.

Which shifts run on a local date is decided by the date the shift *starts* on: its ISO
weekday picks the shifts whose ``days`` contain it, an off day runs none, and a make-up
day runs those of the weekday paired with it. So a night shift starting on the eve of a
holiday runs to its end in the holiday's morning, and none starts on the holiday's own
evening, even though it would end on a working day.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rules.spec import CalendarSpec, ShiftSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_CACHE_DAYS = 32
_MIDNIGHT = time(0)
_ALL_DAY = ShiftSpec("", _MIDNIGHT, _MIDNIGHT)


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``: what every ``timezone`` key and option is checked with, so
    the agent, the simulators and the report refuse the same names with the same words;
    ValueError otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as "
                         "'Asia/Shanghai')") from err


def local_to_ms(day: date, at: time, zone: ZoneInfo) -> int:
    """Epoch milliseconds of wall-clock ``at`` on ``day`` in ``zone`` (``fold=0``)."""
    delta = datetime.combine(day, at.replace(tzinfo=None), tzinfo=zone) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_local_date(ts_ms: int, zone: ZoneInfo) -> date:
    """The site-local calendar date at epoch milliseconds ``ts_ms``."""
    return datetime.fromtimestamp(ts_ms // 1000, tz=zone).date()


def local_day(ts_ms: int, zone: ZoneInfo) -> tuple[date, int, int]:
    """The local date containing ``ts_ms`` and its bounds ``[start, end)`` in epoch ms.

    A day runs from one local midnight to the next, so it lasts 23 h or 25 h across a DST
    change; where midnight itself is skipped the day starts at the jump.
    """
    day = ms_to_local_date(ts_ms, zone)
    start = local_to_ms(day, _MIDNIGHT, zone)
    if ts_ms < start:
        day -= timedelta(days=1)
        start = local_to_ms(day, _MIDNIGHT, zone)
    end = local_to_ms(day + timedelta(days=1), _MIDNIGHT, zone)
    if ts_ms >= end:
        day += timedelta(days=1)
        start, end = end, local_to_ms(day + timedelta(days=1), _MIDNIGHT, zone)
    return day, start, end


def calendar_window(label: str, ts_ms: int, zone: ZoneInfo) -> tuple[int, int]:
    """Bounds ``[start, end)`` of the ``1d``, ``1w`` (ISO week, from Monday) or ``1mo``
    window containing ``ts_ms``: local midnight to local midnight in ``zone``."""
    day, start, end = local_day(ts_ms, zone)
    if label == "1d":
        return start, end
    if label == "1w":
        monday = day - timedelta(days=day.weekday())
        return (local_to_ms(monday, _MIDNIGHT, zone),
                local_to_ms(monday + timedelta(days=7), _MIDNIGHT, zone))
    if label == "1mo":
        first = day.replace(day=1)
        after = (first.replace(year=first.year + 1, month=1) if first.month == 12
                 else first.replace(month=first.month + 1))
        return local_to_ms(first, _MIDNIGHT, zone), local_to_ms(after, _MIDNIGHT, zone)
    raise ValueError(f"{label!r} is not a calendar window (1d, 1w, 1mo)")


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

    @property
    def working(self) -> bool:
        """Scheduled and not a planned break."""
        return self.scheduled and not self.in_break


class ShiftCalendar:
    """Answers "which shifts and breaks cover this instant" for an unbounded time line.

    Occurrences are computed per local date on demand and cached (a bounded cache, so
    memory stays flat however long the engine runs). A calendar with dated exceptions but
    no shifts has one all-day shift (local midnight to midnight) on every day that is not
    an off day.
    """

    def __init__(
        self,
        shifts: tuple[ShiftSpec, ...],
        timezone: str,
        off_days: frozenset[date] = frozenset(),
        make_up_days: tuple[tuple[date, int], ...] = (),
    ) -> None:
        self.shifts = shifts if shifts else (_ALL_DAY,)
        self.zone = ZoneInfo(timezone)
        self.off_days = off_days
        self.make_up_days = dict(make_up_days)
        self._by_day: dict[int, tuple[ShiftOccurrence, ...]] = {}
        self._last: Segment | None = None

    @classmethod
    def from_spec(cls, spec: CalendarSpec, timezone: str) -> ShiftCalendar:
        """The calendar of ``spec`` in the site's ``timezone``."""
        return cls(spec.shifts, timezone, spec.off_days, spec.make_up_days)

    def weekday_rule(self, day: date) -> int | None:
        """The ISO weekday whose shifts start on local date ``day``; None on an off day.

        A make-up day follows its paired weekday, even where it is also an off day (the
        agent never hands the engine both, but the make-up day is the more specific).
        """
        follows = self.make_up_days.get(day)
        if follows is not None:
            return follows
        if day in self.off_days:
            return None
        return day.isoweekday()

    def occurrences_on(self, day: date) -> tuple[ShiftOccurrence, ...]:
        """Every shift that starts on local date ``day``."""
        key = day.toordinal()
        found = self._by_day.get(key)
        if found is not None:
            return found
        if len(self._by_day) >= _CACHE_DAYS:
            self._by_day.clear()
        rule = self.weekday_rule(day)
        made = () if rule is None else tuple(
            self._occurrence(spec, day) for spec in self.shifts if rule in spec.days)
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
        """Occurrences starting on the local dates from two days before to two after (the
        day after next too: 24 h after a late hour before a 23 h day is already in it)."""
        day = ms_to_local_date(ts_ms, self.zone)
        out: list[ShiftOccurrence] = []
        for offset in (-2, -1, 0, 1, 2):
            out.extend(self.occurrences_on(day + timedelta(days=offset)))
        return out

    def segment_at(self, ts_ms: int) -> Segment:
        """The segment containing ``ts_ms``; it ends at the next shift or break boundary."""
        last = self._last
        if last is not None and last.start_ms <= ts_ms < last.end_ms:
            # The cached segment ends at a real boundary, which is also the next one after
            # any later instant before it: the same answer as computed afresh, so where
            # slices end never depends on what was asked before (a restored engine slices
            # like the one that took the checkpoint).
            return Segment(ts_ms, last.end_ms, last.scheduled, last.in_break, last.shifts)
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
        cap = ts_ms + _DAY_MS
        end = min(ordered[idx], cap) if idx < len(ordered) else cap
        containing = tuple(occ for occ in occurrences if occ.contains(ts_ms))
        in_break = bool(containing) and all(occ.in_break(ts_ms) for occ in containing)
        seg = Segment(ts_ms, end, bool(containing), in_break, containing)
        self._last = seg if end < cap else None
        return seg
