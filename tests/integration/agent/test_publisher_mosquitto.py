"""The outbox publisher against a real Mosquitto: delivery, outages, status, crashes.

Subscribers are plain paho clients with persistent sessions, so that what the broker
accepted while they were away is still delivered to them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.common import MqttSettings
from agent.mqtt.publisher import MqttPublisher
from agent.mqtt.topics import kpi_topic, status_topic
from agent.outbox import SqliteOutbox
from agent.services import ManagedMosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
STATUS = status_topic("factory", "s1", "a1")


class Subscriber:
    """A paho subscriber recording (topic, payload, retain) in arrival order."""

    def __init__(self, broker: ManagedMosquitto, topic: str, client_id: str,
                 *, persistent: bool = True) -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600 if persistent else 0
        self.client.connect(broker.host, broker.port, clean_start=not persistent,
                            properties=props)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def received(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(cond: Callable[[], bool], within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110 - waiting on other processes and threads
            await asyncio.sleep(0.02)


async def retained(broker: ManagedMosquitto, topic: str, name: str) -> dict[str, Any]:
    """The retained message on ``topic`` as a fresh subscriber sees it."""
    sub = Subscriber(broker, topic, name, persistent=False)
    try:
        await until(lambda: bool(sub.received()), 10)
        _, payload, was_retained = sub.received()[0]
        assert was_retained
        body: dict[str, Any] = json.loads(payload)
        return body
    finally:
        sub.close()


def settings_for(broker: ManagedMosquitto, **kw: Any) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.2,
                        reconnect_max_s=1.0, **kw)


def messages(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """Distinct topics and payloads, including bytes that are not text."""
    return [(kpi_topic("factory", "s1", "line-a", f"m{i % 7}"),
             json.dumps({"seq": i}).encode() + bytes([0, 255, i % 256]))
            for i in range(start, start + n)]


@pytest.fixture
def outbox(tmp_path: Path) -> SqliteOutbox:
    return SqliteOutbox(tmp_path / "outbox.sqlite")


@pytest.fixture
async def subscriber(mosquitto: ManagedMosquitto) -> AsyncIterator[Subscriber]:
    sub = Subscriber(mosquitto, "factory/+/+/+/kpi", "test-sub")
    await asyncio.to_thread(sub.subscribed.wait, 5)
    yield sub
    sub.close()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_messages_arrive_exactly_as_put(
    mosquitto: ManagedMosquitto, outbox: SqliteOutbox, subscriber: Subscriber
) -> None:
    sent = messages(300)
    outbox.put_many(sent[:100])
    pub = MqttPublisher(settings_for(mosquitto), outbox, site_id="s1", agent_id="a1",
                        version="1.0")
    task = asyncio.create_task(pub.run())
    await until(lambda: pub.connected)
    outbox.put_many(sent[100:])
    pub.notify()
    await until(lambda: outbox.depth() == 0 and len(subscriber.received()) >= 300)
    await asyncio.sleep(0.2)
    got = [(t, p) for t, p, _ in subscriber.received()]
    assert got == sent, "every message once, in order, byte for byte"
    assert pub.stats.acked == 300 and pub.stats.inflight == 0
    await stop(task)


async def test_broker_outage_loses_nothing(
    mosquitto: ManagedMosquitto, outbox: SqliteOutbox, subscriber: Subscriber
) -> None:
    pub = MqttPublisher(settings_for(mosquitto, max_inflight=20), outbox, site_id="s1",
                        agent_id="a1", version="1.0")
    task = asyncio.create_task(pub.run())
    await until(lambda: pub.connected)
    outbox.put_many(messages(200))
    pub.notify()
    await asyncio.sleep(0.01)  # some are in flight when the broker goes away
    await asyncio.to_thread(mosquitto.stop)
    await until(lambda: not pub.connected, 10)
    outbox.put_many(messages(200, start=200))  # written while the broker is down
    pub.notify()
    await asyncio.sleep(3)
    assert outbox.depth() > 0
    await asyncio.to_thread(mosquitto.start)
    await until(lambda: pub.connected and outbox.depth() == 0, 30)
    expected = set(messages(400))
    await until(lambda: expected <= {(t, p) for t, p, _ in subscriber.received()}, 30)
    assert pub.stats.reconnects >= 1
    await stop(task)


async def test_status_is_retained_online_then_offline(
    mosquitto: ManagedMosquitto, outbox: SqliteOutbox
) -> None:
    pub = MqttPublisher(settings_for(mosquitto), outbox, site_id="s1", agent_id="a1",
                        version="1.2.3")
    task = asyncio.create_task(pub.run())
    await until(lambda: pub.connected)
    online = await retained(mosquitto, STATUS, "probe-1")
    assert online["state"] == "online" and online["version"] == "1.2.3"
    assert online["agent_id"] == "a1" and online["outbox_depth"] == 0
    await stop(task)
    offline = await retained(mosquitto, STATUS, "probe-2")
    assert offline["state"] == "offline" and offline["reason"] == "shutdown"


PUBLISHER_SCRIPT = """
import asyncio, sys
from pathlib import Path
from agent.config.common import MqttSettings
from agent.mqtt.publisher import MqttPublisher
from agent.outbox import SqliteOutbox

