"""Windows and slices.

Fixed windows (``1m``, ``15m``, ``1h``, ``8h``, ...) are aligned to the UTC epoch, so a 15
min window always starts at :00, :15, :30 or :45 UTC whatever the first sample. Calendar
windows follow the site's local calendar: ``1d`` runs from local midnight to local
midnight (23 h or 25 h across a DST change), ``1w`` is the ISO week from Monday 00:00,
``1mo`` the calendar month from the 1st, 00:00. The ``shift`` windows are the shift
occurrences of the site's calendar.

The engine cuts time into *slices*: the intervals between consecutive boundaries of all
windows and of every calendar in use (shift starts and ends, break starts and ends, local
midnights of calendar windows), never longer than ten seconds, which bounds the samples
held unprocessed (and so a checkpoint's size). Within a slice no calendar changes and
every window label has exactly one window (``shift``: one per shift containing it), so a
slice's totals are folded into one window per label. Samples are processed once, into
their slice; windows only ever add slices.

A machine may follow another calendar than the site's (``MachineSpec.calendar``): it then
decides which of the slice's time is that machine's planned time, in every window; the
``shift`` windows stay those of the site's calendar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import gcd
from zoneinfo import ZoneInfo

from rules.calendar import ShiftCalendar, ShiftOccurrence, calendar_window
from rules.errors import ConfigError
from rules.spec import CALENDAR_WINDOWS, EngineSpec, window_length_ms

SHIFT = "shift"
MAX_SLICE_MS = 10_000


@dataclass(frozen=True, slots=True)
class SliceInfo:
    """One slice ``[start_ms, end_ms)`` and what the calendars say about it.

    ``scheduled``, ``in_break`` and ``shifts`` are the site calendar's; ``machine_working``
    says, per machine index, whether the slice is working time for that machine's own
    calendar (empty when every machine follows the site's).
    """

    start_ms: int
    end_ms: int
    scheduled: bool
    in_break: bool
    shifts: tuple[ShiftOccurrence, ...]
    machine_working: tuple[bool, ...] = ()

    @property
    def working(self) -> bool:
        """Scheduled and not a planned break: the time the machine states are booked to."""
        return self.scheduled and not self.in_break

    def working_for(self, machine_idx: int) -> bool:
        """:attr:`working` for the calendar machine ``machine_idx`` follows."""
        mw = self.machine_working
        return mw[machine_idx] if mw else self.scheduled and not self.in_break


class WindowPlan:
    """Which windows exist and where the slice boundaries are.

    Without a calendar every instant is scheduled (POT is the whole window) and there are
    no ``shift`` windows. ``machine_calendars`` gives each machine's calendar (None: always
    scheduled) where some differ from the site's; left out, all follow ``calendar``.
    """

    def __init__(
        self,
        labels: tuple[str, ...],
        calendar: ShiftCalendar | None,
        *,
        timezone: str = "UTC",
        machine_calendars: Sequence[ShiftCalendar | None] | None = None,
    ) -> None:
        self.labels = labels
        self.calendar = calendar
        self.zone = ZoneInfo(timezone)
        lengths: list[int | None] = []
        problems: list[tuple[str, str]] = []
        for i, label in enumerate(labels):
            if label == SHIFT or label in CALENDAR_WINDOWS:
                lengths.append(None)
                continue
            try:
                lengths.append(window_length_ms(label))
            except ValueError as err:
                problems.append((f"kpi.windows[{i}]", str(err)))
                lengths.append(None)
        if problems:
            raise ConfigError(problems)
        self.lengths = tuple(lengths)
        quantum = 0
        for length in lengths:
            if length is not None:
                quantum = gcd(quantum, length)
        if quantum == 0 or quantum > MAX_SLICE_MS:
            quantum = gcd(quantum, MAX_SLICE_MS)
        self.quantum_ms = quantum
        # Calendar windows: label index -> the bounds of the window last asked for.
        self._local: dict[int, tuple[int, int]] = {
            i: (0, 0) for i, label in enumerate(labels) if label in CALENDAR_WINDOWS}
        # Machine calendars other than the site's, each once, and for each machine the
        # position of its calendar in (site, *others).
        self._others: list[ShiftCalendar | None] = []
        self._machine_pos: tuple[int, ...] = ()
        self._working: dict[tuple[bool, ...], tuple[bool, ...]] = {}
        if machine_calendars is not None and any(c is not calendar for c in machine_calendars):
            pos: list[int] = []
            for cal in machine_calendars:
                if cal is calendar:
                    pos.append(0)
                    continue
                for k, other in enumerate(self._others):
                    if other is cal:
                        pos.append(k + 1)
                        break
                else:
                    self._others.append(cal)
                    pos.append(len(self._others))
            self._machine_pos = tuple(pos)

    @classmethod
    def for_spec(cls, spec: EngineSpec) -> WindowPlan:
        """The plan of ``spec``: its windows, the site's calendar and the machines' own."""
        problems: list[tuple[str, str]] = []
        site = spec.site_calendar()
        cal = None if site.always else ShiftCalendar.from_spec(site, spec.timezone)
        named: dict[str, ShiftCalendar | None] = {}
        for c in spec.calendars:
            named[c.name] = None if c.always else ShiftCalendar.from_spec(c, spec.timezone)
        per_machine: list[ShiftCalendar | None] = []
        for i, m in enumerate(spec.machines):
            if m.calendar is None:
                per_machine.append(cal)
            elif m.calendar in named:
                per_machine.append(named[m.calendar])
            else:
                problems.append((f"machines[{i}] {m.id!r}",
                                 f"calendar {m.calendar!r} is not defined"))
        if problems:
            raise ConfigError(problems)
        return cls(spec.windows, cal, timezone=spec.timezone,
                   machine_calendars=per_machine if named else None)

    def _calendar_bounds(self, idx: int, ts_ms: int) -> tuple[int, int]:
        bounds = self._local[idx]
        if not bounds[0] <= ts_ms < bounds[1]:
            bounds = calendar_window(self.labels[idx], ts_ms, self.zone)
            self._local[idx] = bounds
        return bounds

    def slice_at(self, start_ms: int) -> SliceInfo:
        """The slice that starts at ``start_ms``."""
        q = self.quantum_ms
        end = (start_ms // q + 1) * q
        for idx in self._local:
            end = min(end, self._calendar_bounds(idx, start_ms)[1])
        shifts: tuple[ShiftOccurrence, ...] = ()
        if self.calendar is None:
            scheduled, in_break = True, False
        else:
            seg = self.calendar.segment_at(start_ms)
            end = min(end, seg.end_ms)
            scheduled, in_break, shifts = seg.scheduled, seg.in_break, seg.shifts
        if not self._machine_pos:
            return SliceInfo(start_ms, end, scheduled, in_break, shifts)
        states = [scheduled and not in_break]
        for other in self._others:
            if other is None:
                states.append(True)
            else:
                seg = other.segment_at(start_ms)
                end = min(end, seg.end_ms)
                states.append(seg.working)
        key = tuple(states)
        working = self._working.get(key)
        if working is None:
            working = tuple(key[p] for p in self._machine_pos)
            self._working[key] = working
        return SliceInfo(start_ms, end, scheduled, in_break, shifts, working)

    def windows_of(self, info: SliceInfo) -> list[tuple[int, int, int]]:
        """``(label index, window start, window end)`` of every window containing the slice."""
        out: list[tuple[int, int, int]] = []
        p = info.start_ms
        for idx, length in enumerate(self.lengths):
            if length is not None:
                start = p - p % length
                out.append((idx, start, start + length))
            elif self.labels[idx] == SHIFT:
                for occ in info.shifts:
                    out.append((idx, occ.start_ms, occ.end_ms))
            else:
                start, end = self._calendar_bounds(idx, p)
                out.append((idx, start, end))
        return out

    def first_slice_start(self, ts_ms: int) -> int:
        """Where slicing begins for a first sample at ``ts_ms``: the earliest start of a
        fixed or shift window containing it, so that every window the data touches is
        seen whole (the time before the first sample is then unknown, not missing).

        Calendar windows are not reached back to: the time before the start of
        observation is unobserved in any case, so sealing up to a month of empty slices
        would change no record, only delay the first one.
        """
        start = ts_ms - ts_ms % self.quantum_ms
        for length in self.lengths:
            if length is not None:
                start = min(start, ts_ms - ts_ms % length)
        if self.calendar is not None and SHIFT in self.labels:
            for occ in self.calendar.segment_at(ts_ms).shifts:
                start = min(start, occ.start_ms)
        return start


def _offset(zone: ZoneInfo, year: int, month: int) -> str:
    off = datetime(year, month, 1, 12, tzinfo=zone).utcoffset() or timedelta()
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def describe_windows(labels: Sequence[str], timezone: str, year: int) -> list[str]:
    """What the windows of each label are, for ``check-config``: the fixed ones together,
    then each calendar window and ``shift``.

    ``year`` picks the UTC offsets shown (a zone's rules change over the years).
    """
    zone = ZoneInfo(timezone)
    offsets = "/".join(sorted({_offset(zone, year, 1), _offset(zone, year, 7)}))
    dst = ", 23 h or 25 h across a DST change" if "/" in offsets else ""
    fixed = [label for label in labels if label != SHIFT and label not in CALENDAR_WINDOWS]
    out = [f"{', '.join(fixed)} = fixed, aligned to the UTC epoch"] if fixed else []
    for label in labels:
        if label == "1d":
            out.append(f"1d = local days in {timezone} (00:00-00:00 {offsets}{dst})")
        elif label == "1w":
            out.append(f"1w = ISO weeks in {timezone} (Monday 00:00 {offsets})")
        elif label == "1mo":
            out.append(f"1mo = calendar months in {timezone} (the 1st 00:00 {offsets})")
        elif label == SHIFT:
            out.append("shift = the shifts of [calendar]")
    return out
