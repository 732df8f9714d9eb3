"""Windows and slices.

Tumbling windows (``1m``, ``15m``, ``1h``, ...) are aligned to the UTC epoch, so a 15 min
window always starts at :00, :15, :30 or :45 UTC whatever the first sample. The ``shift``
windows are the shift occurrences of the calendar.

The engine cuts time into *slices*: the intervals between consecutive boundaries of all
windows and of the calendar (shift starts and ends, break starts and ends), never longer
than ten seconds, which bounds the samples held unprocessed (and so a checkpoint's size).
Within a slice the calendar does not change and every window label has exactly one
window, so a slice's totals are folded into one window per label. Samples are processed
once, into their slice; windows only ever add slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from rules.calendar import ShiftCalendar, ShiftOccurrence
from rules.errors import ConfigError
from rules.spec import window_length_ms

SHIFT = "shift"
MAX_SLICE_MS = 10_000


@dataclass(frozen=True, slots=True)
class SliceInfo:
    """One slice ``[start_ms, end_ms)`` and what the calendar says about it."""

    start_ms: int
    end_ms: int
    scheduled: bool
    in_break: bool
    shifts: tuple[ShiftOccurrence, ...]

    @property
    def working(self) -> bool:
        """Scheduled and not a planned break: the time the machine states are booked to."""
        return self.scheduled and not self.in_break


class WindowPlan:
    """Which windows exist and where the slice boundaries are.

    Without a calendar every instant is scheduled (POT is the whole window) and there are
    no ``shift`` windows.
    """

    def __init__(self, labels: tuple[str, ...], calendar: ShiftCalendar | None) -> None:
        self.labels = labels
        self.calendar = calendar
        lengths: list[int | None] = []
        problems: list[tuple[str, str]] = []
        for i, label in enumerate(labels):
            if label == SHIFT:
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

    def slice_at(self, start_ms: int) -> SliceInfo:
        """The slice that starts at ``start_ms``."""
        q = self.quantum_ms
        end = (start_ms // q + 1) * q
        if self.calendar is None:
            return SliceInfo(start_ms, end, True, False, ())
        seg = self.calendar.segment_at(start_ms)
        return SliceInfo(start_ms, min(end, seg.end_ms), seg.scheduled, seg.in_break, seg.shifts)

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
        return out

    def first_slice_start(self, ts_ms: int) -> int:
        """Where slicing begins for a first sample at ``ts_ms``: the earliest start of a
        window containing it, so that every window the data touches is seen whole (the
        time before the first sample is then unknown, not missing)."""
        start = ts_ms - ts_ms % self.quantum_ms
        for length in self.lengths:
            if length is not None:
                start = min(start, ts_ms - ts_ms % length)
        if self.calendar is not None and SHIFT in self.labels:
            for occ in self.calendar.segment_at(ts_ms).shifts:
                start = min(start, occ.start_ms)
        return start
