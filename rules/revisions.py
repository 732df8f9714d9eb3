"""Energy revisions: closed windows kept open for a slow meter's closing reading.

A window's record is emitted ``lateness_s`` after its end, so every KPI of it is on time.
A meter read less often than that has not yet closed the interval covering the window's
end: the record then holds the energy known so far and is flagged ``energy_pending``,
and the engine keeps the window's totals here. When the closing reading arrives, each
kept window gets its uniform share of the interval (the spread rule, as an offline
recompute books it) and all its records (machines, lines, site) are emitted again,
whole, with the same key and flagged ``revised``; downstream the later copy replaces
the earlier one. A share moves with the booking the engine gives energy on time: the
quantity in its meter's carrier and, for electricity under a time-of-use tariff, the
cost of exactly the share's own time span, so a revised window equals the offline
spread in every energy field (kgce, CO2 and flat-priced cost follow from the
quantities when the record is built). A window is kept at most ``horizon`` after its
end, and only while the meter has been silent for less than that (bounded memory,
also for a dead meter); energy reaching further back is booked to the earliest open
window and flagged ``energy_carried``, as without revisions.

Pure: the engine decides when a share is late and which windows are current; this
module holds the kept windows and does the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, TypeVar

from rules.energy import share
from rules.spec import ELECTRICITY
from rules.tariff import TariffModel
from rules.totals import EnergyTotals, PlantTotals

ENERGY_PENDING = "energy_pending"
ENERGY_CARRIED = "energy_carried"
REVISED = "revised"

DEFAULT_HORIZON_S = 4 * 3600.0
"""How long a closed window stays open for revision by default: a meter silent for an
hour, or read every 15 minutes behind a gateway, is well inside it, and a plant's
3 x 1h windows of totals per site cost little memory."""

Target = tuple[int, int]
"""Where a meter's energy goes in :class:`PlantTotals`: (0, machine index),
(1, line index) or (2, 0) for the site's own meters."""

MACHINE, LINE, SITE = 0, 1, 2


def energy_of(totals: PlantTotals, target: Target) -> EnergyTotals:
    """The energy total ``target`` names in ``totals``."""
    kind, idx = target
    if kind == MACHINE:
        return totals.machines[idx].energy
    if kind == LINE:
        return totals.lines[idx]
    return totals.site


class Window(Protocol):
    """What this module needs of the engine's window: its place and its totals."""

    label_idx: int
    start: int
    end: int
    totals: PlantTotals


W = TypeVar("W", bound=Window)


@dataclass(frozen=True, slots=True)
class LateShare:
    """A meter interval ``[t1, t2)`` of ``delta`` steps whose closing reading came after
    the slices before ``until`` were sealed: the share before ``until`` is late.

    ``carrier`` is the meter's, so the share is booked where the engine booked it on
    time (``kwh`` or ``other``); ``tariff`` prices an electricity share's time span
    (None: no time-of-use cost)."""

    target: Target
    t1: int
    t2: int
    delta: int
    until: int
    resolution: Fraction
    flag: str | None = None  # meter_rollover / meter_reset of the interval
    carrier: str = ELECTRICITY
    tariff: TariffModel | None = None

    def cost(self, a: int, b: int) -> Fraction | int:
        """Time-of-use cost (in steps x price) of the share in ``[a, b)``, as the engine
        prices a slice: exact, so the parts of a span add up to the whole."""
        if self.tariff is None or self.carrier != ELECTRICITY:
            return 0
        return self.tariff.cost(self.delta, self.t1, self.t2, a, b)


def mark_pending(totals: PlantTotals, pending: Iterable[Target]) -> None:
    """Flag ``energy_pending`` exactly on the targets whose closing reading is pending."""
    for mt in totals.machines:
        mt.energy.flags.discard(ENERGY_PENDING)
    for et in (*totals.lines, totals.site):
        et.flags.discard(ENERGY_PENDING)
    for target in pending:
        energy_of(totals, target).flags.add(ENERGY_PENDING)


class RevisionBook:
    """The closed windows whose energy may still be revised, by (label index, start)."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self.windows: dict[tuple[int, int], Window] = {}

    def retain(self, win: Window, sealed_until: int) -> None:
        """Keep ``win`` (just closed with energy pending) if the horizon allows."""
        if win.end + self.horizon_ms > sealed_until:
            self.windows[(win.label_idx, win.start)] = win

    def release(self, win: Window) -> None:
        """Stop keeping ``win``: nothing is pending in it any more."""
        self.windows.pop((win.label_idx, win.start), None)

    def prune(self, sealed_until: int) -> None:
        """Drop the windows that ended more than the horizon before ``sealed_until``."""
        horizon = self.horizon_ms
        stale = [k for k, w in self.windows.items() if w.end + horizon <= sealed_until]
        for key in stale:
            del self.windows[key]

    def spread(self, late: LateShare, current: Mapping[int, Window | None],
               spans: Mapping[int, list[tuple[int, int]]],
               touched: dict[tuple[int, int], Any]) -> None:
        """Book ``late``'s share of each kept window to it, per window label.

        ``current`` is, per label, the open window holding the slice being sealed, into
        which the engine booked the whole late share; ``spans`` are, per label, the
        windows (start, end) that cover time of ``[t1, until)``. What a kept window
        gets (quantity and cost of its own span, as :meth:`LateShare.cost` prices it) is
        taken out of the current one again, and so is the share of time no
        window of the label covers (between two shifts); what a closed window no longer
        kept would have got stays in the current one, flagged ``energy_carried``. A kept
        window that got energy is added to ``touched``.
        """
        t1, t2, delta, until = late.t1, late.t2, late.delta, late.until
        res = late.resolution
        carrier = late.carrier
        for label_idx, cur in current.items():
            # The part of the interval from cur's start on belongs to cur anyway.
            before = until if cur is None else min(until, cur.start)
            if before <= t1:
                continue
            carried: Fraction | int = 0
            carried_cost: Fraction | int = 0
            for start, end in spans.get(label_idx, ()):
                if end <= t1 or start >= before:
                    continue
                lo, hi = max(start, t1), min(end, before)
                part = share(delta, t1, t2, lo, hi)
                if not part:
                    continue
                win = self.windows.get((label_idx, start))
                if win is None:
                    carried += part
                    carried_cost += late.cost(lo, hi)
                    continue
                et = energy_of(win.totals, late.target)
                et.book(carrier, part * res, late.cost(lo, hi) * res)
                if late.flag:
                    et.flags.add(late.flag)
                touched[(label_idx, start)] = win
            if cur is None:
                continue
            et = energy_of(cur.totals, late.target)
            booked = share(delta, t1, t2, t1, before)
            moved_cost = late.cost(t1, before) - carried_cost
            if booked != carried or moved_cost:
                et.book(carrier, -(booked - carried) * res, -moved_cost * res)
            if carried:
                et.flags.add(ENERGY_CARRIED)

    def to_json(self) -> list[list[Any]]:
        """JSON-serialisable state (the engine snapshot's ``revisable``)."""
        return [[w.label_idx, w.start, w.end, w.totals.to_json()]
                for w in self.windows.values()]


def ordered(windows: Iterable[W]) -> list[W]:
    """``windows`` in the engine's record order: by end, then label, then start."""
    return sorted(windows, key=lambda w: (w.end, w.label_idx, w.start))


__all__ = ["DEFAULT_HORIZON_S", "ENERGY_PENDING", "REVISED", "LateShare", "RevisionBook",
           "energy_of", "mark_pending", "ordered"]
