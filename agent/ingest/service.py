"""The platform-side ingest: MQTT -> InfluxDB, at least once, idempotent.

Flow of one message::

    paho network thread --on_message--> Handoff (bounded) --> IngestPipeline.consume
        --> batch (batch_size / flush_interval_s / flush_idle_s)
        --> parse; site, line, machine (or agent) come from the topic, and a payload
            naming other ids is dead-lettered (the broker authenticated the topic, not
            the payload)
        --> in a worker thread: read the stored versions of the batch's KPI keys, refuse
            less complete records, delete stored points a record must replace whole,
            write (see agent.ingest.sink; retry with backoff while InfluxDB is down or
            refuses the setup: 401/403/404; bisect on HTTP 400/413/422 to dead-letter
            only the bad points)
        --> PUBACK every message of the batch, in arrival order

The PUBACK is the commit: it is sent only after the data is in InfluxDB or in the
dead-letter file. If the process dies before that, the broker redelivers (persistent
session: MQTT 5 clean start off + session expiry, or 3.1.1 clean session off), and since a
point is keyed by its tags and time, the replay overwrites instead of adding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.ingest.config import IngestConfig, IngestSettings
from agent.ingest.deadletter import (
    IDS_DIFFER,
    INFLUX_REFUSED,
    INTERNAL_ERROR,
    INVALID_PAYLOAD,
    INVALID_TOPIC,
    LESS_COMPLETE,
    DeadLetter,
    DeadLetterFile,
    Rejected,
)
from agent.ingest.points import (
    KPI_MEASUREMENT,
    InfluxPoint,
    alarm_to_point,
    record_to_point,
    status_to_point,
)
from agent.ingest.schema import parse_alarm_payload, parse_kpi_payload, parse_status_payload
from agent.ingest.sink import DeleteUnsupported, InfluxSink, PointSink, WritePlan, plan_writes
from agent.mqtt.client import new_client, start_client
from agent.mqtt.reconnect import INGEST_CLIENT_ID_ADVICE, ReconnectPacer
from agent.mqtt.topics import parse_topic
from collectors.backoff import Backoff
from rules.errors import ConfigError, DeliveryError, InputError

__all__ = [
    "Acker",
    "Handoff",
    "Inbound",
    "IngestPipeline",
    "IngestService",
    "IngestStats",
    "payload_to_point",
]

log = logging.getLogger("agent.ingest")

_T = TypeVar("_T")
_R = TypeVar("_R")
_MAX_LOGGED_DEAD_LETTERS = 10
_DOWNGRADE_BURST_QUIET_S = 60.0
"""Refusals of less complete records closer together than this are one burst (one log line)."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received MQTT message, as long as it is not yet acknowledged.

    ``generation`` identifies the broker connection it arrived on: after a reconnect the
    broker redelivers unacknowledged messages, so an ack for the old connection's packet
    id is skipped rather than risk acknowledging some other message.
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int = 0
    received_ms: int = 0
    """Wall-clock receive time (the ``agent_status`` point's time); 0 = when processed."""


@dataclass(slots=True)
class IngestStats:
    """Counters for health checks and tests (a snapshot; the service keeps its own).

    ``received`` counts messages taken from the broker (redeliveries included),
    ``written`` points InfluxDB accepted (and records superseded by a newer version in
    the same batch), ``dead_lettered`` messages sent to the dead-letter file, ``rejected``
    the same by dead-letter code, ``replaced`` stored points deleted so that a newer
    version replaces them whole, ``ignored`` messages with nothing to store (an empty
    retained status), ``retries`` failed write attempts that were retried, ``batches``
    batches completed (acknowledged).
    """

    received: int = 0
    written: int = 0
    dead_lettered: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    replaced: int = 0
    ignored: int = 0
    acked: int = 0
    retries: int = 0
    batches: int = 0
    last_error: str | None = None
    last_write_latency_s: float | None = None
    max_write_latency_s: float = 0.0
    influx_down_since: float | None = None
    """``time.time()`` when the current InfluxDB outage began; None while writes work."""
    connected: bool = False


class Acker(Protocol):
    """Sends the MQTT acknowledgements of a finished batch, in arrival order."""

    def ack(self, messages: Sequence[Inbound]) -> None:
        """Acknowledge ``messages`` (in the given order) to the broker."""


