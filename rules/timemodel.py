"""The ISO 22400 time model of one machine (docs/kpi.md, "Time model").

Within a window, scheduled time that is not a planned break is booked to the machine's
state at each instant (the last known state carried forward, OPC 40501-1 Annex C already
applied by the collector). Breaks are planned downtime whatever the state and so never
reach PBT; time outside the schedule counts nowhere; scheduled time with no known state is
left out of POT and PBT and marks the record ``incomplete``. Hence::

    PBT = POT - PDOT = APT + ASUT + ADET + ADOT
"""

from __future__ import annotations

from rules.totals import IDLE, PRODUCING, SETUP, STATE_INDEX, UNKNOWN, UNPLANNED


def book(times: list[int], state: str | None, a: int, b: int, known_until: int | None) -> None:
    """Book the working time ``[a, b)`` spent in ``state`` (None = unknown) to ``times``.

    Time at or after ``known_until`` (the end of the input in offline mode) is unknown
    whatever state was last seen.
    """
    if b <= a:
        return
    if known_until is not None and b > known_until:
        cut = max(a, known_until)
        if cut > a:
            book(times, state, a, cut, None)
        times[UNKNOWN] += b - cut
        return
    if state is None:
        times[UNKNOWN] += b - a
    else:
        times[STATE_INDEX[state]] += b - a


def planned_busy_ms(times: list[int]) -> int:
    """PBT in ms: the working time in a known state other than ``planned_down``."""
    return times[PRODUCING] + times[SETUP] + times[UNPLANNED] + times[IDLE]