async def main() -> None:
    box = SqliteOutbox(Path(sys.argv[2]))
    pub = MqttPublisher(MqttSettings(port=int(sys.argv[1])), box, site_id="s1",
                        agent_id="victim", version="1.0")
    await pub.run()

asyncio.run(main())
"""

CRASHING_WRITER = """
import os, sys
from pathlib import Path
from agent.outbox import SqliteOutbox

box = SqliteOutbox(Path(sys.argv[1]))
box.put_many([(f"factory/s1/line-a/m1/kpi", b"%d" % i) for i in range(50)],
             state={"engine": '{"seq": 50}'})
os._exit(1)  # no close(), no checkpoint, no ack: as a crash would leave it
"""


CLASHING_PUBLISHER = """
import asyncio, sys
from pathlib import Path
from agent.config.common import MqttSettings
from agent.logs import setup_logging
from agent.mqtt.publisher import MqttPublisher
from agent.outbox import SqliteOutbox

setup_logging("info")
settings = MqttSettings(port=int(sys.argv[1]), protocol=sys.argv[3], reconnect_min_s=0.1,
                        reconnect_max_s=0.5)
pub = MqttPublisher(settings, SqliteOutbox(Path(sys.argv[2])), site_id="s1",
                    agent_id="twin", version="1.0")
