"""KPI records from window totals (docs/kpi.md, "KPIs" and "Aggregates").

Every ratio is computed from exact sums (integer milliseconds and parts, exact energy)
and converted to float once, so 45 s * 456 / 28 800 s is exactly 0.7125 and
62.1 kWh / 414 is exactly 0.15. Undefined values are None, never 0 and never NaN.

Flags (sorted, unique) a record may carry:

``counter_wrap`` / ``counter_reset``
    a part counter decreased in the window (wrap at the modulus, or a reset).
``meter_rollover`` / ``meter_reset``
    an energy register decreased during an interval that contributes to the window.
``incomplete``
    scheduled time in the window had no known machine state (before the first sample,
    while the state source was bad, or after the end of the input), or part of the
    window was not observed at all (before the agent started observing, or while it was
    not running): ``observed_s`` is then less than the window's length.
``performance_over_1``
    performance above 1 (not clamped): the ideal cycle time is too long, or parts were
    counted that were not produced in the window's producing time. Also raised when parts
    were counted with no producing time at all (performance undefined, but ``oee`` =
    ideal_cycle_time_s * GQ / PBT is then reported as docs/kpi.md defines it, possibly > 1).
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
``energy_pending``
    a meter's closing reading for part of the window had not arrived when the window
    closed; its energy is what was known then, and a ``revised`` record follows.
``revised``
    the window sent again, whole, once a late closing reading gave it its exact energy
    share (see :mod:`rules.revisions`); it replaces the earlier record of its key.
``energy_carried``
    energy of a meter interval that reached back further than the revision horizon was
    booked to the earliest open window.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rules.energy import exact
from rules.spec import ELECTRICITY, GBT2589_CARRIERS, EngineSpec, MachineSpec, default_carriers
from rules.timemodel import planned_busy_ms
from rules.totals import IDLE, PRODUCING, SETUP, UNKNOWN, UNPLANNED, EnergyTotals, MachineTotals
from rules.types import KpiRecord

INCOMPLETE = "incomplete"
PERFORMANCE_OVER_1 = "performance_over_1"
NO_ENERGY_DATA = "no_energy_data"
COUNTS_INCONSISTENT = "counts_inconsistent"

_QUANTITY_FIELDS = tuple(fld for _, fld, _ in GBT2589_CARRIERS.values()
                         if fld is not None and fld != "energy_kwh")


def _opt(value: float | None) -> Fraction | None:
    return None if value is None else exact(value)


@dataclass(frozen=True, slots=True)
class EnergyFactors:
    """Every carrier's factors as exact fractions: what turns a window's quantities into
    standard coal, CO2 and cost. ``priced`` is True when a tariff prices electricity."""

    kgce: dict[str, Fraction]
    co2: dict[str, Fraction]
    price: dict[str, Fraction]
    fields: dict[str, str]
    priced: bool = False
    carriers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, spec: EngineSpec) -> EnergyFactors:
        """The factors in effect for ``spec``."""
        carriers = spec.carrier_specs()
        return cls(
            {c.name: f for c in carriers if (f := _opt(c.kgce_per_unit)) is not None},
            {c.name: f for c in carriers if (f := _opt(c.co2_kg_per_unit)) is not None},
            {c.name: f for c in carriers if c.name != ELECTRICITY
             and (f := _opt(c.price_per_unit)) is not None},
            {c.name: c.field for c in carriers if c.field is not None},
            spec.tariff is not None,
            frozenset(c.name for c in carriers),
        )

    @classmethod
    def grid_only(cls, grid: Fraction) -> EnergyFactors:
        """The default carriers with ``grid`` kgCO2/kWh: a record built from totals alone."""
        spec = EngineSpec("", carriers=default_carriers(float(grid)))
        return cls.of(spec)


@dataclass(frozen=True, slots=True)
class WindowId:
    """Which window a record belongs to, and how much of it was observed.

    ``observed_ms`` None means the whole window (a record built from totals alone).
    """

    site: str
    label: str
    start_ms: int
    end_ms: int
    observed_ms: int | None = None

    @property
    def observed(self) -> int:
        """Observed time in ms."""
        return self.end_ms - self.start_ms if self.observed_ms is None else self.observed_ms


Exact = tuple[int, int]
"""An exact number as ``(numerator, denominator)``, the denominator positive, not
necessarily reduced: a record's arithmetic on these is a few integer operations where a
:class:`~fractions.Fraction` normalises every intermediate result."""


def _exact(value: Fraction | int) -> Exact:
    if type(value) is int:
        return value, 1
    return value.numerator, value.denominator


def _quotient(num: int, den: int) -> float:
    """``num / den`` as the nearest float, as ``float(Fraction(num, den))`` gives it.

    Python's integer true division is correctly rounded, so reducing the fraction
    first would change nothing; the denominator is made positive so that a zero comes
    out as ``0.0``, not ``-0.0``, as from a fraction.
    """
    if den < 0:
        return -num / -den
    return num / den


def _ratio_exact(num: Exact, den: Exact) -> float | None:
    if den[0] == 0:
        return None
    return _quotient(num[0] * den[1], num[1] * den[0])


def _ratio(num: Fraction | int, den: Fraction | int) -> float | None:
    return _ratio_exact(_exact(num), _exact(den))


def _sum(terms: list[Exact]) -> Exact:
    num, den = 0, 1
    for n, d in terms:
        if d == den:
            num += n
        else:
            num, den = num * d + n * den, den * d
    return num, den


def _times(a: Exact, b: Exact) -> Exact:
    return a[0] * b[0], a[1] * b[1]


_exact_factors: dict[float, Exact] = {}


def _config_exact(value: float) -> Exact:
    """:func:`rules.energy.exact` of a config number (an ideal cycle time), remembered:
    a plant has few of them and every record needs one."""
    found = _exact_factors.get(value)
    if found is None:
        if len(_exact_factors) > 4096:
            _exact_factors.clear()
        found = _exact_factors[value] = _exact(exact(value))
    return found


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
    energy: EnergyTotals, pq: int, gq: int, factors: EnergyFactors
) -> dict[str, Any]:
    """The energy fields of a record (a dict of floats or None, typed Any because the
    record's other fields are ints)."""
    out: dict[str, float | None] = dict.fromkeys(_QUANTITY_FIELDS)
    quantities: dict[str, Exact] = {c: _exact(q) for c, q in energy.other.items()}
    kwh = _exact(energy.total_kwh)
    if energy.seen:
        quantities[ELECTRICITY] = kwh
    for carrier, qty in quantities.items():
        fld = factors.fields.get(carrier)
        if fld is not None and fld != "energy_kwh":
            out[fld] = _quotient(*qty)
    kgce_carriers = [c for c in quantities if c in factors.kgce]
    co2_carriers = [c for c in quantities if c in factors.co2]
    cost_carriers = [c for c in quantities if c in factors.price
                     or (c == ELECTRICITY and factors.priced)]
    kgce = _sum([_times(_exact(factors.kgce[c]), quantities[c]) for c in kgce_carriers])
    co2 = _sum([_times(_exact(factors.co2[c]), quantities[c]) for c in co2_carriers])
    cost = _sum([_exact(energy.cost) if c == ELECTRICITY
                 else _times(_exact(factors.price[c]), quantities[c]) for c in cost_carriers])
    seen = energy.seen
    pq_x, gq_x = (pq, 1), (gq, 1)
    out.update({
        "energy_kwh": _quotient(*kwh) if seen else None,
        "energy_per_unit_kwh": _ratio_exact(kwh, pq_x) if seen else None,
        "energy_per_good_unit_kwh": _ratio_exact(kwh, gq_x) if seen else None,
        "kgce": _quotient(*kgce) if kgce_carriers else None,
        "kgce_per_good_unit": _ratio_exact(kgce, gq_x) if kgce_carriers else None,
        "co2_kg": _quotient(*co2) if co2_carriers else None,
        "co2_per_good_unit_kg": _ratio_exact(co2, gq_x) if co2_carriers else None,
        "energy_cost": _quotient(*cost) if cost_carriers else None,
        "energy_cost_per_good_unit": _ratio_exact(cost, gq_x) if cost_carriers else None,
    })
    return out


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
    factors: EnergyFactors,
    schedule_kpis: bool,
    extra: dict[str, Any] | None = None,
) -> KpiRecord:
    """The record; ``extra`` sets fields computed elsewhere (a line's, the site's)."""
    out_flags = set(flags)
    out_flags.discard(PERFORMANCE_OVER_1)
    observed = wid.observed
    if times[UNKNOWN] > 0 or observed < wid.end_ms - wid.start_ms:
        out_flags.add(INCOMPLETE)
    pbt = planned_busy_ms(times)
    apt = times[PRODUCING]
    availability = performance = quality = oee = defect = cycle = None
    if schedule_kpis and pbt > 0 and ideal_cycle_time_s is not None:
        ict_num, ict_den = _config_exact(ideal_cycle_time_s)
        availability = apt / pbt
        # ISO 22400 "effectiveness": may exceed 1, never clamped.
        # performance = ict * PQ / APT, with APT in ms
        if apt == 0:
            if pq > 0:
                out_flags.add(PERFORMANCE_OVER_1)
        else:
            perf_num, perf_den = ict_num * pq * 1000, ict_den * apt
            performance = _quotient(perf_num, perf_den)
            if perf_num > perf_den:
                out_flags.add(PERFORMANCE_OVER_1)
        quality = None if pq == 0 else _quotient(gq, pq)
        # oee = ict * GQ / PBT: 0 (not null) whenever something was planned.
        oee = _quotient(ict_num * gq * 1000, ict_den * pbt)
        defect = None if pq == 0 else _quotient(sq, pq)
        cycle = None if pq == 0 else _quotient(apt, 1000 * pq)
    if not energy.any_seen:
        out_flags.add(NO_ENERGY_DATA)
    out_flags |= energy.flags
    fields = dict(
        site=wid.site,
        line=line,
        machine=machine,
        window=wid.label,
        window_start_ms=wid.start_ms,
        window_end_ms=wid.end_ms,
        observed_s=observed / 1000,
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
        **_energy_fields(energy, pq, gq, factors),
        flags=tuple(sorted(out_flags)),
    )
    if extra:
        fields.update(extra)
    return KpiRecord(**fields)


