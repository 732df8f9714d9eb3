"""Small builders shared by the rules tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rules.engine import KpiEngine
from rules.spec import EngineSpec, LineSpec, MachineSpec, MeterSpec
from rules.types import KpiRecord, Sample

S = 1000
M = 60 * S
H = 60 * M
T0 = 1_767_254_400_000  # 2026-01-01T08:00:00Z


def utc(text: str) -> int:
    """Epoch ms of an ISO UTC timestamp such as ``2026-01-01T08:00``."""
    dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def one_machine(**kw: object) -> EngineSpec:
    """A site with one line, one machine ``m1`` (45 s ideal cycle) and its meter ``e1``."""
    base: dict[str, object] = {
        "site_id": "site",
        "windows": ("1h",),
        "lines": (LineSpec("L1", "m1"),),
        "machines": (MachineSpec("m1", "L1", 45.0),),
        "meters": (MeterSpec("e1", "m1", None, 0.1, 100000000.0, 500.0),),
    }
    base.update(kw)
    return EngineSpec(**base)  # type: ignore[arg-type]


def smp(ts: int, device: str, signal: str, value: object, quality: str = "good") -> Sample:
    """A sample (quality defaults to good)."""
    return Sample(ts, device, signal, value, quality)  # type: ignore[arg-type]


def run(spec: EngineSpec, samples: Iterable[Sample], end: int | None = None) -> list[KpiRecord]:
    """Feed everything offline, in time order, and finish."""
    eng = KpiEngine(spec)
    for s in sorted(samples, key=lambda x: x.ts_ms):
        eng.add(s)
    return eng.finish(end).records


def pick(
    records: list[KpiRecord],
    *,
    machine: str | None = "m1",
    line: str | None = "L1",
    window: str | None = None,
    start: int | None = None,
) -> KpiRecord:
    """The one record matching the filters."""
    found = [
        r
        for r in records
        if r.machine == machine
        and r.line == line
        and (window is None or r.window == window)
        and (start is None or r.window_start_ms == start)
    ]
    assert len(found) == 1, f"{len(found)} records match: {found}"
    return found[0]
