"""What every collector shares: the sink it feeds, its own protocol, health counters, backoff.

A collector turns one source (an OPC UA server, a Modbus gateway or serial bus) into
``Sample``s. It runs until cancelled and never raises because a device failed: a failing
device is data, recorded in :class:`DeviceHealth` where the agent's health endpoint and
metrics can read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

from collectors.backoff import Backoff
from rules.types import Sample

__all__ = [
    "SIGNAL_OK",
    "SIGNAL_PENDING",
    "Backoff",
    "Collector",
    "CollectorStats",
    "DeviceHealth",
    "NonBlockingSink",
    "RawTap",
    "RawTapping",
    "SampleSink",
    "SignalState",
    "SignalStatus",
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


RawTap = Callable[[str, str, object], None]
"""``(device, signal, raw)``: a value as the device gave it, before scale, offset and map."""


@runtime_checkable
class RawTapping(Protocol):
    """A collector that can show each value as the device gave it.

    Commissioning (``edge-agent test``) sets :attr:`raw_tap` to print raw values beside
    the mapped ones; ``run`` leaves it None, so the data path pays one test per value.
    """

    raw_tap: RawTap | None


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


SignalState = Literal["pending", "ok", "failing", "unresolved"]
"""Where one configured signal stands: ``pending`` until it is first read or resolved;
``ok`` while its values arrive with good (or uncertain) quality; ``failing`` while its
device or source does not answer or its values are bad (a bad status, a code missing
from the value map, registers that do not decode); ``unresolved`` while its address does
not exist on the device (an OPC UA node or browse path the server lacks, a register the
meter refuses with an illegal-address exception): a config mistake, not an outage."""


@dataclass(frozen=True, slots=True)
class SignalStatus:
    """The state of one signal and, unless ``ok``, why (the device's own words)."""

    state: SignalState
    detail: str | None = None


SIGNAL_PENDING = SignalStatus("pending")
SIGNAL_OK = SignalStatus("ok")


@dataclass(slots=True)
class CollectorStats:
    """Counters of one collector (one source) and the health of each of its devices.

    ``overflows`` counts notifications dropped because a bounded queue was full;
    ``stale_dropped`` counts notifications older than one already delivered (delivering
    them would move a counter backwards); ``reconnects`` counts successful connects after
    the first; ``clock_skew`` counts samples whose source timestamp was further from the
    receive time than the source's threshold (the device clock is off). ``signals`` holds
    the :class:`SignalStatus` of every configured ``(device, signal)``, so readiness and
    ``edge-agent test`` can name the one signal whose address is wrong.
    """

    name: str
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    overflows: int = 0
    stale_dropped: int = 0
    clock_skew: int = 0
    devices: dict[str, DeviceHealth] = field(default_factory=dict)
    signals: dict[tuple[str, str], SignalStatus] = field(default_factory=dict)

    def copy(self) -> CollectorStats:
        """A deep snapshot for readers in other tasks or threads."""
        return replace(self, devices={k: v.copy() for k, v in self.devices.items()},
                       signals=dict(self.signals))

    def signal_counts(self) -> dict[SignalState, int]:
        """How many signals are in each state (every state present, zeros included)."""
        counts: dict[SignalState, int] = {"ok": 0, "pending": 0, "failing": 0,
                                          "unresolved": 0}
        for status in self.signals.values():
            counts[status.state] += 1
        return counts

    def set_signal(self, device: str, signal: str, status: SignalStatus) -> bool:
        """Record ``status`` of one signal; True when its state changed."""
        key = (device, signal)
        old = self.signals.get(key)
        if old == status:
            return False
        self.signals[key] = status
        return old is None or old.state != status.state

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