def _factors(factors: EnergyFactors | Fraction) -> EnergyFactors:
    return factors if isinstance(factors, EnergyFactors) else EnergyFactors.grid_only(factors)


def machine_record(
    wid: WindowId, spec: MachineSpec, totals: MachineTotals, factors: EnergyFactors | Fraction
) -> KpiRecord:
    """A machine's record: its own times, counts and the energy of its meters.

    ``factors`` may be a bare grid factor (kgCO2/kWh) with the default carriers."""
    pq, gq, sq, consistent = counts(totals, spec.good_counter)
    flags = set(totals.flags)
    if not consistent:
        flags.add(COUNTS_INCONSISTENT)
    return _build(
        wid, spec.line, spec.id, totals.times, pq, gq, sq, spec.ideal_cycle_time_s,
        totals.energy, flags, _factors(factors), schedule_kpis=True,
    )


def line_energy(machines: list[MachineTotals], own: EnergyTotals) -> EnergyTotals:
    """A line's energy: its machines' meters plus the meters attached to the line itself."""
    total = EnergyTotals()
    for m in machines:
        total.add(m.energy)
    total.add(own)
    return total


def rolled_throughput_yield(
    members: list[tuple[MachineSpec, MachineTotals]],
) -> tuple[int, float | None]:
    """``(scrap of all the machines, RTY)`` of a line's machines.

    RTY is the product of the machines' quality ratios GQ/PQ: the share of a part that
    passes every station good. A machine that produced nothing in the window has no
    ratio and is left out of the product (it scrapped nothing that went through it);
    RTY is None when no machine produced anything.
    """
    scrap = 0
    num = den = 1
    produced = False
    for spec, totals in members:
        pq, gq, sq, _ = counts(totals, spec.good_counter)
        scrap += sq
        if pq > 0:
            num *= min(gq, pq)
            den *= pq
            produced = True
    return scrap, _quotient(num, den) if produced else None


