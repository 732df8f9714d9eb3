"""Time-of-use cost of energy spread over an interval (rules/tariff.py), by table."""

from __future__ import annotations

from datetime import UTC, datetime, time
from fractions import Fraction
from itertools import pairwise

import pytest

from rules.spec import TariffSeason, TariffSpec
from rules.tariff import TariffModel, day_pieces

H = 3_600_000
DAY = (
    (time(23), time(7), "valley"),
    (time(7), time(10), "flat"),
    (time(10), time(12), "peak"),
    (time(12), time(13), "critical_peak"),
    (time(13), time(23), "flat"),
)
WINTER = ((time(0), time(8), "valley"), (time(8), time(0), "flat"))
PRICES = (("critical_peak", 1.2), ("peak", 1.0), ("flat", 0.6), ("valley", 0.3))
TARIFF = TariffSpec(PRICES, (
    TariffSeason(frozenset(range(3, 11)), DAY),
    TariffSeason(frozenset({11, 12, 1, 2}), WINTER),
))


def _ms(text: str, tz: str = "+08:00") -> int:
    return round(datetime.fromisoformat(text + tz).astimezone(UTC).timestamp() * 1000)


MODEL = TariffModel(TARIFF, "Asia/Shanghai")

CASES = [
    # (interval start, end, quantity, share from, share to, exact cost), local times
    # 10 kWh an hour: valley 1 h * 0.3 + flat 3 h * 0.6 + peak 1 h * 1.0
    ("2024-07-01T06:00", "2024-07-01T11:00", 50, None, None, Fraction(31)),
    # the part in [06:30, 10:30): 5 kWh valley, 30 flat, 5 peak
    ("2024-07-01T06:00", "2024-07-01T11:00", 50, "2024-07-01T06:30", "2024-07-01T10:30",
     Fraction(49, 2)),
    # across midnight: flat 22-23, valley 23-01
    ("2024-07-01T22:00", "2024-07-02T01:00", 30, None, None, Fraction(12)),
    # the critical peak hour alone
    ("2024-07-01T12:00", "2024-07-01T13:00", 7, None, None, Fraction(42, 5)),
    # winter: another pattern (valley to 08:00, then flat)
    ("2024-01-15T06:00", "2024-01-15T10:00", 40, None, None, Fraction(3 + 3 + 6 + 6)),
    # across the season change at local midnight: Feb 29 22-24 flat, Mar 1 00-02 valley
    ("2024-02-29T22:00", "2024-03-01T02:00", 40, None, None, Fraction(12 + 6)),
    # a share outside the interval costs nothing
    ("2024-07-01T06:00", "2024-07-01T11:00", 50, "2024-07-01T11:00", "2024-07-01T12:00",
     Fraction(0)),
]


@pytest.mark.parametrize(("t1", "t2", "qty", "a", "b", "cost"), CASES)
def test_cost_is_the_exact_price_weighted_share(
    t1: str, t2: str, qty: int, a: str | None, b: str | None, cost: Fraction
) -> None:
    lo, hi = _ms(t1), _ms(t2)
    got = MODEL.cost(qty, lo, hi, lo if a is None else _ms(a), hi if b is None else _ms(b))
    assert got == cost


def test_shares_of_adjacent_slices_add_up_to_the_whole_interval() -> None:
    lo, hi = _ms("2024-07-01T05:17"), _ms("2024-07-01T14:43")
    cuts = [lo, _ms("2024-07-01T07:00"), _ms("2024-07-01T09:59"), _ms("2024-07-01T12:30"), hi]
    parts = sum(MODEL.cost(123, lo, hi, a, b) for a, b in pairwise(cuts))
    assert parts == MODEL.cost(123, lo, hi, lo, hi)


def test_a_dst_day_is_priced_by_its_wall_clock() -> None:
    """Europe/Berlin on 2024-03-31: local 00:00-06:00 is 5 real hours, all valley."""
    model = TariffModel(TARIFF, "Europe/Berlin")
    lo, hi = _ms("2024-03-31T00:00", "+01:00"), _ms("2024-03-31T06:00", "+02:00")
    assert hi - lo == 5 * H
    assert model.cost(50, lo, hi, lo, hi) == Fraction(15)  # 50 kWh * 0.3
    assert model.priced_ms(lo, hi) == Fraction(3, 10) * 5 * H


@pytest.mark.parametrize(("periods", "phrase"), [
    (((time(0), time(8), "valley"), (time(9), time(0), "flat")), "gap at 08:00"),
    (((time(0), time(8), "valley"), (time(7), time(0), "flat")), "overlap at 08:00"),
    (((time(0), time(20), "valley"),), "gap at 20:00"),
    (((time(0), time(0), "offpeak"),), "not one of"),
])
def test_periods_must_tile_the_day(
    periods: tuple[tuple[time, time, str], ...], phrase: str
) -> None:
    with pytest.raises(ValueError, match=phrase):
        day_pieces(periods)


def test_every_month_in_one_season_with_a_price_for_every_period() -> None:
    with pytest.raises(ValueError, match=r"months \[1, 2, 11, 12\] are in no season"):
        TariffModel(TariffSpec(PRICES, (TARIFF.seasons[0],)), "UTC")
    with pytest.raises(ValueError, match="no price for period valley"):
        TariffModel(TariffSpec((("flat", 0.6),), (
            TariffSeason(frozenset(range(1, 13)), WINTER),)), "UTC")
