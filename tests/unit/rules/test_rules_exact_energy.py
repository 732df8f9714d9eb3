"""Energy kept as integer terms (rules.totals, rules.energy.share_term) is the exact sum
that fractions give, and a record's ratios are the floats the exact values round to."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from rules.energy import MeterModel, share, share_term
from rules.kpi import rolled_throughput_yield
from rules.spec import MachineSpec, MeterSpec
from rules.totals import EnergyTotals, MachineTotals


@pytest.mark.parametrize(("delta", "t1", "t2", "a", "b"), [
    (7, 0, 3000, 0, 3000), (7, 0, 3000, 1000, 2000), (7, 0, 3000, -5, 1),
    (7, 0, 3000, 3000, 4000), (0, 0, 3000, 0, 1000), (5, 10, 11, 0, 100),
    (-3, 0, 7, 2, 5), (123, 1000, 4003, 3000, 9000),
])
def test_share_term_is_share(delta: int, t1: int, t2: int, a: int, b: int) -> None:
    num, den = share_term(delta, t1, t2, a, b)
    assert Fraction(num, den) == share(delta, t1, t2, a, b)
    if (max(t1, a) == t1 and min(t2, b) == t2) or num == 0:
        assert (num, den) == (delta if num else 0, 1)


def test_booked_steps_add_up_to_the_fractions_and_serialise_the_same() -> None:
    rng = random.Random(7)
    model = MeterModel.from_spec(MeterSpec("e", "m", None, 0.01, None, None))
    res = model.resolution
    slices = []
    for _ in range(200):
        whole = rng.randrange(50)
        shares = {rng.randrange(2990, 3010): rng.randrange(-5000, 90_000)
                  for _ in range(rng.randrange(3))}
        slices.append((whole, shares))
    window = EnergyTotals()
    expected = Fraction(0)
    for whole, shares in slices:
        part = EnergyTotals()
        part.book_steps(whole, shares, res.numerator, res.denominator)
        window.add(part)
        expected += (whole + sum((Fraction(n, d) for d, n in shares.items()), Fraction(0))) * res
    assert window.total_kwh == expected
    assert window.seen
    # more denominators than are kept were folded into kwh on the way
    assert len(window.kwh_parts) <= 17
    reference = EnergyTotals(expected, True)
    assert window.to_json() == reference.to_json()
    assert EnergyTotals.from_json(window.to_json()).total_kwh == expected


def test_whole_kwh_reads_as_an_int() -> None:
    totals = EnergyTotals()
    totals.book_steps(0, {3: 150}, 1, 100)  # 150/3 steps of 0.01 kWh = 0.5 kWh
    totals.book_steps(50, {}, 1, 100)
    assert totals.total_kwh == 1
    assert type(totals.total_kwh) is int
    assert totals.to_json()["kwh"] == "1"


def test_rolled_throughput_yield_is_the_product_of_the_quality_ratios() -> None:
    def machine(produced: int, scrap: int) -> tuple[MachineSpec, MachineTotals]:
        totals = MachineTotals()
        totals.produced, totals.scrap = produced, scrap
        return MachineSpec("m", "l", 10.0), totals

    members = [machine(7, 1), machine(0, 0), machine(13, 2), machine(3, 3)]
    assert rolled_throughput_yield(members) == (6, 0.0)
    members = [machine(7, 1), machine(0, 0), machine(13, 2)]
    assert rolled_throughput_yield(members) == (
        3, float(Fraction(6, 7) * Fraction(11, 13)))
    assert rolled_throughput_yield([machine(0, 0)]) == (0, None)
