"""ReconnectPacer: paho's retry delay from the shared backoff, and the client-id clash
warning (once per episode), driven by a fake clock without a network."""

from __future__ import annotations

import logging
import random

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.common import MqttSettings
from agent.mqtt.reconnect import CLASH_MARK, SESSION_TAKEN_OVER, ReconnectPacer

TAKEN_OVER = ReasonCode(PacketTypes.DISCONNECT, identifier=SESSION_TAKEN_OVER)
LOST = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
ADVICE = "Give each one its own id."


class RecordingClient(mqtt.Client):
    """A real paho client that is never connected; it records the delays set on it."""

    def __init__(self) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id="c")
        self.delays: list[tuple[float, float]] = []

    def reconnect_delay_set(self, min_delay: int = 1, max_delay: int = 120) -> None:
        self.delays.append((min_delay, max_delay))
        super().reconnect_delay_set(min_delay, max_delay)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def pacer(clock: Clock, **settings: float) -> tuple[ReconnectPacer, RecordingClient]:
    s = MqttSettings.model_validate({"reconnect_min_s": 0.5, "reconnect_max_s": 4.0,
                                     **settings})
    p = ReconnectPacer(s, "edge-s1-a1", advice=ADVICE, rng=random.Random(3), clock=clock)
    client = RecordingClient()
    p.attach(client)
    return p, client


def clash_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and CLASH_MARK in r.getMessage()]


def connection(p: ReconnectPacer, client: mqtt.Client, clock: Clock, lasted_s: float,
               reason: ReasonCode = LOST, *, from_broker: bool = False) -> bool:
    p.connected()
    clock.now += lasted_s
    return p.lost(client, reason, from_broker=from_broker)


def test_a_takeover_is_reported_once_with_the_client_id_and_what_to_do(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    p, client = pacer(clock)
    caplog.set_level(logging.DEBUG, "agent.mqtt.reconnect")
    for _ in range(5):
        assert connection(p, client, clock, 0.3, TAKEN_OVER, from_broker=True)
    lines = clash_lines(caplog)
    assert len(lines) == 1
    assert "'edge-s1-a1'" in lines[0] and "Session taken over" in lines[0]
    assert "another client connected with the same client id" in lines[0]
    assert lines[0].endswith(ADVICE)


def test_a_lasting_connection_ends_the_episode(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    p, client = pacer(clock)
    connection(p, client, clock, 0.3, TAKEN_OVER, from_broker=True)
    assert p.clash_reported
    connection(p, client, clock, p.stable_s + 1)  # the other client went away
    assert not p.clash_reported
    connection(p, client, clock, 0.3, TAKEN_OVER, from_broker=True)  # and came back
    assert len(clash_lines(caplog)) == 2


def test_without_a_reason_code_repeated_short_connections_suggest_a_clash(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    p, client = pacer(clock, protocol="3.1.1")  # type: ignore[arg-type]
    assert not connection(p, client, clock, 0.4)
    assert not connection(p, client, clock, 1.5)
    assert clash_lines(caplog) == []
    assert connection(p, client, clock, 0.2)
    for _ in range(4):
        connection(p, client, clock, 0.2)
    lines = clash_lines(caplog)
    assert len(lines) == 1
    assert "3 connections in a row" in lines[0] and "same client id" in lines[0]


def test_failed_attempts_and_refusals_are_not_a_clash(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    p, client = pacer(clock)
    for _ in range(6):
        p.failed(client)  # broker unreachable
        assert not p.lost(client, LOST)  # CONNACK refused: paho reports a disconnect
    assert clash_lines(caplog) == [] and p.attempts == 12


def test_a_drop_after_a_long_connection_is_not_a_clash(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    p, client = pacer(clock)
    for _ in range(5):
        assert not connection(p, client, clock, p.stable_s)
    assert clash_lines(caplog) == []


def test_delays_come_from_the_backoff_and_reset_only_after_a_lasting_connection(
    clock: Clock,
) -> None:
    p, client = pacer(clock)
    assert p.stable_s == 10.0  # twice reconnect_max_s, at least 10 s
    first = client.delays[-1]
    assert first[0] == first[1] and 0.5 <= first[0] <= 1.0
    for _ in range(6):
        connection(p, client, clock, 0.1)  # dropped right away: keep backing off
    assert p.attempts == 6
    assert all(0.5 <= lo == hi <= 4.0 for lo, hi in client.delays)
    assert len({lo for lo, _ in client.delays[-3:]}) == 3  # jittered
    connection(p, client, clock, p.stable_s)
    assert p.attempts == 1  # started over, this loss is the first retry
    assert client.delays[-1][0] <= 1.0


def test_attach_starts_over(clock: Clock) -> None:
    p, client = pacer(clock)
    for _ in range(4):
        connection(p, client, clock, 0.1, TAKEN_OVER, from_broker=True)
    fresh = RecordingClient()
    p.attach(fresh)
    assert p.attempts == 0 and not p.clash_reported and len(fresh.delays) == 1