def payload_to_point(message: Inbound, prefix: str = "factory") -> InfluxPoint | None:
    """Parse one message by its topic into a point; None when there is nothing to store.

    The topic is the identity: ``{prefix}/{site}/{line}/{machine}/kpi|alarm`` (with the
    ``_line``/``_site`` placeholders) or ``{prefix}/{site}/_agent/{agent}/status``. The
    broker's ACL decided who may publish there, so a payload naming any other site, line,
    machine or agent is refused. An empty status payload (a retained status cleared by an
    operator) stores nothing.

    Raises :class:`Rejected` (an :class:`InputError`) with the dead-letter code and a
    message naming the topic, and for differing ids the payload's ids.
    """
    topic = message.topic
    try:
        ref = parse_topic(prefix, topic)
    except InputError as err:
        text = str(err)
        raise Rejected(INVALID_TOPIC, text if repr(topic) in text
                       else f"topic {topic!r}: {text}") from err
    try:
        if ref.kind == "status":
            if not message.payload:
                return None
            status = parse_status_payload(message.payload, topic)
            if status.agent_id != ref.machine:
                raise Rejected(IDS_DIFFER, (
                    f"payload ids differ from topic {topic!r}: the payload names agent "
                    f"{status.agent_id!r}, the topic agent {ref.machine!r} of site "
                    f"{ref.site!r}"))
            received = message.received_ms or int(time.time() * 1000)
            return status_to_point(ref.site, status, received)
        point: InfluxPoint
        if ref.kind == "kpi":
            record = parse_kpi_payload(message.payload, topic)
            ids = (record.site, record.line, record.machine)
            point = record_to_point(record)
        else:
            event = parse_alarm_payload(message.payload, topic)
            ids = (event.site, event.line, event.machine)
            point = alarm_to_point(event)
    except Rejected:
        raise
    except InputError as err:
        raise Rejected(INVALID_PAYLOAD, str(err)) from err
    if ids != (ref.site, ref.line, ref.machine):
        raise Rejected(IDS_DIFFER, (
            f"payload ids differ from topic {topic!r}: the payload names site {ids[0]!r}, "
            f"line {ids[1]!r}, machine {ids[2]!r}; the topic site {ref.site!r}, line "
            f"{ref.line!r}, machine {ref.machine!r}"))
    return point


class Handoff:
    """Bounded hand-over from paho's network thread to the asyncio loop.

    ``put_from_thread`` blocks the network thread while the queue is full, which stops it
    reading the socket, so the broker holds the backlog (TCP back-pressure) instead of the
    process growing without bound. With MQTT 5 the broker's in-flight window (our Receive
    Maximum) normally keeps the queue from ever filling.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue(maxsize)
        self._slots = threading.Semaphore(maxsize)
        self._closed = threading.Event()
        self._warned_full = False

    def put_from_thread(self, item: Inbound) -> bool:
        """Enqueue from a foreign thread; False when closed (the message stays unacked)."""
        while not self._slots.acquire(timeout=0.2):
            if self._closed.is_set():
                return False
            if not self._warned_full:
                self._warned_full = True
                log.warning("ingest queue full (%d messages): pausing reads from the broker",
                            self._queue.maxsize)
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop closed: we are shutting down
            self._slots.release()
            return False
        return True

    def put_nowait(self, item: Inbound) -> None:
        """Enqueue from the loop's own thread (tests, replays); raises QueueFull when full."""
        if not self._slots.acquire(blocking=False):
            raise asyncio.QueueFull
        self._queue.put_nowait(item)

    async def get(self) -> Inbound:
        """The next message, waiting for one."""
        item = await self._queue.get()
        self._slots.release()
        return item

    def get_nowait(self) -> Inbound:
        """The next message; raises :class:`asyncio.QueueEmpty` when there is none."""
        item = self._queue.get_nowait()
        self._slots.release()
        return item

    def qsize(self) -> int:
        """Messages waiting."""
        return self._queue.qsize()

    def close(self) -> None:
        """Release a network thread waiting for space (its message is simply not acked)."""
        self._closed.set()


def _outage_cause(err: BaseException) -> str:
    """A short name for why a write failed, to log each kind of outage once."""
    status = getattr(err, "status", None)
    if status:
        return f"HTTP {status}"
    if getattr(err, "retryable", None) is True:
        return "unreachable"
    return type(err).__name__


