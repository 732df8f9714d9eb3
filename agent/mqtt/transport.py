"""The seam between the publisher's delivery logic and an MQTT client library.

The publisher only needs four things from a client: connect (and keep reconnecting),
publish with a message id, learn about PUBACKs by that id, and disconnect. Keeping them
behind this Protocol lets unit tests drive every delivery path with a fake, while the
real implementation (:mod:`agent.mqtt.paho_transport`) is tested against Mosquitto.

Contract shared by every transport:

- ``connect`` returns at once; connecting and reconnecting (with backoff and jitter)
  happen in the background until ``disconnect``.
- Callbacks may run on any thread, even inside a ``publish`` call: receivers hand them
  over to their own thread (the publisher uses ``loop.call_soon_threadsafe``) and must
  not raise.
- When a connection ends, every publish not yet acknowledged on it is forgotten by the
  transport: no PUBACK will ever come for those ids. Re-sending is the publisher's job
  (from the durable outbox), so nothing depends on the library's in-memory queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rules.errors import DeliveryError

__all__ = ["ConnectInfo", "MessageRejected", "MqttTransport", "TransportCallbacks", "WillMessage"]


class MessageRejected(DeliveryError):
    """The client library refuses this message itself (invalid topic, payload too large):
    sending it again cannot succeed."""


@dataclass(frozen=True, slots=True)
class WillMessage:
    """The Last Will the broker publishes if the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What the broker said when it accepted a connection.

    ``receive_maximum`` (MQTT 5 CONNACK) bounds how many QoS 1 messages the broker
    accepts in flight; paho does not enforce it, so the publisher does.
    """

    session_present: bool = False
    receive_maximum: int | None = None


@dataclass(frozen=True, slots=True)
class TransportCallbacks:
    """What a transport reports. Each may be called from any thread.

    ``on_connected(info)``: a connection was accepted (CONNACK success).
    ``on_disconnected(reason)``: a connection was lost or an attempt failed; further
    attempts follow on their own.
    ``on_puback(mid, ok, reason)``: the broker acknowledged ``mid``; ``ok`` is False
    for a failure reason code (the message was not accepted and must be sent again).
    """

    on_connected: Callable[[ConnectInfo], None]
    on_disconnected: Callable[[str], None]
    on_puback: Callable[[int, bool, str], None]


class MqttTransport(Protocol):
    """A minimal MQTT client as the publisher uses it (see the module docstring)."""

    def connect(self, callbacks: TransportCallbacks, will: WillMessage | None) -> None:
        """Start connecting in the background and keep the connection up until
        :meth:`disconnect`; return immediately."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Send one message on the current connection and return its message id.

        Raises DeliveryError when there is no connection or the client cannot queue it,
        and MessageRejected when the message itself can never be sent.
        """
        ...

    def disconnect(self) -> None:
        """Send DISCONNECT (so the broker discards the Will), stop the background work
        and return within a few seconds; blocking, so call it off the event loop."""
        ...