asyncio.run(pub.run())
"""


def _python(*args: str) -> list[str]:
    return [sys.executable, "-c", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


async def test_last_will_marks_a_killed_agent_offline(
    mosquitto: ManagedMosquitto, tmp_path: Path
) -> None:
    topic = status_topic("factory", "s1", "victim")
    watcher = Subscriber(mosquitto, topic, "watcher", persistent=False)
    proc = await asyncio.create_subprocess_exec(
        *_python(PUBLISHER_SCRIPT, str(mosquitto.port), str(tmp_path / "victim.sqlite")),
        cwd=REPO, env=_env(),
    )
    try:
        def states() -> list[str]:
            return [json.loads(p)["state"] for _, p, _ in watcher.received()]

        await until(lambda: "online" in states(), 20)
        proc.kill()  # SIGKILL: no DISCONNECT, so the broker publishes the Will
        await until(lambda: states()[-1] == "offline", 20)
    finally:
        if proc.returncode is None:
            proc.kill()
        async with asyncio.timeout(10):
            await proc.wait()
        watcher.close()
    after = await retained(mosquitto, topic, "probe-lwt")
    assert after["state"] == "offline" and after["reason"] == "connection lost"


async def test_rows_survive_a_crash_and_are_delivered_after_restart(
    mosquitto: ManagedMosquitto, tmp_path: Path, subscriber: Subscriber
) -> None:
    path = tmp_path / "crash.sqlite"
    writer = await asyncio.create_subprocess_exec(*_python(CRASHING_WRITER, str(path)),
                                                  cwd=REPO, env=_env())
    async with asyncio.timeout(30):
        assert await writer.wait() == 1
    box = SqliteOutbox(path)  # fresh process view of what the crash left behind
    assert box.depth() == 50
    assert box.load_state("engine") == '{"seq": 50}'
    pub = MqttPublisher(settings_for(mosquitto), box, site_id="s1", agent_id="a1",
                        version="1.0")
    task = asyncio.create_task(pub.run())
    await until(lambda: box.depth() == 0 and len(subscriber.received()) >= 50)
    assert [p for _, p, _ in subscriber.received()] == [b"%d" % i for i in range(50)]
    await stop(task)


async def test_unacked_rows_survive_a_restart_of_the_publisher(
    mosquitto: ManagedMosquitto, tmp_path: Path, subscriber: Subscriber
) -> None:
    path = tmp_path / "outbox.sqlite"
    box = SqliteOutbox(path)
    box.put_many(messages(20))
    await asyncio.to_thread(mosquitto.stop)  # nothing can be acknowledged
    pub = MqttPublisher(settings_for(mosquitto), box, site_id="s1", agent_id="a1",
                        version="1.0")
    task = asyncio.create_task(pub.run())
    await asyncio.sleep(0.5)
    await stop(task)
    box.close()
    again = SqliteOutbox(path)
    assert again.depth() == 20
    await asyncio.to_thread(mosquitto.start)
    pub = MqttPublisher(settings_for(mosquitto), again, site_id="s1", agent_id="a1",
                        version="1.0")
    task = asyncio.create_task(pub.run())
    await until(lambda: again.depth() == 0)
    await until(lambda: set(messages(20)) <= {(t, p) for t, p, _ in subscriber.received()})
    await stop(task)


async def test_mqtt_311_mode(
    mosquitto: ManagedMosquitto, outbox: SqliteOutbox, subscriber: Subscriber
) -> None:
    pub = MqttPublisher(settings_for(mosquitto, protocol="3.1.1"), outbox, site_id="s1",
                        agent_id="a1", version="1.0")
    outbox.put_many(messages(50))
    task = asyncio.create_task(pub.run())
    await until(lambda: outbox.depth() == 0 and len(subscriber.received()) >= 50)
    assert [(t, p) for t, p, _ in subscriber.received()] == messages(50)
    online = await retained(mosquitto, STATUS, "probe-311")
    assert online["state"] == "online"
    await asyncio.to_thread(mosquitto.restart)
    outbox.put_many(messages(10, start=50))
    pub.notify()
    await until(lambda: pub.connected and outbox.depth() == 0, 30)
    await stop(task)
    offline = await retained(mosquitto, STATUS, "probe-311b")
    assert offline["state"] == "offline"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_two_agents_with_one_client_id_are_told_once_each(
    mosquitto: ManagedMosquitto, tmp_path: Path, protocol: str
) -> None:
    """Each takes the session from the other at every reconnect; each process logs one
    clash warning naming the client id, however many takeovers follow."""
    logs = [tmp_path / f"agent{i}.log" for i in (1, 2)]
    procs = []
    for i, log_path in enumerate(logs, 1):
        with log_path.open("wb") as out:
            procs.append(await asyncio.create_subprocess_exec(
                *_python(CLASHING_PUBLISHER, str(mosquitto.port),
                         str(tmp_path / f"outbox{i}.sqlite"), protocol),
                cwd=REPO, env=_env(), stderr=out))

    def takeovers(path: Path) -> int:
        return path.read_text(errors="replace").count("lost connection to MQTT broker")

    try:
        await until(lambda: all(takeovers(p) >= 8 for p in logs), 60)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        async with asyncio.timeout(20):
            for proc in procs:
                await proc.wait()
    for path in logs:
        text = path.read_text(errors="replace")
        warnings = [line for line in text.splitlines() if "client id clash" in line]
        assert len(warnings) == 1, text
        assert "WARNING" in warnings[0] and "'edge-s1-twin'" in warnings[0]
        assert "same client id" in warnings[0] and "[agent] id" in warnings[0]
