"""Cumulative part counters: turning successive readings into part increments.

A PLC part counter only ever counts up, so a decrease is either a wrap at the counter's
modulus or a reset (power cycle, program change, operator). docs/kpi.md decides between the
two with the 10 %/90 % rule, which is also reused for energy registers that have no
``max_power_kw`` configured.
"""

from __future__ import annotations

WRAP = "counter_wrap"
RESET = "counter_reset"


def looks_like_wrap(old: int, new: int, modulus: int) -> bool:
    """True when ``old`` is in the top 10 % of ``modulus`` and ``new`` in the bottom 10 %.

    Integer arithmetic only: ``10 * old >= 9 * modulus`` is ``old >= 0.9 M`` without the
    rounding of ``0.9 * M`` for moduli such as 2^32.
    """
    return 10 * old >= 9 * modulus and 10 * new < modulus


def counter_increase(old: int, new: int, modulus: int) -> tuple[int, str | None]:
    """Parts counted between two readings, and the flag the step raised (if any).

    A decrease is a wrap (``modulus - old + new``) when :func:`looks_like_wrap` says so,
    otherwise a reset, after which the counter has counted ``new`` parts from zero.
    """
    if new >= old:
        return new - old, None
    if looks_like_wrap(old, new, modulus):
        return modulus - old + new, WRAP
    return new, RESET


def as_count(value: object) -> int | None:
    """The reading as a non-negative int, or None when it is not a counter value.

    Integral floats are accepted because Modbus and some OPC UA servers expose counters as
    doubles; booleans, fractions, negatives and non-numbers are rejected.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None
