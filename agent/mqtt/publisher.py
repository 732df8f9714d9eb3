"""Drains the durable outbox to the MQTT broker: nothing lost, nothing held twice.

Delivery rules (docs/architecture.md, "Reliability rules"):

- Messages leave in outbox id order, QoS 1, with at most ``max_inflight`` unacknowledged
  (fewer if the broker's Receive Maximum says so).
- An outbox row is deleted only after its PUBACK with a success reason code. A failure
  code puts the message back for a later retry; nothing else deletes rows (except the
  outbox's own size and age bounds).
- The transport forgets unacknowledged messages when a connection ends (see
  :mod:`agent.mqtt.transport`); after every reconnect the publisher scans the outbox
  from its oldest row again, so whatever was in flight is sent again. A message may
  therefore arrive twice; the writes downstream are idempotent.
- The agent's retained status topic says ``online`` while connected (refreshed
  periodically with uptime and outbox depth), ``offline`` after a clean stop, and the
  Last Will says ``offline`` when the agent dies.

All state lives on the event loop thread. Transport callbacks arrive on the client's
network thread and are handed over with ``loop.call_soon_threadsafe``; they never raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config.common import MqttSettings
from agent.mqtt.paho_transport import PahoTransport
from agent.mqtt.topics import status_topic
from agent.mqtt.transport import (
    ConnectInfo,
    MessageRejected,
    MqttTransport,
    TransportCallbacks,
    WillMessage,
)
from agent.outbox import Outbox, OutboxError, OutboxMessage
from collectors.backoff import Backoff
from rules.errors import DeliveryError
from rules.types import ms_to_rfc3339

log = logging.getLogger(__name__)

__all__ = ["MqttPublisher", "PublisherStats"]

# How often to look for rows written without notify(), and to retry after an error.
_POLL_S = 1.0
# Most rows read from the outbox in one query.
_BATCH = 500
# Rate limit for repeated warnings about refused messages and outbox errors.
_REPEAT_LOG_S = 60.0


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters since start, for health and metrics.

    ``published`` counts publish calls (re-sends included), ``acked`` outbox rows deleted
    after a PUBACK, ``inflight`` outbox messages awaiting their PUBACK, ``reconnects``
    successful connections after the first, ``refused`` PUBACKs with a failure code.
    ``last_publish_latency_s`` is publish-to-PUBACK time of the latest acknowledged message.
    """

    published: int
    acked: int
    inflight: int
    reconnects: int
    last_error: str | None
    last_publish_latency_s: float | None
    refused: int = 0


@dataclass(frozen=True, slots=True)
class _Flight:
    """One publish awaiting its PUBACK; ``msg`` is None for a status message."""

    msg: OutboxMessage | None
    sent_at: float


