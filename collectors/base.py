"""What every collector shares: the sink it feeds, its own protocol, health counters, backoff.

A collector turns one source (an OPC UA server, a Modbus gateway or serial bus) into
``Sample``s. It runs until cancelled and never raises because a device failed: a failing
device is data, recorded in :class:`DeviceHealth` where the agent's health endpoint and
metrics can read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from collectors.backoff import Backoff
from rules.types import Sample

__all__ = [
    "Backoff",
    "Collector",
    "CollectorStats",
    "DeviceHealth",
    "NonBlockingSink",
    "SampleSink",
    "count_problem",
    "now_ms",
]


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of ``Sample.ts_ms``."""
    return time.time_ns() // 1_000_000


class SampleSink(Protocol):
    """Where a collector delivers samples; an ``asyncio.Queue[Sample]`` satisfies it.

    ``put`` may block: that is the back-pressure a bounded queue gives, and collectors
    account for it instead of buffering without limit. A sink that can also take a
    sample without waiting declares it by being a :class:`NonBlockingSink`.
    """

    async def put(self, sample: Sample, /) -> None:
        """Deliver one sample, waiting while the consumer is full."""
        ...


@runtime_checkable
class NonBlockingSink(SampleSink, Protocol):
    """A sink that also takes a sample without waiting; ``asyncio.Queue`` is one.

    A collector on a per-notification path hands samples over with ``put_nowait``
    while ``full`` is False, saving a task switch per sample, and falls back to its own
    bounded queue and ``put`` otherwise.
    """

    def put_nowait(self, sample: Sample, /) -> None:
        """Deliver one sample now; only called while :meth:`full` is False."""
        ...

    def full(self) -> bool:
        """True while ``put_nowait`` would fail."""
        ...


class Collector(Protocol):
    """A source of samples the agent runs in its TaskGroup.

    ``run`` returns only by cancellation; device and connection failures are handled
    inside (backoff, reconnect) and reported through health, never raised.
    """

    name: str

    @property
    def stats(self) -> CollectorStats:
        """A snapshot of the collector's counters and device health, safe to read from
        the health endpoint and metrics while the collector keeps counting."""
        ...

    async def run(self, sink: SampleSink) -> None:
        """Collect until cancelled, delivering every sample to ``sink``."""
        ...


@dataclass(slots=True)
class DeviceHealth:
    """Health and counters of one device, as the agent's health endpoint shows them.

    ``failing_since_ms`` is set at the first failure of an episode and cleared on
    recovery, so an operator sees how long a device has been down, not only that it is.
    ``clock_skew`` counts samples with a skewed source timestamp and ``clock_offset_ms``
    is the last offset measured when skew was seen or cleared (source minus receive).
    """

    device: str
    connected: bool = False
    failing_since_ms: int | None = None
    last_error: str | None = None
    last_sample_ms: int | None = None
    samples: int = 0
    errors: int = 0
    overflows: int = 0
    clock_skew: int = 0
    clock_offset_ms: int | None = None

    def copy(self) -> DeviceHealth:
        """A snapshot that later updates do not change."""
        return replace(self)


@dataclass(slots=True)
class CollectorStats:
    """Counters of one collector (one source) and the health of each of its devices.

    ``overflows`` counts notifications dropped because a bounded queue was full;
    ``stale_dropped`` counts notifications older than one already delivered (delivering
    them would move a counter backwards); ``reconnects`` counts successful connects after
    the first; ``clock_skew`` counts samples whose source timestamp was further from the
    receive time than the source's threshold (the device clock is off).
    """

    name: str
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    overflows: int = 0
    stale_dropped: int = 0
    clock_skew: int = 0
    devices: dict[str, DeviceHealth] = field(default_factory=dict)

    def copy(self) -> CollectorStats:
        """A deep snapshot for readers in other tasks or threads."""
        return replace(self, devices={k: v.copy() for k, v in self.devices.items()})

    def device(self, name: str) -> DeviceHealth:
        """The health record of ``name``, created on first use."""
        health = self.devices.get(name)
        if health is None:
            health = DeviceHealth(device=name)
            self.devices[name] = health
        return health


def count_problem(health: DeviceHealth, reported: set[tuple[str, str]], device: str,
                  signal: str, detail: str) -> bool:
    """Count a problem of one signal on its device's health; True the first time.

    A problem that repeats at every poll or notification is counted each time but is to
    be logged once per episode: the caller logs when this returns True, and discards
    ``(device, signal)`` from ``reported`` when the signal is fine again.
    """
    health.errors += 1
    health.last_error = f"{signal}: {detail}"
    key = (device, signal)
    if key in reported:
        return False
    reported.add(key)
    return True


class StatsView:
    """What every collector shows the agent's health endpoint: copies, safe to read from
    anywhere while the collector keeps counting."""

    _stats: CollectorStats

    @property
    def health(self) -> dict[str, DeviceHealth]:
        """Snapshot of each device's health, keyed by device id."""
        return {k: v.copy() for k, v in self._stats.devices.items()}

    @property
    def stats(self) -> CollectorStats:
        """Snapshot of the collector's counters and device health."""
        return self._stats.copy()
