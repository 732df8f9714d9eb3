"""The real MQTT transport: paho-mqtt 2.x with its network thread (``loop_start``).

What this module takes care of, because paho does not:

- Every paho callback is wrapped: an exception escaping one would kill paho's network
  thread, and with it every later reconnect.
- Reconnect delays get jitter. paho's own backoff doubles a fixed delay, so a fleet of
  agents would retry a restarted broker in lockstep; :class:`~agent.mqtt.reconnect.
  ReconnectPacer` sets each delay from the project's one backoff, and says so once when
  another client with our client id keeps taking our session.
- paho keeps unacknowledged QoS 1 messages in memory and re-sends them after a
  reconnect. The outbox is the only copy that counts, so on every new connection the
  in-memory queue is dropped (``drop_out_messages``) and the publisher re-sends from the
  outbox; see the contract in :mod:`agent.mqtt.transport`.
- paho ignores the broker's Receive Maximum (CONNACK); we report it so the publisher can
  keep its window below it.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.common import MqttSettings
from agent.mqtt.client import new_client, start_client, tls_context
from agent.mqtt.reconnect import AGENT_CLIENT_ID_ADVICE, ReconnectPacer
from agent.mqtt.transport import (
    ConnectInfo,
    MessageRejected,
    TransportCallbacks,
    WillMessage,
)
from rules.errors import ConfigError, DeliveryError

log = logging.getLogger(__name__)

__all__ = ["PahoTransport", "tls_context"]


def _reason_text(reason: ReasonCode | int | None) -> str:
    if reason is None:
        return "unknown"
    if isinstance(reason, ReasonCode):
        return f"{reason.getName()} (0x{reason.value:02x})"
    return mqtt.error_string(reason)


class PahoTransport:
    """:class:`~agent.mqtt.transport.MqttTransport` on paho-mqtt, MQTT 5 or 3.1.1.

    The client comes from :func:`agent.mqtt.client.new_client` (persistent session, TLS,
    credentials, our reconnect pacing), like every other client of the project.
    """

    def __init__(
        self, settings: MqttSettings, *, client_id: str, rng: random.Random | None = None
    ) -> None:
        if not client_id:
            raise ConfigError([("mqtt.client_id", "a persistent session needs a client id")])
        self.settings = settings
        self.client_id = client_id
        self._pacer = ReconnectPacer(settings, client_id, advice=AGENT_CLIENT_ID_ADVICE, rng=rng)
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._callbacks: TransportCallbacks | None = None
        self._stopping = False

    # -- MqttTransport -----------------------------------------------------------------

    def connect(self, callbacks: TransportCallbacks, will: WillMessage | None) -> None:
        """Build the client and start paho's network thread, which connects and
        reconnects in the background; returns at once."""
        with self._lock:
            if self._client is not None:
                raise DeliveryError("transport is already started; disconnect() first")
            client = self._build_client(will)
            self._callbacks = callbacks
            self._stopping = False
            start_client(client, self.settings)
            self._client = client

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue one message on the live connection and return its mid."""
        client = self._client
        if client is None or not client.is_connected():
            raise DeliveryError(f"not connected to {self.settings.host}:{self.settings.port}")
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as err:
            raise MessageRejected(f"cannot publish to {topic!r}: {err}") from err
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise DeliveryError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    def disconnect(self) -> None:
        """Send DISCONNECT if connected, stop the network thread and forget the client."""
        with self._lock:
            client, self._client = self._client, None
            self._stopping = True
        if client is None:
            return
        try:
            client.disconnect()
        except (OSError, ValueError) as err:
            log.debug("MQTT disconnect: %s", err)
        client.loop_stop()

    # -- building the client ------------------------------------------------------------

    def _build_client(self, will: WillMessage | None) -> mqtt.Client:
        client = new_client(self.settings, client_id=self.client_id, pacer=self._pacer,
                            will=will)
        client.max_inflight_messages_set(self.settings.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        return client

    # -- paho callbacks (network thread; nothing may escape) ---------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            callbacks = self._callbacks
            if reason_code.is_failure:
                # paho calls on_disconnect next, which sets the delay of the retry.
                if callbacks is not None:
                    callbacks.on_disconnected(f"connection refused: {_reason_text(reason_code)}")
                return
            # Whatever paho still holds from the last connection would be re-sent under
            # old mids nobody tracks any more; the publisher re-sends from the outbox.
            stale = client.drop_out_messages()
            if stale:
                log.debug("dropped %d unacknowledged messages of the previous connection "
                          "(re-sent from the outbox)", len(stale))
            self._pacer.connected()
            receive_max = getattr(properties, "ReceiveMaximum", None)
            if callbacks is not None:
                callbacks.on_connected(ConnectInfo(
                    session_present=bool(flags.session_present),
                    receive_maximum=int(receive_max) if receive_max is not None else None,
                ))
        except Exception:
            log.exception("error in MQTT on_connect handler (contained)")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            from_broker = bool(flags.is_disconnect_packet_from_server)
            if not self._stopping:
                self._pacer.lost(client, reason_code, from_broker=from_broker)
            callbacks = self._callbacks
            if callbacks is not None:
                origin = "broker" if from_broker else "connection"
                callbacks.on_disconnected(f"{origin}: {_reason_text(reason_code)}")
        except Exception:
            log.exception("error in MQTT on_disconnect handler (contained)")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            self._pacer.failed(client)
            callbacks = self._callbacks
            if callbacks is not None:
                s = self.settings
                callbacks.on_disconnected(f"cannot connect to {s.host}:{s.port}")
        except Exception:
            log.exception("error in MQTT on_connect_fail handler (contained)")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        try:
            callbacks = self._callbacks
            if callbacks is not None:
                callbacks.on_puback(mid, not reason_code.is_failure, _reason_text(reason_code))
        except Exception:
            log.exception("error in MQTT on_publish handler (contained)")
