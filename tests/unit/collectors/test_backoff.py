"""The one reconnect backoff: bounds, growth, jitter, reset; and that nothing else paces."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from collectors.backoff import Backoff, backoff_delay

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("attempt", range(12))
def test_delays_stay_within_bounds_and_the_cap_grows(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
    cap = min(30.0, 0.5 * 2 ** (attempt + 1))
    assert all(0.5 <= d <= cap for d in delays)
    assert max(delays) - min(delays) > 0.5 * (cap - 0.5)  # spread, not in lockstep


def test_even_the_first_retry_of_a_fleet_is_spread() -> None:
    rng = random.Random(7)
    first = sorted(backoff_delay(0, 1.0, 60.0, rng) for _ in range(100))
    assert first[0] < 1.2 and first[-1] > 1.8  # clients do not all come back at once


def test_huge_attempt_counts_stay_at_the_maximum() -> None:
    assert 1.0 <= backoff_delay(10_000, 1.0, 8.0, random.Random(1)) <= 8.0


def test_stateful_backoff_grows_and_resets() -> None:
    b = Backoff(1.0, 8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    caps = [2, 4, 8, 8, 8, 8]
    assert all(1.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)
    assert b.attempts == 6
    b.reset()
    assert b.attempts == 0 and b.next_delay() <= 2.0


def test_peeking_counts_no_attempt_and_draws_from_the_same_rng() -> None:
    peeked = Backoff(1.0, 8.0, rng=random.Random(5))
    counted = Backoff(1.0, 8.0, rng=random.Random(5))
    assert peeked.peek_delay() == counted.next_delay()
    assert peeked.attempts == 0 and 1.0 <= peeked.peek_delay() <= 2.0


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (-1, 1), (2, 1)])
def test_backoff_rejects_bad_bounds(lo: float, hi: float) -> None:
    with pytest.raises(ValueError, match="0 < min_s <= max_s"):
        Backoff(lo, hi)


def test_no_other_backoff_or_paho_pacing_in_the_tree() -> None:
    """Every reconnect goes through collectors.backoff; only the shared paho pacer may
    touch paho's reconnect delay."""
    offenders = []
    for package in ("agent", "collectors", "rules", "simulators"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), rel)
            for node in ast.walk(tree):
                if (isinstance(node, ast.ClassDef | ast.FunctionDef)
                        and "backoff" in node.name.lower()
                        and rel != "collectors/backoff.py"
                        and not (isinstance(node, ast.FunctionDef)
                                 and _delegates_to_backoff(node))):
                    offenders.append(f"{rel}:{node.lineno} defines {node.name}")
                if (isinstance(node, ast.Attribute) and node.attr == "reconnect_delay_set"
                        and rel != "agent/mqtt/reconnect.py"):
                    offenders.append(f"{rel}:{node.lineno} sets paho's reconnect delay")
    assert offenders == []


def _delegates_to_backoff(func: ast.FunctionDef) -> bool:
    """A thin wrapper (e.g. a method adapting its retry settings) is fine."""
    return any(isinstance(n, ast.Name) and n.id in {"backoff_delay", "Backoff"}
               for n in ast.walk(func))