class IngestPipeline:
    """Batching, writing, retrying, dead-lettering and acknowledging, without MQTT.

    Kept apart from the paho plumbing so that the at-least-once logic can be tested with a
    fake sink and a fake acker.
    """

    def __init__(
        self, settings: IngestSettings, sink: PointSink, acker: Acker,
        dead_letters: DeadLetterFile | None = None, stats: IngestStats | None = None,
        bucket: str = "", prefix: str = "factory",
    ) -> None:
        self.settings = settings
        self.settings_bucket = bucket
        self.prefix = prefix
        self.sink = sink
        self.acker = acker
        self.dead_letters = dead_letters or DeadLetterFile(settings.dead_letter_path)
        self.stats = stats if stats is not None else IngestStats()
        self._in_flight: asyncio.Future[Any] | None = None
        self._outage_cause: str | None = None
        self._retries_at_outage = 0
        self._downgrade_last: float | None = None
        self._downgrade_burst = 0

    async def consume(self, handoff: Handoff) -> None:
        """Run batches forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        size = self.settings.batch_size
        idle = self.settings.flush_idle_s
        while True:
            batch = [await handoff.get()]
            deadline = loop.time() + self.settings.flush_interval_s
            while len(batch) < size:
                try:
                    batch.append(handoff.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wait = min(remaining, idle) if idle > 0 else remaining
                try:
                    batch.append(await asyncio.wait_for(handoff.get(), wait))
                except TimeoutError:
                    break
            await self.process(batch)

    async def process(self, batch: Sequence[Inbound]) -> None:
        """Store one batch (InfluxDB or dead letter), then acknowledge all of it in order."""
        self.stats.received += len(batch)
        rejected: list[tuple[Inbound, str, str]] = []
        good: list[tuple[Inbound, InfluxPoint]] = []
        for message in batch:
            try:
                point = payload_to_point(message, self.prefix)
            except Rejected as err:
                rejected.append((message, err.code, str(err)))
                continue
            except Exception as err:  # a bug must not stop the stream; the payload is kept
                log.exception("cannot convert the message on topic %s", message.topic)
                rejected.append((message, INTERNAL_ERROR, f"internal error: {err!r}"))
                continue
            if point is None:
                self.stats.ignored += 1
                log.debug("nothing to store from the empty message on topic %s", message.topic)
            else:
                good.append((message, point))
        rejected.extend(await self._write(good))
        if rejected:
            order = {id(m): i for i, m in enumerate(batch)}
            rejected.sort(key=lambda item: order[id(item[0])])
            await self._dead_letter(rejected)
        try:
            self.acker.ack(batch)
        except Exception:  # unacked messages are redelivered after a reconnect: harmless
            log.exception("sending acknowledgements failed")
        self.stats.acked += len(batch)
        self.stats.batches += 1

    async def _write(self, entries: Sequence[tuple[Inbound, InfluxPoint]]
                     ) -> list[tuple[Inbound, str, str]]:
        """Store until stored; returns the messages refused, with code and reason."""
        if not entries:
            return []
        points = [p for _, p in entries]
        backoff = Backoff(self.settings.retry_min_s, self.settings.retry_max_s)
        while True:
            started = time.monotonic()
            try:
                plan = await self._in_thread(self._store, points)
            except DeliveryError as err:
                if getattr(err, "bad_data", False):
                    # Only answers that blame the points dead-letter; everything else
                    # (unreachable, 5xx, 429, 401/403/404) is an outage: hold and retry.
                    self._influx_answered()
                    if len(entries) > 1:
                        half = len(entries) // 2
                        return [*await self._write(entries[:half]),
                                *await self._write(entries[half:])]
                    self.stats.last_error = str(err)
                    return [(m, INFLUX_REFUSED, f"InfluxDB refused the point: {err}")
                            for m, _ in entries]
                await self._retry_wait(err, backoff, len(entries))
                continue
            except Exception as err:  # a bug or an unexpected library error: keep the data
                log.exception("unexpected error writing to InfluxDB; will retry")
                await self._retry_wait(err, backoff, len(entries))
                continue
            latency = time.monotonic() - started
            self.stats.last_write_latency_s = latency
            self.stats.max_write_latency_s = max(self.stats.max_write_latency_s, latency)
            self.stats.written += len(plan.write) + len(plan.superseded)
            self.stats.replaced += len(plan.delete)
            self._influx_answered()
            return [(entries[i][0], code, reason)
                    for i, (code, reason) in sorted(plan.refused.items())]

    def _store(self, points: Sequence[InfluxPoint]) -> WritePlan:
        """Read, decide, delete, write (worker thread); see :mod:`agent.ingest.sink`.

        Safe to repeat after any failure: a point deleted before a failed write is simply
        no longer read the next time, and the write goes through unconditionally then.
        """
        keys = list(dict.fromkeys(p.key for p in points if p.measurement == KPI_MEASUREMENT))
        stored = self.sink.read_stored(keys) if keys else {}
        plan = plan_writes(points, stored)
        if plan.delete:
            try:
                self.sink.delete(plan.delete)
            except DeleteUnsupported as err:
                plan = plan.without_deletes(str(err))
            else:
                log.debug("deleted %d stored KPI points to replace them whole",
                          len(plan.delete))
        self.sink.write([points[i] for i in plan.write])
        return plan

    async def _retry_wait(self, err: BaseException, backoff: Backoff, count: int) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(err)
        if self.stats.influx_down_since is None:
            self.stats.influx_down_since = time.time()
            self._retries_at_outage = self.stats.retries - 1
        cause = _outage_cause(err)
        if cause == self._outage_cause:
            log.debug("InfluxDB write attempt %d failed: %s", backoff.attempts + 1, err)
        elif getattr(err, "config_problem", False):
            # Loud, once per cause: no amount of waiting fixes a wrong token or a missing
            # database, but the data must not be thrown away while an operator fixes it.
            log.error("INFLUXDB REFUSES WRITES (%s): check the token, its permissions and "
                      "that bucket %r exists; holding %d acks and retrying until it is "
                      "fixed: %s", cause, self.settings_bucket, count, err)
        else:
            log.warning("InfluxDB write failed (%s), holding %d acks and retrying: %s",
                        cause, count, err)
        self._outage_cause = cause
        await asyncio.sleep(backoff.next_delay())

    def _influx_answered(self) -> None:
        since = self.stats.influx_down_since
        self._outage_cause = None
        if since is not None:
            self.stats.influx_down_since = None
            log.warning("InfluxDB writes recovered after %.1f s (%d failed attempts)",
                        time.time() - since, self.stats.retries - self._retries_at_outage)

    async def _dead_letter(self, rejected: Sequence[tuple[Inbound, str, str]]) -> None:
        entries = [DeadLetter(topic=m.topic, payload=m.payload, reason=reason, code=code)
                   for m, code, reason in rejected]
        backoff = Backoff(self.settings.retry_min_s, self.settings.retry_max_s)
        while True:
            try:
                await self._in_thread(self.dead_letters.append, entries)
                break
            except DeliveryError as err:  # disk full or unwritable: keep holding the acks
                self.stats.last_error = str(err)
                log.error("%s; holding %d acks and retrying", err, len(entries))
                await asyncio.sleep(backoff.next_delay())
        self.stats.dead_lettered += len(entries)
        for _, code, _ in rejected:
            self.stats.rejected[code] = self.stats.rejected.get(code, 0) + 1
        downgrades = [(m, reason) for m, code, reason in rejected if code == LESS_COMPLETE]
        if downgrades:
            self._note_downgrades(downgrades)
        others = [(m, code, reason) for m, code, reason in rejected if code != LESS_COMPLETE]
        for m, code, reason in others[:_MAX_LOGGED_DEAD_LETTERS]:
            log.warning("dead-lettered message on topic %s (%s): %s", m.topic, code, reason)
        if len(others) > _MAX_LOGGED_DEAD_LETTERS:
            log.warning("... and %d more dead-lettered messages in this batch (see %s)",
                        len(others) - _MAX_LOGGED_DEAD_LETTERS, self.dead_letters.path)

    def _note_downgrades(self, refused: Sequence[tuple[Inbound, str]]) -> None:
        """One log line per burst of refused downgrades, not one per record: an agent
        restarted without its checkpoint re-sends many windows at once."""
        now = time.monotonic()
        quiet = (self._downgrade_last is None
                 or now - self._downgrade_last > _DOWNGRADE_BURST_QUIET_S)
        self._downgrade_last = now
        if not quiet:
            self._downgrade_burst += len(refused)
            log.debug("%d more less complete KPI records refused (%d in this burst)",
                      len(refused), self._downgrade_burst)
            return
        self._downgrade_burst = len(refused)
        first, reason = refused[0]
        log.warning("refusing KPI records less complete than the stored ones (an agent "
                    "started without its checkpoint, or a second agent for the same "
                    "machines?): %d now, first on topic %s: %s. Further ones are counted in "
                    "edge_ingest_rejected_total{reason=\"%s\"} and kept in %s",
                    len(refused), first.topic, reason, LESS_COMPLETE, self.dead_letters.path)

    async def _in_thread(self, func: Callable[[_T], _R], arg: _T) -> _R:
        """Run blocking I/O in a worker thread, remembering it so shutdown can wait for it."""
        future = asyncio.get_running_loop().run_in_executor(None, func, arg)
        self._in_flight = future
        try:
            return await future
        finally:
            self._in_flight = None

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for a write still running in its thread, e.g. before closing the sink."""
        future = self._in_flight
        if future is not None and not future.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait({future}, timeout=timeout_s)


