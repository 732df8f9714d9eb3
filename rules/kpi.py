"""KPI records from window totals (KPI.md, "KPIs" and "Aggregates").

Every ratio is computed from exact sums (integer milliseconds and parts, Fraction energy)
and converted to float once, so 45 s * 456 / 28 800 s is exactly 0.7125 and
62.1 kWh / 414 is exactly 0.15. Undefined values are None, never 0 and never NaN.

Flags (sorted, unique) a record may carry:

``counter_wrap`` / ``counter_reset``
    a part counter decreased in the window (wrap at the modulus, or a reset).
``meter_rollover`` / ``meter_reset``
    an energy register decreased during an interval that contributes to the window.
``incomplete``
    scheduled time in the window had no known machine state (before the first sample,
    while the state source was bad, or after the end of the input).
``performance_over_1``
    performance above 1 (not clamped): the ideal cycle time is too long, or parts were
    counted that were not produced in the window's producing time. Also raised when parts
    were counted with no producing time at all (performance undefined, but ``oee`` =
    ideal_cycle_time_s * GQ / PBT is then reported as KPI.md defines it, possibly > 1).
``no_energy_data``
    no meter contributed any interval to the window: ``energy_kwh`` and everything
    derived from it is None.
``bad_quality``
    a sample with quality ``bad`` was dropped in the window.
``invalid_value``
    a sample whose value is not valid for its role (e.g. a negative counter, an unknown
    state string) was dropped in the window.
``counts_inconsistent``
    more scrap (or good) parts than parts produced were counted; the derived count is
    clamped to 0.
``energy_carried``
    energy of a meter interval that reached back into an already closed window was
    booked to the earliest open window (readings further apart than the lateness).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from rules.energy import exact
from rules.spec import KGCE_PER_KWH, MachineSpec
from rules.timemodel import planned_busy_ms
from rules.totals import IDLE, PRODUCING, SETUP, UNKNOWN, UNPLANNED, EnergyTotals, MachineTotals
from rules.types import KpiRecord

INCOMPLETE = "incomplete"
PERFORMANCE_OVER_1 = "performance_over_1"
NO_ENERGY_DATA = "no_energy_data"
COUNTS_INCONSISTENT = "counts_inconsistent"

_KGCE = exact(KGCE_PER_KWH)


@dataclass(frozen=True, slots=True)
class WindowId:
    """Which window a record belongs to."""

    site: str
    label: str
    start_ms: int
    end_ms: int


def _ratio(num: Fraction | int, den: Fraction | int) -> float | None:
    if den == 0:
        return None
    return float(Fraction(num) / Fraction(den))


def counts(totals: MachineTotals, good_counter: bool) -> tuple[int, int, int, bool]:
    """``(PQ, GQ, SQ, consistent)`` from the counted increases."""
    pq = totals.produced
    if good_counter:
        gq = totals.good
        sq = pq - gq
    else:
        sq = totals.scrap
        gq = pq - sq
    consistent = sq >= 0 and gq >= 0
    return pq, max(gq, 0), max(sq, 0), consistent


def _energy_fields(
    energy: EnergyTotals, pq: int, gq: int, grid: Fraction
) -> dict[str, float | None]:
    if not energy.seen:
        return {
            "energy_kwh": None,
            "energy_per_unit_kwh": None,
            "energy_per_good_unit_kwh": None,
            "kgce_per_good_unit": None,
            "co2_kg": None,
            "co2_per_good_unit_kg": None,
        }
    kwh = energy.kwh
    co2 = kwh * grid
    return {
        "energy_kwh": float(kwh),
        "energy_per_unit_kwh": _ratio(kwh, pq),
        "energy_per_good_unit_kwh": _ratio(kwh, gq),
        "kgce_per_good_unit": _ratio(_KGCE * kwh, gq),
        "co2_kg": float(co2),
        "co2_per_good_unit_kg": _ratio(co2, gq),
    }


def _build(
    wid: WindowId,
    line: str | None,
    machine: str | None,
    times: list[int],
    pq: int,
    gq: int,
    sq: int,
    ideal_cycle_time_s: float | None,
    energy: EnergyTotals,
    flags: set[str],
    grid: Fraction,
    schedule_kpis: bool,
) -> KpiRecord:
    out_flags = set(flags)
    out_flags.discard(PERFORMANCE_OVER_1)
    if times[UNKNOWN] > 0:
        out_flags.add(INCOMPLETE)
    pbt = planned_busy_ms(times)
    apt = times[PRODUCING]
    availability = performance = quality = oee = defect = cycle = None
    if schedule_kpis and pbt > 0 and ideal_cycle_time_s is not None:
        ict = exact(ideal_cycle_time_s)
        availability = _ratio(apt, pbt)
        # ISO 22400 "effectiveness": may exceed 1, never clamped.
        perf = None if apt == 0 else ict * pq * 1000 / apt
        performance = None if perf is None else float(perf)
        if (perf is not None and perf > 1) or (perf is None and pq > 0):
            out_flags.add(PERFORMANCE_OVER_1)
        quality = _ratio(gq, pq)
        # oee = ict * GQ / PBT: 0 (not null) whenever something was planned.
        oee = float(ict * gq * 1000 / pbt)
        defect = _ratio(sq, pq)
        cycle = _ratio(Fraction(apt, 1000), pq)
    if not energy.seen:
        out_flags.add(NO_ENERGY_DATA)
    out_flags |= energy.flags
    return KpiRecord(
        site=wid.site,
        line=line,
        machine=machine,
        window=wid.label,
        window_start_ms=wid.start_ms,
        window_end_ms=wid.end_ms,
        planned_busy_time_s=pbt / 1000,
        producing_time_s=apt / 1000,
        setup_time_s=times[SETUP] / 1000,
        unplanned_down_time_s=times[UNPLANNED] / 1000,
        idle_time_s=times[IDLE] / 1000,
        parts_produced=pq,
        parts_good=gq,
        parts_scrap=sq,
        availability=availability,
        performance=performance,
        quality_ratio=quality,
        oee=oee,
        defect_rate=defect,
        cycle_time_mean_s=cycle,
        ideal_cycle_time_s=ideal_cycle_time_s,
        **_energy_fields(energy, pq, gq, grid),
        flags=tuple(sorted(out_flags)),
    )


def machine_record(
    wid: WindowId, spec: MachineSpec, totals: MachineTotals, grid: Fraction
) -> KpiRecord:
    """A machine's record: its own times, counts and the energy of its meters."""
    pq, gq, sq, consistent = counts(totals, spec.good_counter)
    flags = set(totals.flags)
    if not consistent:
        flags.add(COUNTS_INCONSISTENT)
    return _build(
        wid, spec.line, spec.id, totals.times, pq, gq, sq, spec.ideal_cycle_time_s,
        totals.energy, flags, grid, schedule_kpis=True,
    )