class MqttPublisher:
    """Publishes the outbox to the broker and keeps the agent's status topic current."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        site_id: str,
        agent_id: str,
        version: str,
        transport: MqttTransport | None = None,
        drain_rate_per_s: float | None = None,
        status_interval_s: float = 30.0,
        shutdown_timeout_s: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if drain_rate_per_s is not None and drain_rate_per_s <= 0:
            raise ValueError("drain_rate_per_s must be positive (or None for no limit)")
        self.settings = settings
        self.outbox = outbox
        self.site_id = site_id
        self.agent_id = agent_id
        self.version = version
        self.status_topic = status_topic(settings.prefix, site_id, agent_id)
        self.client_id = settings.client_id or f"edge-{site_id}-{agent_id}"
        self._transport: MqttTransport = transport or PahoTransport(
            settings, client_id=self.client_id
        )
        self._rate = drain_rate_per_s
        self._status_interval_s = status_interval_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._clock = clock

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._running = False
        self._stopping = False
        self._started_wall = clock()
        self._started_mono = time.monotonic()

        # Connection state.
        self._connected = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._failed_attempts = 0
        self._window = settings.max_inflight

        # Delivery state of the current connection (reset when it ends).
        self._flights: dict[int, _Flight] = {}
        self._outstanding: dict[int, int] = {}
        self._status_mids: set[int] = set()
        self._retry: dict[int, tuple[OutboxMessage, float]] = {}
        # Refusals in a row (an ACL or a full broker) retry later and later, with jitter,
        # so that many agents refused at once do not come back in step.
        self._refusal_backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._cursor = 0
        self._exhausted_at: float | None = None
        self._send_blocked_until = 0.0
        self._status_due = 0.0

        # Across connections.
        self._acks: list[int] = []
        self._parked: set[int] = set()
        self._tokens = max(1.0, drain_rate_per_s or 1.0)
        self._tokens_at = time.monotonic()
        self._last_refusal_log = -math.inf
        self._last_outbox_error_log = -math.inf

        self._published = 0
        self._acked = 0
        self._reconnects = 0
        self._refused = 0
        self._last_error: str | None = None
        self._last_latency: float | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up (as last reported by the transport)."""
        return self._connected

    @property
    def stats(self) -> PublisherStats:
        """A snapshot of the counters."""
        return PublisherStats(
            published=self._published,
            acked=self._acked,
            inflight=len(self._outstanding),
            reconnects=self._reconnects,
            last_error=self._last_error,
            last_publish_latency_s=self._last_latency,
            refused=self._refused,
        )

    def notify(self) -> None:
        """New rows are in the outbox: publish them now instead of at the next poll.

        Safe to call from any thread, and before ``run`` (then it does nothing: ``run``
        scans the outbox anyway).
        """
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._call_soon(self._wake.set)

    async def run(self) -> None:
        """Connect, drain the outbox and keep the status current until cancelled; then
        publish the offline status, wait briefly for its PUBACK, and disconnect."""
        if self._running:
            raise DeliveryError("MqttPublisher.run() is already running")
        self._running = True
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._started_wall = self._clock()
        self._started_mono = time.monotonic()
        callbacks = TransportCallbacks(
            on_connected=lambda info: self._call_soon(self._on_connected, info),
            on_disconnected=lambda reason: self._call_soon(self._on_disconnected, reason),
            on_puback=lambda mid, ok, reason: self._call_soon(self._on_puback, mid, ok, reason),
        )
        will = WillMessage(self.status_topic, self._status_payload("offline", "connection lost"))
        try:
            self._transport.connect(callbacks, will)
        except BaseException:
            self._running = False
            self._loop = self._loop_thread = None
            raise
        try:
            while True:
                self._wake.clear()
                delay = self._service()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            try:
                await self._shutdown()
            finally:
                self._running = False
                self._loop = None
                self._loop_thread = None

    # -- the loop ------------------------------------------------------------------------

    def _service(self) -> float:
        """Do what can be done now; return how long to sleep unless woken earlier."""
        now = time.monotonic()
        if not self._flush_acks():
            return _POLL_S
        if not self._connected:
            return _POLL_S * 5
        if now >= self._status_due and self._room() > 0:
            self._publish_status("online")
            self._status_due = now + self._status_interval_s
        try:
            self._fill_window(now)
        except OutboxError as err:
            self._outbox_trouble(err)
            return _POLL_S
        wake_at = [now + _POLL_S * 5, self._status_due]
        if self._room() > 0:
            if self._exhausted_at is not None:
                wake_at.append(self._exhausted_at + _POLL_S)
            else:
                wake_at.append(max(self._send_blocked_until, self._token_ready_at(now)))
            wake_at.extend(not_before for _, not_before in self._retry.values())
        return max(0.0, min(wake_at) - now)

    def _room(self) -> int:
        return self._window - len(self._outstanding) - len(self._status_mids)

    def _fill_window(self, now: float) -> None:
        """Publish retries that are due, then rows after the cursor, while there is room."""
        if now < self._send_blocked_until:
            return
        for msg_id, (msg, not_before) in list(self._retry.items()):
            if not_before > now:
                continue
            if self._room() <= 0 or not self._take_token(now):
                return
            del self._retry[msg_id]
            if not self._send(msg, now):
                self._retry[msg_id] = (msg, now)
                return
        while self._room() > 0:
            batch = self.outbox.pending(min(self._room(), _BATCH), after_id=self._cursor)
            if not batch:
                self._exhausted_at = now
                return
            self._exhausted_at = None
            for msg in batch:
                if self._room() <= 0:
                    return
                if msg.id in self._outstanding or msg.id in self._retry or msg.id in self._parked:
                    self._cursor = msg.id
                    continue
                if not self._take_token(now):
                    return
                if not self._send(msg, now):
                    return
                self._cursor = msg.id

    def _send(self, msg: OutboxMessage, now: float) -> bool:
        """Hand one message to the transport; False if the transport cannot take any now."""
        try:
            mid = self._transport.publish(msg.topic, msg.payload, qos=1, retain=False)
        except MessageRejected as err:
            self._parked.add(msg.id)
            self._cursor = max(self._cursor, msg.id)
            self._last_error = str(err)
            log.error("outbox message %d cannot be published and is left in the outbox "
                      "(it ages out): %s", msg.id, err)
            return True
        except DeliveryError as err:
            self._last_error = str(err)
            self._send_blocked_until = now + 0.5
            log.debug("publish deferred: %s", err)
            return False
        self._track(mid, _Flight(msg, now))
        self._outstanding[msg.id] = mid
        self._published += 1
        return True

    def _track(self, mid: int, flight: _Flight) -> None:
        old = self._flights.get(mid)
        if old is not None:
            # A transport never reuses a mid it still owes a PUBACK for; if one does,
            # the older message goes back to be sent again rather than be forgotten.
            log.warning("transport reused message id %d before its PUBACK", mid)
            self._status_mids.discard(mid)
            if old.msg is not None and self._outstanding.pop(old.msg.id, None) is not None:
                self._retry[old.msg.id] = (old.msg, 0.0)
        self._flights[mid] = flight

    def _publish_status(self, state: str, reason: str | None = None) -> int | None:
        try:
            mid = self._transport.publish(
                self.status_topic, self._status_payload(state, reason), qos=1, retain=True
            )
        except DeliveryError as err:
            self._last_error = str(err)
            log.debug("status %s not published: %s", state, err)
            return None
        self._track(mid, _Flight(None, time.monotonic()))
        self._status_mids.add(mid)
        return mid

    def _status_payload(self, state: str, reason: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "state": state,
            "agent_id": self.agent_id,
            "version": self.version,
            "started": ms_to_rfc3339(int(self._started_wall * 1000)),
        }
        if state == "online":
            body["uptime_s"] = round(time.monotonic() - self._started_mono, 1)
            body["outbox_depth"] = self.outbox.depth()
        if reason is not None:
            body["reason"] = reason
        return json.dumps(body, separators=(",", ":")).encode()

    def _flush_acks(self) -> bool:
        """Delete acknowledged rows in one transaction; False if the outbox failed."""
        if not self._acks:
            return True
        try:
            self.outbox.ack(self._acks)
        except OutboxError as err:
            self._outbox_trouble(err)
            return False
        self._acks.clear()
        return True

    def _outbox_trouble(self, err: OutboxError) -> None:
        self._last_error = str(err)
        now = time.monotonic()
        if now - self._last_outbox_error_log >= _REPEAT_LOG_S:
            self._last_outbox_error_log = now
            log.error("outbox error, retrying every %.0f s: %s", _POLL_S, err)

    # -- rate limit ----------------------------------------------------------------------

    def _take_token(self, now: float) -> bool:
        if self._rate is None:
            return True
        self._tokens = min(max(1.0, self._rate),
                           self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _token_ready_at(self, now: float) -> float:
        if self._rate is None or self._tokens >= 1.0:
            return now
        return now + (1.0 - self._tokens) / self._rate

    # -- transport events (on the loop thread) -------------------------------------------

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Hand a callback from any thread to the loop; never raises into the caller."""
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop is closing; the run is over and the outbox keeps everything.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._guarded, fn, *args)

    @staticmethod
    def _guarded(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("error handling an MQTT transport event (contained)")

    def _reset_connection_state(self) -> None:
        self._flights.clear()
        self._outstanding.clear()
        self._status_mids.clear()
        self._retry.clear()
        self._cursor = 0
        self._exhausted_at = None
        self._send_blocked_until = 0.0

    def _on_connected(self, info: ConnectInfo) -> None:
        now = time.monotonic()
        self._reset_connection_state()
        self._connected = True
        self._window = self.settings.max_inflight
        if info.receive_maximum:
            self._window = max(1, min(self._window, info.receive_maximum))
        where = f"{self.settings.host}:{self.settings.port}"
        if self._ever_connected:
            self._reconnects += 1
        if self._down_since is not None and (self._ever_connected or self._failed_attempts):
            log.warning("MQTT broker %s reachable again after %.1f s; resending %d queued "
                        "messages", where, now - self._down_since, self.outbox.depth())
        else:
            log.info("connected to MQTT broker %s as %s (%d messages queued)", where,
                     self.client_id, self.outbox.depth())
        self._ever_connected = True
        self._down_since = None
        self._failed_attempts = 0
        self._status_due = now
        self._wake.set()

    def _on_disconnected(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._reset_connection_state()
        if self._stopping:
            return
        self._last_error = reason
        where = f"{self.settings.host}:{self.settings.port}"
        if was_connected:
            self._down_since = time.monotonic()
            log.warning("lost connection to MQTT broker %s (%s); messages stay in the outbox, "
                        "reconnecting in the background", where, reason)
        elif self._down_since is None:
            self._down_since = time.monotonic()
            self._failed_attempts = 1
            log.warning("cannot reach MQTT broker %s (%s); retrying in the background",
                        where, reason)
        else:
            self._failed_attempts += 1
            log.debug("MQTT connect attempt %d failed: %s", self._failed_attempts, reason)
        self._wake.set()

    def _on_puback(self, mid: int, ok: bool, reason: str) -> None:
        flight = self._flights.pop(mid, None)
        if flight is None:
            return  # from a connection that has ended: that message is being re-sent
        self._wake.set()
        if flight.msg is None:
            self._status_mids.discard(mid)
            if not ok:
                self._last_error = f"status refused by the broker: {reason}"
            return
        msg = flight.msg
        self._outstanding.pop(msg.id, None)
        now = time.monotonic()
        if ok:
            self._acks.append(msg.id)
            self._acked += 1
            self._refusal_backoff.reset()
            self._last_latency = now - flight.sent_at
            return
        self._refused += 1
        self._last_error = f"broker refused {msg.topic}: {reason}"
        self._retry[msg.id] = (msg, now + self._refusal_backoff.next_delay())
        if now - self._last_refusal_log >= _REPEAT_LOG_S:
            self._last_refusal_log = now
            log.warning("broker refused message %d on %s (%s); it stays in the outbox and "
                        "is retried (%d refusals so far)", msg.id, msg.topic, reason,
                        self._refused)

    # -- shutdown ------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Say offline (retained), give its PUBACK a moment, disconnect cleanly."""
        self._stopping = True
        try:
            if self._connected:
                mid = self._publish_status("offline", "shutdown")
                deadline = time.monotonic() + self._shutdown_timeout_s
                while mid is not None and mid in self._status_mids and self._connected:
                    self._wake.clear()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.warning("no PUBACK for the offline status within %.1f s",
                                    self._shutdown_timeout_s)
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._wake.wait()
        finally:
            try:
                await asyncio.to_thread(self._transport.disconnect)
            finally:
                self._connected = False
                self._flush_acks()
                self._reset_connection_state()
                log.info("MQTT publisher stopped (%d messages still in the outbox)",
                         self.outbox.depth())
