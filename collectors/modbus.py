"""Modbus TCP / RTU / RTU-over-TCP polling collector.

One client per source (a TCP gateway or one serial bus), because Modbus allows one
request in flight per link; requests are serialized by a lock. Each device is polled by
its own task on its own schedule, so a dead device that costs a timeout and then backs
off never shifts its neighbours' poll times by more than the one request it blocks.

Registers of a device are read in merged blocks (:func:`collectors.decode.plan_reads`)
and decoded by the pure :func:`collectors.decode.decode_registers`. Samples are stamped
with the time the reply arrived (``ts_source="receive"``): meters carry no timestamps.

A device that refuses a merged read with an illegal-function, -address or -value
exception (a register it lacks, usually a config mistake) has that read split into one
request per signal, so the refused signal is named (``unresolved`` in the stats) and
its neighbours are still read.

The link itself is a :class:`collectors.modbus_link.ModbusLink`: pymodbus in production,
a fake in unit tests. Everything here (scheduling, backoff, health, decoding) is ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from collectors.base import (
    SIGNAL_OK,
    SIGNAL_PENDING,
    Backoff,
    CollectorStats,
    DeviceHealth,
    RawTap,
    SampleSink,
    SignalStatus,
    StatsView,
    count_problem,
    now_ms,
)
from collectors.decode import (
    BIT_TABLES,
    ReadBlock,
    decode_registers,
    plan_reads,
    point_problem,
    point_width,
)
from collectors.modbus_link import ModbusLink, PymodbusLink
from rules.errors import ConfigError, DecodeError, DeviceError
from rules.types import Sample

__all__ = [
    "ModbusCollector",
    "ModbusDeviceSpec",
    "ModbusSourceSpec",
    "RegisterPoint",
    "validate_source",
]

log = logging.getLogger(__name__)

Table = Literal["holding", "input", "coil", "discrete"]

REFUSED_CODES: dict[int, str] = {1: "illegal function", 2: "illegal data address",
                                 3: "illegal data value"}
"""Exception codes by which a device says a request names registers it does not serve."""


class _Refused(DeviceError):
    """An exception response saying the device does not serve the registers asked for."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """One signal of one device: where it lives and how to decode it.

    ``address`` is the 0-based protocol address (holding register 40001 is address 0).
    ``scale``/``offset`` give engineering units (``raw * scale + offset``), e.g. a meter
    reporting W becomes kW with ``scale=0.001``. ``length`` is the register count of a
    ``string``. Coil and discrete points yield 0 or 1 and ignore dtype and scaling.
    ``value_map`` translates the decoded value (as text, e.g. ``"2"``) into the emitted
    one, e.g. a machine state code into a state name; a value missing from it gives a
    ``bad`` sample carrying the raw value.
    """

    device: str
    signal: str
    table: Table
    address: int
    dtype: str = "u16"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    length: int | None = None
    value_map: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ModbusDeviceSpec:
    """A device (unit id) behind the source and the points to poll from it.

    ``timeout_s`` and ``retries`` override the source's for this device only: a meter
    known to answer slowly gets its time without every dead device on the link being
    waited for that long.
    """

    id: str
    unit: int
    points: tuple[RegisterPoint, ...]
    timeout_s: float | None = None
    retries: int | None = None


@dataclass(frozen=True, slots=True)
class ModbusSourceSpec:
    """A Modbus link: a TCP gateway (``tcp``/``rtu-over-tcp``) or a serial bus (``rtu``).

    ``timeout_s`` and ``retries`` are the client's own (never an outer ``wait_for``,
    which would leave a late reply in the buffer for the next request); keep them short
    since a dead unit holds the link for ``(retries + 1) * timeout_s`` per attempt.
    """

    id: str
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    devices: tuple[ModbusDeviceSpec, ...] = ()
    poll_interval_s: float = 1.0
    timeout_s: float = 0.5
    retries: int = 1
    max_gap: int = 8
    backoff_min_s: float = 1.0
    backoff_max_s: float = 30.0

    def endpoint(self) -> str:
        """Where the link goes, as an operator names it in a log line."""
        if self.transport == "rtu":
            return str(self.serial_port)
        return f"{self.host}:{self.port}"


def validate_source(spec: ModbusSourceSpec) -> list[tuple[str, str]]:
    """Every problem the collector would refuse ``spec`` for, as ``(place, message)``.

    Pure: ``check-config`` runs it on the specs ``run`` builds, so both refuse the same.
    """
    try:
        _validate(spec)
    except ConfigError as err:
        return list(err.errors)
    return []


def _validate(spec: ModbusSourceSpec) -> dict[str, list[ReadBlock[RegisterPoint]]]:
    """Check the spec and plan every device's reads; all problems at once as ConfigError."""
    errors: list[tuple[str, str]] = []
    place = f"modbus source {spec.id!r}"
    if spec.transport == "rtu" and not spec.serial_port:
        errors.append((place, "transport 'rtu' needs serial_port"))
    if spec.poll_interval_s <= 0:
        errors.append((place, "poll_interval_s must be > 0"))
    if spec.timeout_s <= 0:
        errors.append((place, "timeout_s must be > 0"))
    if spec.retries < 0:
        errors.append((place, "retries must be >= 0"))
    if not 0 < spec.backoff_min_s <= spec.backoff_max_s:
        errors.append((place, "need 0 < backoff_min_s <= backoff_max_s"))
    plans: dict[str, list[ReadBlock[RegisterPoint]]] = {}
    seen: set[str] = set()
    for i, dev in enumerate(spec.devices):
        dplace = f"{place} devices[{i}] {dev.id!r}"
        if dev.id in seen:
            errors.append((dplace, "duplicate device id"))
        seen.add(dev.id)
        if not 0 <= dev.unit <= 255:
            errors.append((dplace, f"unit {dev.unit} is outside 0..255"))
        if dev.timeout_s is not None and dev.timeout_s <= 0:
            errors.append((dplace, "timeout_s must be > 0"))
        if dev.retries is not None and dev.retries < 0:
            errors.append((dplace, "retries must be >= 0"))
        bad_points = False
        for j, pt in enumerate(dev.points):
            problem = point_problem(pt.table, pt.address, pt.dtype, pt.length)
            if problem is not None:
                errors.append((f"{dplace} points[{j}] {pt.signal}", problem))
                bad_points = True
        if bad_points:
            continue
        try:
            plans[dev.id] = plan_reads(dev.points, spec.max_gap)
        except ValueError as err:
            errors.append((dplace, str(err)))
    if errors:
        raise ConfigError(errors)
    return plans