def line_energy(machines: list[MachineTotals], own: EnergyTotals) -> EnergyTotals:
    """A line's energy: its machines' meters plus the meters attached to the line itself."""
    total = EnergyTotals()
    for m in machines:
        total.add(m.energy)
    total.add(own)
    return total


def line_record(
    wid: WindowId,
    line_id: str,
    output: MachineSpec,
    output_totals: MachineTotals,
    energy: EnergyTotals,
    grid: Fraction,
) -> KpiRecord:
    """A line's record: counts, times and schedule KPIs of its output machine (what leaves
    the line), energy of the whole line divided by those counts."""
    pq, gq, sq, consistent = counts(output_totals, output.good_counter)
    flags = set(output_totals.flags)
    flags -= {"meter_rollover", "meter_reset", "energy_carried"}
    if not consistent:
        flags.add(COUNTS_INCONSISTENT)
    return _build(
        wid, line_id, None, output_totals.times, pq, gq, sq, output.ideal_cycle_time_s,
        energy, flags, grid, schedule_kpis=True,
    )


def site_record(
    wid: WindowId,
    outputs: list[tuple[MachineSpec, MachineTotals]],
    energy: EnergyTotals,
    grid: Fraction,
) -> KpiRecord:
    """The site record: energy of everything, parts and times summed over the lines'
    outputs, energy intensities divided by those; no schedule KPIs (a site has no single
    plan to be available against)."""
    times = [0, 0, 0, 0, 0, 0]
    pq = gq = sq = 0
    flags: set[str] = set()
    for spec, totals in outputs:
        p, g, s, consistent = counts(totals, spec.good_counter)
        pq += p
        gq += g
        sq += s
        for i, v in enumerate(totals.times):
            times[i] += v
        flags |= totals.flags - {"meter_rollover", "meter_reset", "energy_carried"}
        if not consistent:
            flags.add(COUNTS_INCONSISTENT)
    return _build(
        wid, None, None, times, pq, gq, sq, None, energy, flags, grid, schedule_kpis=False
    )