def line_record(
    wid: WindowId,
    line_id: str,
    output: MachineSpec,
    output_totals: MachineTotals,
    energy: EnergyTotals,
    factors: EnergyFactors | Fraction,
    members: list[tuple[MachineSpec, MachineTotals]] | None = None,
) -> KpiRecord:
    """A line's record: counts, times and schedule KPIs of its output machine (what leaves
    the line), energy of the whole line divided by those counts; with ``members`` (every
    machine of the line) also the scrap of all of them and the rolled throughput yield."""
    pq, gq, sq, consistent = counts(output_totals, output.good_counter)
    flags = set(output_totals.flags)
    flags -= {"meter_rollover", "meter_reset", "energy_carried"}
    if not consistent:
        flags.add(COUNTS_INCONSISTENT)
    extra = None
    if members is not None:
        scrap, rty = rolled_throughput_yield(members)
        extra = {"scrap_all_machines": scrap, "rolled_throughput_yield": rty}
    return _build(
        wid, line_id, None, output_totals.times, pq, gq, sq, output.ideal_cycle_time_s,
        energy, flags, _factors(factors), schedule_kpis=True, extra=extra,
    )


def site_record(
    wid: WindowId,
    outputs: list[tuple[MachineSpec, MachineTotals]],
    energy: EnergyTotals,
    factors: EnergyFactors | Fraction,
    machines: list[tuple[MachineSpec, MachineTotals]] | None = None,
) -> KpiRecord:
    """The site record: energy of everything, parts and times summed over the lines'
    outputs, energy intensities, defect rate and quality ratio computed from those sums;
    no other schedule KPIs (a site has no single plan to be available against). With
    ``machines`` (every machine of the site) also the scrap of all of them."""
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
    scrap = None if machines is None else sum(
        counts(totals, spec.good_counter)[2] for spec, totals in machines)
    return _build(
        wid, None, None, times, pq, gq, sq, None, energy, flags, _factors(factors),
        schedule_kpis=False, extra={"quality_ratio": _ratio(gq, pq),
                                    "defect_rate": _ratio(sq, pq), "scrap_all_machines": scrap},
    )