class _MqttBridge:
    """The paho client: persistent session, QoS 1 subscription, manual acknowledgement.

    Every callback catches everything: an exception escaping a paho callback kills the
    network thread, and with it every later reconnect.
    """

    def __init__(self, config: IngestConfig, handoff: Handoff, stats: IngestStats,
                 on_subscribed: Callable[[], None]) -> None:
        self.config = config
        self.handoff = handoff
        self.stats = stats
        self._on_subscribed = on_subscribed
        self._generation = 0
        self._stopping = False
        self._v5 = config.mqtt.protocol == "5"
        self._filters = config.subscriptions()
        self._pending_sub: dict[int, list[str]] = {}
        client_id = config.effective_client_id()
        self._pacer = ReconnectPacer(config.mqtt, client_id, advice=INGEST_CLIENT_ID_ADVICE)
        self.client = new_client(config.mqtt, client_id=client_id, pacer=self._pacer,
                                 manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho's thread keeps reconnecting, paced by
        :class:`ReconnectPacer` (jittered backoff, client-id clash warning)."""
        start_client(self.client, self.config.mqtt,
                     receive_maximum=self.config.ingest.receive_maximum)

    def stop(self) -> None:
        """Disconnect (the broker keeps the session and our unacked messages) and join."""
        self._stopping = True
        self.handoff.close()
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def ack(self, messages: Sequence[Inbound]) -> None:
        """PUBACK each message of the current connection, in order."""
        for m in messages:
            if m.qos == 0:
                continue
            if m.generation != self._generation:
                continue  # arrived on an earlier connection: the broker redelivers it
            rc = self.client.ack(m.mid, m.qos)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                log.debug("ack of mid %d not sent (%s); the broker will redeliver", m.mid, rc)

    # --- paho callbacks (network thread) -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            self._generation += 1
            if reason_code.is_failure:
                # paho calls on_disconnect next, which sets the delay of the retry.
                log.error("broker %s:%d refused the connection: %s", self.config.mqtt.host,
                          self.config.mqtt.port, reason_code)
                return
            self._pacer.connected()
            self.stats.connected = True
            log.info("connected to %s:%d as %r (session present: %s)", self.config.mqtt.host,
                     self.config.mqtt.port, self.config.effective_client_id(),
                     flags.session_present)
            topics: list[tuple[str, Any]]
            if self._v5:
                # Retained messages (the agents' status) only for a new subscription: a
                # resumed session already had them, and queued what changed meanwhile.
                topics = [(f, SubscribeOptions(
                    qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
                    for f in self._filters]
            else:
                topics = [(f, 1) for f in self._filters]
            rc, mid = client.subscribe(topics)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._pending_sub[mid] = list(self._filters)
            else:
                log.error("subscribe failed to send: %s", rc)
        except Exception:
            log.exception("error in MQTT on_connect")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any,
                       flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        try:
            self._generation += 1
            if self._stopping:
                log.info("disconnected from broker")
            else:
                self._pacer.lost(client, reason_code,
                                 from_broker=bool(flags.is_disconnect_packet_from_server))
                if self.stats.connected:
                    # Once a client-id clash is reported, each takeover is routine noise.
                    level = logging.DEBUG if self._pacer.clash_reported else logging.WARNING
                    log.log(level, "disconnected from broker (reconnecting): %s",
                            reason_code)
            self.stats.connected = False
        except Exception:
            log.exception("error in MQTT on_disconnect")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            self._pacer.failed(client)
            log.debug("cannot connect to %s:%d; retrying", self.config.mqtt.host,
                      self.config.mqtt.port)
        except Exception:
            log.exception("error in MQTT on_connect_fail")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        try:
            filters = self._pending_sub.pop(mid, [])
            failed = [(f, rc) for f, rc in zip(filters, reason_codes, strict=False)
                      if rc.is_failure]
            for f, rc in failed:
                log.error("broker refused subscription %r: %s", f, rc)
            if not failed:
                log.info("subscribed to %s", ", ".join(filters))
                self._on_subscribed()
        except Exception:
            log.exception("error in MQTT on_subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = repr(msg._topic)
            item = Inbound(topic=topic, payload=bytes(msg.payload), mid=msg.mid, qos=msg.qos,
                           generation=self._generation, received_ms=int(time.time() * 1000))
            self.handoff.put_from_thread(item)
        except Exception:
            log.exception("error handing over an MQTT message (it stays unacknowledged)")


class IngestService:
    """``edge-agent ingest``: subscribe, batch, store in InfluxDB, then acknowledge.

    Stateless apart from the broker session: several processes with different client ids
    can share one ``$share`` group. ``run()`` returns only by cancellation; unacknowledged
    messages are redelivered to the next run, and replays are harmless (idempotent keys).
    """

    def __init__(self, config: IngestConfig, *, sink: PointSink | None = None) -> None:
        self.config = config
        self._sink = sink
        self._subscribed = asyncio.Event()
        self._pipeline: IngestPipeline | None = None
        self._idle_stats = IngestStats()

    @property
    def stats(self) -> IngestStats:
        """A snapshot of the counters (safe to keep; it does not change afterwards)."""
        stats = self._idle_stats if self._pipeline is None else self._pipeline.stats
        return replace(stats, rejected=dict(stats.rejected))

    async def wait_subscribed(self) -> None:
        """Return once the broker has granted the subscriptions (useful before publishing)."""
        await self._subscribed.wait()

    async def run(self) -> None:
        """Ingest until cancelled.

        Raises :class:`ConfigError` when the configuration cannot be used (a secret's
        environment variable is unset, a TLS file is unreadable); outages of the broker or
        the database never end it.
        """
        loop = asyncio.get_running_loop()
        settings = self.config.ingest
        own_sink = self._sink is None
        handoff = Handoff(loop, settings.queue_size)
        stats = IngestStats()
        self._subscribed.clear()

        def subscribed() -> None:
            loop.call_soon_threadsafe(self._subscribed.set)

        try:
            sink: PointSink = self._sink if self._sink is not None else InfluxSink(
                self.config.influxdb)
        except (ValueError, OSError) as err:
            raise ConfigError([("influxdb", str(err))]) from err
        bridge: _MqttBridge | None = None
        try:
            try:
                bridge = _MqttBridge(self.config, handoff, stats, subscribed)
            except (ValueError, OSError) as err:  # ssl.SSLError is an OSError
                raise ConfigError([("mqtt", str(err))]) from err
            pipeline = IngestPipeline(settings, sink, bridge, stats=stats,
                                      bucket=self.config.influxdb.bucket,
                                      prefix=self.config.mqtt.prefix.strip("/"))
            self._pipeline = pipeline
            log.info("ingest starting: %s -> %s bucket %s", ", ".join(self.config.subscriptions()),
                     self.config.influxdb.url, self.config.influxdb.bucket)
            bridge.start()
            await pipeline.consume(handoff)
        finally:
            if bridge is not None:
                bridge.stop()
            if self._pipeline is not None:
                await self._pipeline.drain(self.config.influxdb.timeout_s)
                self._idle_stats = replace(self._pipeline.stats, connected=False)
                self._pipeline = None
            if own_sink:
                with contextlib.suppress(Exception):
                    sink.close()
            log.info("ingest stopped")

