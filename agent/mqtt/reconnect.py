"""Reconnecting a paho client: our jittered backoff, and spotting a client-id clash.

Shared by the agent's publisher and the ingest, so both reconnect and report alike.

paho's own reconnect delay doubles a fixed value without jitter, so a fleet of clients
would retry a restarted broker in step. paho waits ``reconnect_delay`` before each retry;
:class:`ReconnectPacer` sets that delay itself after every lost connection and every
failed attempt, from the project's one backoff (:class:`collectors.backoff.Backoff`).

A connection counts as established only once it has lasted :attr:`ReconnectPacer.stable_s`
(twice ``reconnect_max_s``, at least 10 s: a clashing twin is back within
``reconnect_max_s``, so a clash never looks established). Until then the backoff is not
reset, so a broker that drops us right after accepting us does not turn into a reconnect
storm.

Two clients with the same client id take the session from each other at every reconnect:
each connect makes the broker drop the other. With MQTT 5 a broker may say so (DISCONNECT
reason 0x8E "Session taken over"; Mosquitto sends it from 2.0.15, EMQX and HiveMQ do);
otherwise, and with MQTT 3.1.1, the only sign is connections that end right after they
were accepted. Either way one WARNING explains the clash and what to do, and it is not
repeated until a connection lasts again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.common import MqttSettings
from collectors.backoff import Backoff

__all__ = [
    "AGENT_CLIENT_ID_ADVICE",
    "CLASH_MARK",
    "INGEST_CLIENT_ID_ADVICE",
    "SESSION_TAKEN_OVER",
    "ReconnectPacer",
]

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason: another connection with the same client id took the session."""

CLASH_MARK = "client id clash"
"""Words every clash warning contains, for people and tools searching the log."""

AGENT_CLIENT_ID_ADVICE = ("Give each agent its own [agent] id or mqtt.client_id (the client id "
                          "is edge-<site id>-<agent id> unless mqtt.client_id is set).")
INGEST_CLIENT_ID_ADVICE = ("Give each ingest process its own ingest.client_id (the default, "
                           "edge-ingest-<hostname>, clashes when two share a host name).")

STABLE_MIN_S = 10.0
SHORT_CONNECTIONS_FOR_CLASH = 3
"""Connections in a row that end within ``stable_s`` before a clash is suspected."""


class ReconnectPacer:
    """Paces the reconnects of one paho client and watches for a client-id clash.

    Call :meth:`attach` before ``connect_async``, then from the paho callbacks
    :meth:`connected` (CONNACK success), :meth:`lost` (``on_disconnect`` while not
    stopping, which paho also calls after a refused CONNACK) and :meth:`failed`
    (``on_connect_fail``). All of them run on paho's network thread.

    ``advice`` ends the clash warning: what the operator should change.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        advice: str,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.advice = advice
        self.stable_s = max(STABLE_MIN_S, 2.0 * settings.reconnect_max_s)
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng=rng)
        self._clock = clock
        self._connected_at: float | None = None
        self._short_in_a_row = 0
        self._clash_reported = False

    @property
    def attempts(self) -> int:
        """Failed attempts and short-lived connections since the last lasting one."""
        return self._backoff.attempts

    @property
    def clash_reported(self) -> bool:
        """True while a clash has been reported and no connection has lasted since."""
        return self._clash_reported

    def attach(self, client: mqtt.Client) -> None:
        """Start afresh for a new client and set the delay of its first retry."""
        self._backoff.reset()
        self._connected_at = None
        self._short_in_a_row = 0
        self._clash_reported = False
        self._set_delay(client, self._backoff.peek_delay())

    def connected(self) -> None:
        """The broker accepted a connection."""
        self._connected_at = self._clock()

    def failed(self, client: mqtt.Client) -> None:
        """A connection attempt failed before the broker answered (TCP, TLS, DNS)."""
        self._connected_at = None
        self._set_delay(client, self._backoff.next_delay())

    def lost(self, client: mqtt.Client, reason: ReasonCode | None, *,
             from_broker: bool = False) -> bool:
        """A connection ended (or a CONNACK refused one); True if it looks like a clash.

        ``from_broker`` says the broker sent a DISCONNECT packet carrying ``reason``.
        """
        started, self._connected_at = self._connected_at, None
        clash = False
        if started is not None:
            lasted = self._clock() - started
            if lasted >= self.stable_s:
                self._backoff.reset()
                self._short_in_a_row = 0
                self._clash_reported = False
            else:
                self._short_in_a_row += 1
            where = f"{self.settings.host}:{self.settings.port}"
            if from_broker and reason is not None and reason.value == SESSION_TAKEN_OVER:
                clash = True
                self._report(f"broker {where} disconnected us because another client "
                             "connected with the same client id (reason: Session taken over)")
            elif self._short_in_a_row >= SHORT_CONNECTIONS_FOR_CLASH:
                clash = True
                self._report(
                    f"broker {where} dropped {self._short_in_a_row} connections in a row "
                    f"within {self.stable_s:.0f} s of accepting them; most likely another "
                    "client connected with the same client id (each connect makes the "
                    "broker drop the other), unless the broker's log names another cause")
        self._set_delay(client, self._backoff.next_delay())
        return clash

    def _report(self, what: str) -> None:
        if self._clash_reported:
            log.debug("MQTT %s on %r again: %s", CLASH_MARK, self.client_id, what)
            return
        self._clash_reported = True
        log.warning("MQTT %s on %r: %s. %s", CLASH_MARK, self.client_id, what, self.advice)

    @staticmethod
    def _set_delay(client: mqtt.Client, delay: float) -> None:
        # paho annotates the delays as int but computes with floats; sub-second jitter is
        # what keeps a fleet from retrying in step. Equal bounds: paho's own doubling
        # never applies, since we set the delay again before every retry.
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
