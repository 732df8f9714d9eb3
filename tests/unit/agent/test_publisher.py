"""MqttPublisher against a fake transport: every delivery rule, without a network.

The fake follows the transport contract: mids are unique per connection, and a
connection that ends forgets its unacknowledged publishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.common import MqttSettings, TlsSettings
from agent.mqtt.paho_transport import PahoTransport, tls_context
from agent.mqtt.publisher import MqttPublisher
from agent.mqtt.transport import (
    ConnectInfo,
    MessageRejected,
    TransportCallbacks,
    WillMessage,
)
from agent.outbox import SqliteOutbox
from rules.errors import ConfigError, DeliveryError

STATUS = "factory/s1/_agent/a1/status"


@dataclass
class Sent:
    mid: int
    topic: str
    payload: bytes
    retain: bool


@dataclass
class FakeTransport:
    """An in-memory broker connection driven by the test."""

    callbacks: TransportCallbacks | None = None
    will: WillMessage | None = None
    up: bool = False
    auto_ack_status: bool = True
    fail_next: list[Exception] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    unacked: dict[int, Sent] = field(default_factory=dict)
    max_unacked: int = 0
    disconnected: bool = False
    _mid: int = 0

    # -- MqttTransport
    def connect(self, callbacks: TransportCallbacks, will: WillMessage | None) -> None:
        self.callbacks, self.will = callbacks, will

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        assert qos == 1
        if self.fail_next:
            raise self.fail_next.pop(0)
        if not self.up:
            raise DeliveryError("not connected")
        self._mid = self._mid % 65535 + 1
        msg = Sent(self._mid, topic, payload, retain)
        self.sent.append(msg)
        self.unacked[msg.mid] = msg
        self.max_unacked = max(self.max_unacked, len(self.unacked))
        if topic == STATUS and self.auto_ack_status:
            self.ack(msg.mid)
        return msg.mid

    def disconnect(self) -> None:
        self.disconnected = True
        self.up = False

    # -- test controls
    @property
    def cb(self) -> TransportCallbacks:
        assert self.callbacks is not None
        return self.callbacks

    def go_up(self, receive_maximum: int | None = None) -> None:
        self.up = True
        self.unacked.clear()
        self.cb.on_connected(ConnectInfo(False, receive_maximum))

    def go_down(self) -> None:
        self.up = False
        self.unacked.clear()
        self.cb.on_disconnected("connection: test")

    def ack(self, mid: int, ok: bool = True) -> None:
        self.unacked.pop(mid)
        self.cb.on_puback(mid, ok, "Success" if ok else "Quota exceeded (0x97)")

    def data(self) -> list[Sent]:
        return [s for s in self.sent if s.topic != STATUS]

    def unacked_data(self) -> list[Sent]:
        return [s for s in self.unacked.values() if s.topic != STATUS]

    def ack_data(self, predicate: Callable[[Sent], bool] = lambda s: True) -> None:
        for s in list(self.unacked_data()):
            if predicate(s):
                self.ack(s.mid)


async def until(cond: Callable[[], bool], within_s: float = 3.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110 - polling a fake driven by this test
            await asyncio.sleep(0.002)


@pytest.fixture
def outbox(tmp_path: Path) -> SqliteOutbox:
    return SqliteOutbox(tmp_path / "outbox.sqlite", synchronous="normal")


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


def make(outbox: SqliteOutbox, fake: FakeTransport, *, max_inflight: int = 100,
         **kw: Any) -> MqttPublisher:
    settings = MqttSettings(max_inflight=max_inflight, reconnect_min_s=0.01,
                            reconnect_max_s=0.05)
    return MqttPublisher(settings, outbox, site_id="s1", agent_id="a1", version="9.9",
                         transport=fake, **kw)


@pytest.fixture
async def running(
    outbox: SqliteOutbox, fake: FakeTransport
) -> AsyncIterator[tuple[MqttPublisher, asyncio.Task[None]]]:
    pub = make(outbox, fake)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    yield pub, task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def put(outbox: SqliteOutbox, n: int, start: int = 0) -> list[int]:
    return outbox.put_many([(f"factory/s1/l/m{i}/kpi", b"%d" % i) for i in range(start, start + n)])


async def test_publishes_in_id_order_and_deletes_only_on_puback(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    ids = put(outbox, 5)
    fake.go_up()
    pub.notify()
    await until(lambda: len(fake.data()) == 5)
    assert [s.payload for s in fake.data()] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(not s.retain for s in fake.data())
    await asyncio.sleep(0.05)
    assert outbox.depth() == 5, "nothing may be deleted before its PUBACK"
    fake.ack_data(lambda s: s.payload in (b"0", b"3"))
    await until(lambda: outbox.depth() == 3)
    assert [m.id for m in outbox.pending(10)] == [ids[1], ids[2], ids[4]]
    assert pub.stats.acked == 2 and pub.stats.inflight == 3
    assert pub.stats.last_publish_latency_s is not None


async def test_refused_puback_keeps_the_row_and_retries(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    put(outbox, 2)
    fake.go_up()
    await until(lambda: len(fake.data()) == 2)
    first = fake.data()[0]
    fake.ack(first.mid, ok=False)
    await until(lambda: len(fake.data()) == 3)  # the refused one goes out again
    assert fake.data()[2].payload == first.payload
    assert outbox.depth() == 2 and pub.stats.refused == 1
    assert "Quota exceeded" in (pub.stats.last_error or "")
    fake.ack_data()
    await until(lambda: outbox.depth() == 0)


async def test_inflight_never_exceeds_max_inflight(
    outbox: SqliteOutbox, fake: FakeTransport
) -> None:
    pub = make(outbox, fake, max_inflight=3)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    put(outbox, 20)
    fake.go_up()
    await until(lambda: len(fake.unacked_data()) == 3)
    for _ in range(30):
        if not fake.unacked:
            break
        await asyncio.sleep(0.01)
        assert len(fake.unacked) <= 3
        fake.ack(next(iter(fake.unacked)))
    await until(lambda: outbox.depth() == 0)
    assert fake.max_unacked <= 3
    assert [s.payload for s in fake.data()] == [b"%d" % i for i in range(20)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_broker_receive_maximum_caps_the_window(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    put(outbox, 10)
    fake.go_up(receive_maximum=4)
    await until(lambda: len(fake.unacked_data()) == 4)
    await asyncio.sleep(0.05)
    assert len(fake.unacked_data()) == 4


async def test_in_flight_messages_are_sent_again_after_a_reconnect(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    put(outbox, 4)
    fake.go_up()
    await until(lambda: len(fake.data()) == 4)
    fake.ack(fake.data()[0].mid)
    await until(lambda: outbox.depth() == 3)
    fake.go_down()
    await until(lambda: not pub.connected)
    assert pub.stats.inflight == 0
    put(outbox, 2, start=4)  # written during the outage
    pub.notify()
    await asyncio.sleep(0.05)
    assert len(fake.data()) == 4, "nothing is published while disconnected"
    fake.go_up()
    await until(lambda: len(fake.data()) == 4 + 5)
    assert [s.payload for s in fake.data()[4:]] == [b"1", b"2", b"3", b"4", b"5"]
    fake.ack_data()
    await until(lambda: outbox.depth() == 0)
    assert pub.stats.reconnects == 1
    online = [json.loads(s.payload) for s in fake.sent if s.topic == STATUS]
    assert [o["state"] for o in online] == ["online", "online"]


async def test_late_puback_from_an_old_connection_is_ignored(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    put(outbox, 1)
    fake.go_up()
    await until(lambda: len(fake.data()) == 1)
    old = fake.data()[0].mid
    fake.go_down()
    await until(lambda: not pub.connected)
    fake.cb.on_puback(old, True, "Success")  # must not delete: no live flight owns it
    fake.cb.on_puback(4242, True, "Success")
    await asyncio.sleep(0.05)
    assert outbox.depth() == 1


async def test_connection_loss_and_recovery_are_logged_once(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]], caplog: pytest.LogCaptureFixture,
) -> None:
    pub, _ = running
    fake.go_up()
    await until(lambda: pub.connected)
    with caplog.at_level(logging.INFO, logger="agent.mqtt.publisher"):
        caplog.clear()  # the first connect's line, if an earlier test left INFO enabled
        fake.go_down()
        for _ in range(5):
            fake.cb.on_disconnected("cannot connect to 127.0.0.1:1")
        fake.go_up()
        await until(lambda: pub.connected)
        await asyncio.sleep(0.02)
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.mqtt.publisher"]
    assert sum("lost connection" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert len(messages) == 2


async def test_transport_refusing_a_publish_defers_it(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    fake.go_up()
    await until(lambda: pub.connected)
    fake.fail_next.append(DeliveryError("socket went away"))
    put(outbox, 2)
    pub.notify()
    await until(lambda: len(fake.data()) == 2)
    assert [s.payload for s in fake.data()] == [b"0", b"1"]


async def test_a_message_the_client_rejects_is_parked_not_deleted(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]], caplog: pytest.LogCaptureFixture,
) -> None:
    pub, _ = running
    fake.go_up()
    await until(lambda: pub.connected)
    fake.fail_next.append(MessageRejected("payload too large"))
    put(outbox, 3)
    pub.notify()
    await until(lambda: len(fake.data()) == 2)
    assert [s.payload for s in fake.data()] == [b"1", b"2"]
    fake.ack_data()
    await until(lambda: outbox.depth() == 1)
    assert "cannot be published" in caplog.text


async def test_callbacks_from_other_threads_are_handed_to_the_loop(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    put(outbox, 3)
    thread = threading.Thread(target=fake.go_up)
    thread.start()
    thread.join()
    await until(lambda: len(fake.data()) == 3)

    def ack_all() -> None:
        for s in list(fake.unacked_data()):
            fake.ack(s.mid)
        pub.notify()

    thread = threading.Thread(target=ack_all)
    thread.start()
    thread.join()
    await until(lambda: outbox.depth() == 0)


async def test_callbacks_after_the_run_ended_do_not_raise(
    outbox: SqliteOutbox, fake: FakeTransport
) -> None:
    pub = make(outbox, fake)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake.cb.on_connected(ConnectInfo())
    fake.cb.on_puback(1, True, "Success")
    fake.cb.on_disconnected("late")
    pub.notify()


def test_callbacks_into_a_closed_loop_do_not_raise(
    outbox: SqliteOutbox, fake: FakeTransport
) -> None:
    pub = make(outbox, fake)
    loop = asyncio.new_event_loop()
    task = loop.create_task(pub.run())
    loop.run_until_complete(asyncio.sleep(0.01))
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    pub._loop = loop  # as if a network-thread callback raced the end of the run
    loop.close()
    fake.cb.on_puback(1, True, "Success")
    fake.cb.on_disconnected("late")
    pub.notify()


async def test_a_failing_handler_is_contained(
    outbox: SqliteOutbox, fake: FakeTransport,
    running: tuple[MqttPublisher, asyncio.Task[None]], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub, task = running

    def broken(info: ConnectInfo) -> None:
        raise RuntimeError("bug in a handler")

    monkeypatch.setattr(pub, "_on_connected", broken)
    fake.go_up()
    await asyncio.sleep(0.05)
    assert "contained" in caplog.text and not task.done()


async def test_status_online_then_offline_on_cancel(
    outbox: SqliteOutbox, fake: FakeTransport
) -> None:
    pub = make(outbox, fake)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    assert fake.will is not None and fake.will.topic == STATUS and fake.will.retain
    assert json.loads(fake.will.payload)["state"] == "offline"
    put(outbox, 2)
    fake.go_up()
    await until(lambda: any(s.topic == STATUS for s in fake.sent))
    status = next(s for s in fake.sent if s.topic == STATUS)
    body = json.loads(status.payload)
    assert status.retain
    assert body["state"] == "online" and body["agent_id"] == "a1" and body["version"] == "9.9"
    assert {"started", "uptime_s", "outbox_depth"} <= body.keys()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    last = fake.sent[-1]
    assert last.topic == STATUS and last.retain
    assert json.loads(last.payload)["state"] == "offline"
    assert fake.disconnected and not pub.connected
    assert outbox.depth() == 2


async def test_shutdown_waits_for_the_offline_puback_only_so_long(
    outbox: SqliteOutbox, fake: FakeTransport
) -> None:
    fake.auto_ack_status = False
    pub = make(outbox, fake, shutdown_timeout_s=0.1)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    fake.go_up()
    await until(lambda: len(fake.sent) == 1)
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fake.disconnected


async def test_status_is_refreshed_periodically(
    outbox: SqliteOutbox, fake: FakeTransport
) -> None:
    pub = make(outbox, fake, status_interval_s=0.05)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    fake.go_up()
    await until(lambda: sum(s.topic == STATUS for s in fake.sent) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_drain_rate_limits_publishing(outbox: SqliteOutbox, fake: FakeTransport) -> None:
    pub = make(outbox, fake, drain_rate_per_s=50.0)
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    put(outbox, 80)
    fake.go_up()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await until(lambda: len(fake.data()) == 80, within_s=5)
    # A burst of up to 50, then 50 per second for the rest.
    assert loop.time() - start >= 0.45
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_twice_at_once_is_refused(
    running: tuple[MqttPublisher, asyncio.Task[None]],
) -> None:
    pub, _ = running
    with pytest.raises(DeliveryError, match="already running"):
        await pub.run()


# -- the paho transport's own guards (no network) ---------------------------------------


def _raising(*args: object) -> None:
    raise RuntimeError("handler bug")


def test_paho_callbacks_never_let_an_exception_escape(caplog: pytest.LogCaptureFixture) -> None:
    transport = PahoTransport(MqttSettings(), client_id="c1")
    client = transport._build_client(None)
    transport._callbacks = TransportCallbacks(_raising, _raising, _raising)
    ok = ReasonCode(PacketTypes.PUBACK, "Success")
    transport._on_publish(client, None, 1, ok, None)
    transport._on_connect(client, None, client_flags(), ReasonCode(PacketTypes.CONNACK, "Success"),
                          None)
    transport._on_disconnect(client, None, disconnect_flags(),
                             ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"), None)
    transport._on_connect_fail(client, None)
    assert caplog.text.count("(contained)") == 4


def client_flags() -> ConnectFlags:
    return ConnectFlags(session_present=False)


def disconnect_flags() -> DisconnectFlags:
    return DisconnectFlags(is_disconnect_packet_from_server=False)


def test_publish_without_connection_is_a_delivery_error() -> None:
    transport = PahoTransport(MqttSettings(), client_id="c1")
    with pytest.raises(DeliveryError, match="not connected"):
        transport.publish("t", b"x")


async def test_a_transport_that_cannot_start_leaves_the_publisher_reusable(
    outbox: SqliteOutbox, fake: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = make(outbox, fake)

    def refuse(callbacks: TransportCallbacks, will: WillMessage | None) -> None:
        raise DeliveryError("bad host")

    monkeypatch.setattr(fake, "connect", refuse)
    with pytest.raises(DeliveryError, match="bad host"):
        await pub.run()
    monkeypatch.undo()
    task = asyncio.create_task(pub.run())
    await until(lambda: fake.callbacks is not None)
    await stop_task(task)


async def stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_credentials_and_tls_come_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQTT_PW", "s3cret")
    settings = MqttSettings(username="edge", password_env="MQTT_PW",
                            tls=TlsSettings(insecure_skip_verify=True), protocol="3.1.1")
    client = PahoTransport(settings, client_id="c1")._build_client(
        WillMessage(STATUS, b'{"state":"offline"}'))
    assert client.username == "edge" and client.password == "s3cret"
    assert client._ssl_context is not None
    assert client._ssl_context.verify_mode == ssl.CERT_NONE


def test_missing_tls_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.tls"):
        tls_context(TlsSettings(ca_file=tmp_path / "missing-ca.pem"))


def test_missing_password_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_PW", raising=False)
    settings = MqttSettings(username="edge", password_env="NOPE_PW")
    with pytest.raises(ConfigError, match="NOPE_PW"):
        PahoTransport(settings, client_id="c1")._build_client(None)
