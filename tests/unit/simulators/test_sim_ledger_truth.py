"""Ground truth from the ledger: parts and energy of any window."""

from __future__ import annotations

from decimal import Decimal

from simulators.ledger import energy_in, max_power_kw, parts_in

LEDGER = [
    {"kind": "part", "device": "m1", "ts": "2026-11-26T08:00:00.000Z", "good": True},
    {"kind": "part", "device": "m1", "ts": "2026-11-26T08:00:59.999Z", "good": False},
    {"kind": "part", "device": "m1", "ts": "2026-11-26T08:01:00.000Z", "good": True},
    {"kind": "part", "device": "m2", "ts": "2026-11-26T08:00:30.000Z", "good": True},
    {"kind": "energy", "device": "e1", "ts_start": "2026-11-26T07:59:30.000Z",
     "ts_end": "2026-11-26T08:00:30.000Z", "kwh": "0.60"},
    {"kind": "energy", "device": "e1", "ts_start": "2026-11-26T08:00:30.000Z",
     "ts_end": "2026-11-26T08:01:00.000Z", "kwh": "0.90"},
]
T0 = 1_795_680_000_000  # 2026-11-26T08:00:00Z


def test_parts_are_counted_in_half_open_windows() -> None:
    assert parts_in(LEDGER, "m1", T0, T0 + 60_000) == (2, 1)
    assert parts_in(LEDGER, "m1", T0 + 60_000, T0 + 120_000) == (1, 0)
    assert parts_in(LEDGER, "m3", T0, T0 + 60_000) == (0, 0)


def test_energy_steps_are_spread_over_the_time_they_cover() -> None:
    assert energy_in(LEDGER, "e1", T0, T0 + 60_000) == Decimal("0.30") + Decimal("0.90")
    assert energy_in(LEDGER, "e1", T0 - 60_000, T0) == Decimal("0.30")
    assert max_power_kw(LEDGER, "e1") == Decimal("108")  # 0.9 kWh in 30 s
