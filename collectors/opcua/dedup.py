"""Dropping repeated and out-of-order samples before they reach the engine (pure).

A signal's value arrives twice after every connect (the initial read and the first
notification), and a notification can be older than one already delivered (a queued
publish after a re-read): delivering that would move a cumulative counter backwards.
Each delivered sample is counted on its device's health.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.base import CollectorStats, DeviceHealth
from rules.types import Sample

__all__ = ["Dedup", "Seen"]

_NEVER = -(1 << 62)


@dataclass(slots=True)
class Seen:
    """The filter's memory of one signal, and the health record it counts into.

    One object per signal, looked up once per monitored item rather than once per
    notification: the filter sits on the per-notification path.
    """

    health: DeviceHealth
    ts_ms: int = _NEVER
    value: object = None
    quality: str = ""


class Dedup:
    """The duplicate and stale filter of one collector, counting into its stats."""

    __slots__ = ("_seen", "_stats")

    def __init__(self, stats: CollectorStats) -> None:
        self._stats = stats
        self._seen: dict[tuple[str, str], Seen] = {}

    def seen_of(self, device: str, signal: str) -> Seen:
        """The memory of one signal, created on first use."""
        key = (device, signal)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = Seen(self._stats.device(device))
        return seen

    def accept(self, sample: Sample) -> bool:
        """True if ``sample`` is to be delivered (see :meth:`admit`)."""
        return self.admit(self.seen_of(sample.device, sample.signal), sample)

    def admit(self, seen: Seen, sample: Sample) -> bool:
        """True if ``sample`` of the signal ``seen`` remembers is new; then remember it.

        Older than the last delivered: dropped and counted as stale. Same time, value
        and quality: a repeat, dropped silently. Same time but another value: kept.
        """
        ts = sample.ts_ms
        if ts <= seen.ts_ms:
            if ts < seen.ts_ms:
                self._stats.stale_dropped += 1
                return False
            if sample.value == seen.value and sample.quality == seen.quality:
                return False
        seen.ts_ms, seen.value, seen.quality = ts, sample.value, sample.quality
        health = seen.health
        health.samples += 1
        health.last_sample_ms = ts
        return True