class ModbusCollector(StatsView):
    """Polls every device of one Modbus source and turns registers into samples.

    Failure handling, per device: an exception response, a timeout or a lost link marks
    the device failing (logged once when the episode starts and once on recovery) and
    skips it until a jittered backoff expires; its neighbours keep their schedule. A
    value that does not decode becomes a ``bad`` sample and an error count, because the
    device itself answered. A lost link is reconnected with its own backoff.
    """

    def __init__(self, spec: ModbusSourceSpec, *, link: ModbusLink | None = None) -> None:
        """``link`` replaces the pymodbus link that :meth:`run` would build from ``spec``
        (tests pass a fake one)."""
        self.spec = spec
        self.name = spec.id
        self._plans = _validate(spec)
        self._stats = CollectorStats(name=spec.id)
        for dev in spec.devices:
            self._stats.device(dev.id)
            for pt in dev.points:
                self._stats.signals[(pt.device, pt.signal)] = SIGNAL_PENDING
        self.raw_tap: RawTap | None = None
        """Sees each value before scale, offset and map (``edge-agent test``)."""
        self._lock = asyncio.Lock()
        self._given_link = link
        self._link: ModbusLink | None = None
        self._where = spec.endpoint()
        self._link_backoff = Backoff(spec.backoff_min_s, spec.backoff_max_s)
        self._link_retry_at = 0.0
        self._link_failing = False
        self._undecodable: set[tuple[str, str]] = set()
        self._unmapped: set[tuple[str, str]] = set()

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled; one task per device, all owned by one TaskGroup."""
        self._link = self._given_link or PymodbusLink(self.spec)
        try:
            async with asyncio.TaskGroup() as tg:
                for dev in self.spec.devices:
                    tg.create_task(self._device_loop(dev, sink), name=f"modbus:{dev.id}")
        finally:
            link, self._link = self._link, None
            link.close()
            self._stats.connected = False
            for health in self._stats.devices.values():
                health.connected = False

    async def _device_loop(self, dev: ModbusDeviceSpec, sink: SampleSink) -> None:
        interval = self.spec.poll_interval_s
        backoff = Backoff(self.spec.backoff_min_s, self.spec.backoff_max_s)
        health = self._stats.devices[dev.id]
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        next_due = loop.time()
        while True:
            # pymodbus awaits replies with asyncio.wait_for, which on Python 3.11 can swallow
            # a cancellation that races with the reply (fixed in 3.12); without this check
            # a swallowed cancel would leave the poll loop running and stall shutdown.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            delay = next_due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                samples = await self._poll_device(dev)
            except DeviceError as err:
                self._mark_failing(dev, health, err)
                # Skip this device until its backoff expires; neighbours are unaffected.
                next_due = loop.time() + max(interval, backoff.next_delay())
                continue
            if health.failing_since_ms is not None:
                down_s = (now_ms() - health.failing_since_ms) / 1000
                log.info("modbus %s: device %s recovered after %.1f s", self.name, dev.id, down_s)
            health.connected = True
            health.failing_since_ms = None
            backoff.reset()
            for sample in samples:
                await sink.put(sample)
            # Fixed-rate schedule; if we fell behind (slow link, blocked sink), skip
            # the missed slots instead of bursting to catch up.
            next_due += interval
            now = loop.time()
            if next_due < now:
                next_due = now + interval - ((now - next_due) % interval)

    def _mark_failing(self, dev: ModbusDeviceSpec, health: DeviceHealth, err: DeviceError) -> None:
        health.errors += 1
        health.last_error = str(err)
        health.connected = False
        failing = SignalStatus("failing", str(err))
        for pt in dev.points:
            key = (pt.device, pt.signal)
            if self._stats.signals[key].state != "unresolved":
                self._stats.signals[key] = failing
        if health.failing_since_ms is None:
            health.failing_since_ms = now_ms()
            log.warning("modbus %s: device %s (unit %d) failing: %s",
                        self.name, dev.id, dev.unit, err)
        else:
            log.debug("modbus %s: device %s still failing: %s", self.name, dev.id, err)

    async def _poll_device(self, dev: ModbusDeviceSpec) -> list[Sample]:
        """Read every block of ``dev``; raise DeviceError if the device did not answer.

        A refused merged block is replaced by one block per point (for good: the device
        lacks some register in it), read at once; a refused single point is unresolved
        and the others are still delivered. Only a device that refused everything is
        failing as a whole.
        """
        health = self._stats.devices[dev.id]
        samples: list[Sample] = []
        blocks = self._plans[dev.id]
        refused: list[_Refused] = []
        answered = False
        pos = 0
        while pos < len(blocks):
            block = blocks[pos]
            try:
                values, ts = await self._read_block(dev, block)
            except _Refused as err:
                if len(block.points) > 1:
                    blocks[pos:pos + 1] = self._split(dev, block, err)
                    continue
                refused.append(err)
                self._mark_unresolved(dev, block.points[0][0], err)
                pos += 1
                continue
            answered = True
            for point, off in block.points:
                samples.append(self._decode_point(point, values, off, ts, health))
            pos += 1
        if refused and not answered:
            raise refused[0]
        for problem in refused:
            health.errors += 1
            health.last_error = str(problem)
        return samples

    def _split(self, dev: ModbusDeviceSpec, block: ReadBlock[RegisterPoint],
               err: _Refused) -> list[ReadBlock[RegisterPoint]]:
        log.warning("modbus %s: device %s refused %s (%s); reading its %d signals one by one "
                    "to find the register it lacks", self.name, dev.id, err,
                    REFUSED_CODES[err.code], len(block.points))
        return [ReadBlock(block.table, block.address + off, point_width(point), ((point, 0),))
                for point, off in block.points]

    def _mark_unresolved(self, dev: ModbusDeviceSpec, point: RegisterPoint,
                         err: _Refused) -> None:
        detail = f"{err} ({REFUSED_CODES[err.code]})"
        if self._stats.set_signal(point.device, point.signal,
                                  SignalStatus("unresolved", detail)):
            log.warning("modbus %s: %s.%s: %s: unit %d has no such register (check table, "
                        "address and type); its other signals are still read", self.name,
                        point.device, point.signal, detail, dev.unit)

    def _signal_ok(self, point: RegisterPoint) -> None:
        key = (point.device, point.signal)
        if self._stats.signals[key].state == "unresolved":
            log.info("modbus %s: %s.%s reads again", self.name, point.device, point.signal)
        self._stats.signals[key] = SIGNAL_OK

    def _decode_point(
        self,
        point: RegisterPoint,
        values: list[int] | list[bool],
        off: int,
        ts: int,
        health: DeviceHealth,
    ) -> Sample:
        value: int | float | str | None
        quality: Literal["good", "bad"] = "good"
        regs: list[int] = []
        try:
            if point.table in BIT_TABLES:
                value = int(bool(values[off]))
            else:
                regs = [int(v) for v in values[off : off + point_width(point)]]
                value = decode_registers(regs, point.dtype, point.word_order,
                                         point.byte_order, point.scale, point.offset)
        except (DecodeError, IndexError, ValueError) as err:
            if count_problem(health, self._undecodable, point.device, point.signal, str(err)):
                log.warning("modbus %s: %s.%s does not decode: %s",
                            self.name, point.device, point.signal, err)
            value, quality = None, "bad"
            self._stats.set_signal(point.device, point.signal,
                                   SignalStatus("failing", f"does not decode: {err}"))
            if self.raw_tap is not None:
                self.raw_tap(point.device, point.signal, regs)
        else:
            if self.raw_tap is not None:
                self._tap(point, value, regs)
            if self._undecodable and (point.device, point.signal) in self._undecodable:
                self._undecodable.discard((point.device, point.signal))
                log.info("modbus %s: %s.%s decodes again", self.name, point.device, point.signal)
            if point.value_map is not None:
                value, quality = self._map_value(point, value, health)
            if quality == "good" and self._stats.signals[
                    (point.device, point.signal)] is not SIGNAL_OK:
                self._signal_ok(point)
        health.samples += 1
        health.last_sample_ms = ts
        return Sample(ts, point.device, point.signal, value, quality, "receive")

    def _map_value(self, point: RegisterPoint, value: int | float | str,
                   health: DeviceHealth) -> tuple[str, Literal["good", "bad"]]:
        """The mapped value, or the raw one as a bad sample (counted, logged once)."""
        assert point.value_map is not None
        raw = str(value)
        mapped = point.value_map.get(raw)
        key = (point.device, point.signal)
        if mapped is not None:
            self._unmapped.discard(key)
            return mapped, "good"
        if count_problem(health, self._unmapped, point.device, point.signal,
                         f"raw value {raw} is not in value_map"):
            log.warning("modbus %s: %s.%s raw value %s is not in value_map",
                        self.name, point.device, point.signal, raw)
        self._stats.set_signal(point.device, point.signal,
                               SignalStatus("failing", f"raw value {raw} is not in value_map"))
        return raw, "bad"

    def _tap(self, point: RegisterPoint, value: int | float | str, regs: list[int]) -> None:
        """The value before scale and offset (bits and unscaled points have none)."""
        assert self.raw_tap is not None
        raw: object = value
        if regs and (point.scale != 1.0 or point.offset != 0.0):
            raw = decode_registers(regs, point.dtype, point.word_order, point.byte_order)
        self.raw_tap(point.device, point.signal, raw)

    async def _read_block(
        self, dev: ModbusDeviceSpec, block: ReadBlock[RegisterPoint]
    ) -> tuple[list[int] | list[bool], int]:
        what = f"{block.table} {block.address}+{block.count} unit {dev.unit}"
        async with self._lock:
            link = await self._ensure_connected()
            reply = await link.read(
                block.table, block.address, block.count, dev.unit,
                timeout_s=dev.timeout_s if dev.timeout_s is not None else self.spec.timeout_s,
                retries=dev.retries if dev.retries is not None else self.spec.retries)
            ts = now_ms()
            if not link.connected:
                self._link_lost("connection closed")
        if reply.exception_code in REFUSED_CODES:
            raise _Refused(f"{what}: exception response {reply.exception_code}",
                           reply.exception_code)
        if reply.exception_code is not None:
            raise DeviceError(f"{what}: exception response {reply.exception_code}")
        if len(reply.values) < block.count:
            raise DeviceError(f"{what}: short reply ({len(reply.values)} values)")
        return reply.values, ts

    async def _ensure_connected(self) -> ModbusLink:
        """Connect the link if needed, honouring the link's own backoff (lock held)."""
        link = self._link
        if link is None:
            raise DeviceError("collector is not running")
        if link.connected:
            return link
        loop = asyncio.get_running_loop()
        if loop.time() < self._link_retry_at:
            raise DeviceError(f"link to {self._where} is down")
        try:
            await link.connect()
        except DeviceError as err:
            self._stats.connected = False
            self._link_retry_at = loop.time() + self._link_backoff.next_delay()
            if not self._link_failing:
                self._link_failing = True
                log.warning("modbus %s: %s", self.name, err)
            raise
        if self._link_failing:
            log.info("modbus %s: connected to %s again", self.name, self._where)
        self._link_failing = False
        self._link_backoff.reset()
        self._stats.connected = True
        self._stats.connects += 1
        if self._stats.connects > 1:
            self._stats.reconnects += 1
        return link

    def _link_lost(self, reason: str) -> None:
        self._stats.connected = False
        if not self._link_failing:
            self._link_failing = True
            log.warning("modbus %s: link to %s lost: %s", self.name, self._where, reason)
