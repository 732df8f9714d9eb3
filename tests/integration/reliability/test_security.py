"""Issue #6, test 7: TLS with password auth works end to end, a wrong password is refused
with a clear log line, and a factory's credentials cannot publish into another factory's
topics. Also: the shipped deploy/mosquitto config starts a real broker."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo import simulator_config
from agent.services import ManagedMosquitto, free_port, wait_for_port
from rules.errors import ServiceError
from simulators.plant import Plant
from simulators.scenario import default_scenario

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy" / "mosquitto"
USERS = {"ingest": "ingest-secret", "site-a": "secret-a", "site-b": "secret-b"}


@pytest.fixture
def secure_broker(tmp_path: Path, security: Any) -> Iterator[tuple[ManagedMosquitto, int, Path]]:
    """Mosquitto with a TLS listener, a password file and the shipped ACL."""
    tls = security.make_tls_material(tmp_path / "certs")
    passwd = security.make_password_file(tmp_path / "passwd", USERS)
    acl = tmp_path / "acl"
    acl.write_text((DEPLOY / "acl.example").read_text())
    tls_port = free_port()
    broker = ManagedMosquitto(options=None)
    broker.options.extra_lines = [
        "allow_anonymous false",
        f"password_file {passwd}",
        f"acl_file {acl}",
        f"listener {tls_port} 127.0.0.1",
        f"cafile {tls['ca']}",
        f"certfile {tls['cert']}",
        f"keyfile {tls['key']}",
    ]
    try:
        broker.start()
    except ServiceError as err:
        broker.close()
        pytest.skip(f"mosquitto unavailable: {err}")
    try:
        yield broker, tls_port, tls["ca"]
    finally:
        broker.close()


def _client(port: int, ca: Path, user: str, password: str, client_id: str,
            received: list[tuple[str, bytes]] | None = None) -> tuple[mqtt.Client, Any]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca))
    client.username_pw_set(user, password)
    result: dict[str, Any] = {}
    connected = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        result["rc"] = rc
        connected.set()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        if received is not None:
            received.append((msg.topic, bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert connected.wait(20), f"{user}: no CONNACK"
    return client, result["rc"]


def _subscribe(client: mqtt.Client, topic: str) -> None:
    """Subscribe and wait for the SUBACK, so that what is published next is delivered."""
    acked = threading.Event()
    client.on_subscribe = lambda *_: acked.set()
    client.subscribe(topic, qos=1)
    assert acked.wait(20), f"no SUBACK for {topic}"


async def test_tls_password_auth_and_site_acl(
    secure_broker: tuple[ManagedMosquitto, int, Path], tmp_path: Path
) -> None:
    _, tls_port, ca = secure_broker
    received: list[tuple[str, bytes]] = []
    watcher, rc = _client(tls_port, ca, "ingest", USERS["ingest"], "watcher", received)
    assert not rc.is_failure, rc
    await asyncio.to_thread(_subscribe, watcher, "factory/#")
    site_a, rc = _client(tls_port, ca, "site-a", USERS["site-a"], "site-a")
    assert not rc.is_failure, rc
    own = site_a.publish("factory/site-a/line-a/m1/kpi", b'{"own": true}', qos=1)
    forged = site_a.publish("factory/site-b/line-a/m1/kpi", b'{"forged": true}', qos=1)
    # The broker handles one client's publications in order: once this one has been
    # delivered, the forged one before it would have been too, if it ever would.
    last = site_a.publish("factory/site-a/line-a/m1/kpi", b'{"last": true}', qos=1)
    for info in (own, forged, last):
        info.wait_for_publish(10)
    deadline = time.monotonic() + 20
    while (b'{"last": true}' not in [p for _, p in received]  # noqa: ASYNC110
           and time.monotonic() < deadline):
        await asyncio.sleep(0.05)
    topics = [t for t, _ in received]
    assert "factory/site-a/line-a/m1/kpi" in topics
    assert not any(t.startswith("factory/site-b/") for t in topics), topics
    # Wrong password and no password are refused at CONNACK.
    bad, rc = _client(tls_port, ca, "site-a", "wrong", "bad")
    assert rc.is_failure, rc
    assert "Bad user name or password" in str(rc) or "Not authorized" in str(rc), rc
    for c in (watcher, site_a, bad):
        c.disconnect()
        c.loop_stop()
    # Plain TCP without TLS to the TLS port fails; TLS without trusting the CA fails.
    untrusting = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="untrusting",
                             protocol=mqtt.MQTTv5)
    untrusting.tls_set(ca_certs=None)
    untrusting.username_pw_set("site-a", USERS["site-a"])
    with pytest.raises(ssl.SSLError):
        untrusting.connect("127.0.0.1", tls_port)


async def test_agent_over_tls_logs_a_clear_line_on_a_wrong_password(
    secure_broker: tuple[ManagedMosquitto, int, Path], tmp_path: Path, chain: Any
) -> None:
    """The real agent over TLS: with the right password its status reaches the broker;
    with a wrong one its log names the refusal ('Bad user name or password')."""
    _, tls_port, ca = secure_broker
    received: list[tuple[str, bytes]] = []
    watcher, _ = _client(tls_port, ca, "ingest", USERS["ingest"], "watcher", received)
    watcher.subscribe("factory/#", qos=1)
    async with Plant(default_scenario(machines=1, seed=5, fast=True),
                     ledger_dir=tmp_path / "ledger") as plant:
        for name, password in (("good", USERS["site-a"]), ("bad", "not-the-password")):
            raw = simulator_config(plant, mqtt_port=tls_port, window="5s",
                                   state_dir=tmp_path / f"state-{name}", lateness_s=1.0)
            raw["site"]["id"] = "site-a"
            raw["mqtt"].update({"username": "site-a", "password": password,
                                "tls": {"ca_file": str(ca)}})
            path = tmp_path / f"agent-{name}.toml"
            path.write_text(tomli_w.dumps(raw))
            agent = chain.run_agent(path, f"agent-{name}")
            if name == "good":
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and not any(  # noqa: ASYNC110
                        t.endswith("/kpi") for t, _ in received):
                    await asyncio.sleep(0.5)
                agent.stop()
                kpis = [json.loads(p) for t, p in received if t.endswith("/kpi")]
                assert kpis, f"no KPI record over TLS:\n{agent.text()[-3000:]}"
                assert all(k["site"] == "site-a" for k in kpis)
            else:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not re.search(  # noqa: ASYNC110
                        "Bad user name or password|Not authorized", agent.text()):
                    await asyncio.sleep(0.5)
                agent.stop()
                text = agent.text()
                line = next((ln for ln in text.splitlines()
                             if "Bad user name or password" in ln or "Not authorized" in ln),
                            None)
                assert line is not None, text[-3000:]
                assert "not-the-password" not in text  # secrets are never logged
    watcher.disconnect()
    watcher.loop_stop()


def test_deploy_mosquitto_conf_starts_a_real_broker(tmp_path: Path, security: Any) -> None:
    """The shipped platform config, with its paths moved into a temporary directory."""
    import getpass
    import subprocess

    from agent.services import find_mosquitto

    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    tls = security.make_tls_material(tmp_path / "certs")
    passwd = security.make_password_file(tmp_path / "passwd", USERS)
    acl = tmp_path / "acl"
    acl.write_text((DEPLOY / "acl.example").read_text())
    plain, secure = free_port(), free_port()
    replace = {
        "user mosquitto": f"user {getpass.getuser()}",
        "pid_file /run/mosquitto/mosquitto.pid": f"pid_file {tmp_path / 'mosquitto.pid'}",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {tmp_path}/",
        "listener 1883 127.0.0.1": f"listener {plain} 127.0.0.1",
        "listener 8883": f"listener {secure} 127.0.0.1",
        "cafile /etc/mosquitto/certs/ca.pem": f"cafile {tls['ca']}",
        "certfile /etc/mosquitto/certs/server.pem": f"certfile {tls['cert']}",
        "keyfile /etc/mosquitto/certs/server.key": f"keyfile {tls['key']}",
        "password_file /etc/mosquitto/passwd": f"password_file {passwd}",
        "acl_file /etc/mosquitto/acl": f"acl_file {acl}",
        "log_dest syslog": f"log_dest file {tmp_path / 'mosquitto.log'}",
    }
    text = (DEPLOY / "mosquitto.conf").read_text()
    for old, new in replace.items():
        assert old in text, f"deploy/mosquitto/mosquitto.conf no longer has {old!r}"
        text = text.replace(old, new)
    assert "max_queued_messages 1000000" in text and "allow_anonymous false" in text
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", secure, 15, proc)  # type: ignore[arg-type]
        client, rc = _client(secure, tls["ca"], "site-a", USERS["site-a"], "deploy-check")
        assert not rc.is_failure, rc
        client.disconnect()
        client.loop_stop()
        bad, rc = _client(secure, tls["ca"], "site-a", "wrong", "deploy-bad")
        assert rc.is_failure
        bad.loop_stop()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert b"Error" not in out, out.decode(errors="replace")


async def test_one_factory_cannot_write_into_another_factory_s_data(
    secure_broker: tuple[ManagedMosquitto, int, Path], tmp_path: Path, influxdb: Any,
) -> None:
    """Factory A's credentials cannot publish into B's topic (the broker refuses), nor
    into B's data through a payload naming B on A's own topic (the ingest refuses)."""
    import contextlib

    from agent.ingest.config import IngestConfig
    from agent.ingest.deadletter import read_dead_letters
    from agent.ingest.service import IngestService
    from rules.types import KpiRecord

    _, tls_port, ca = secure_broker
    config = IngestConfig.model_validate({
        "mqtt": {"host": "127.0.0.1", "port": tls_port, "username": "ingest",
                 "password": USERS["ingest"], "tls": {"ca_file": str(ca)}},
        "influxdb": {"url": influxdb.url, "token": influxdb.token, "org": influxdb.org,
                     "bucket": influxdb.bucket, "timeout_s": 2},
        "ingest": {"dead_letter_path": str(tmp_path / "dead.jsonl"), "client_id": "ingest-acl",
                   "retry_min_s": 0.2, "retry_max_s": 1.0},
    })
    service = IngestService(config)
    task = asyncio.create_task(service.run())
    acks: dict[int, Any] = {}
    done = threading.Event()

    def record(site: str, value: int) -> bytes:
        r = KpiRecord(site=site, line="line-a", machine="m1", window="1m",
                      window_start_ms=1_795_680_000_000, window_end_ms=1_795_680_060_000,
                      observed_s=60.0, planned_busy_time_s=60.0, parts_produced=value,
                      parts_good=value)
        return json.dumps(r.to_json_dict()).encode()

    try:
        await asyncio.wait_for(service.wait_subscribed(), 20)
        site_a, rc = _client(tls_port, ca, "site-a", USERS["site-a"], "site-a-agent")
        assert not rc.is_failure, rc

        def on_publish(c: mqtt.Client, u: Any, mid: int, reason: Any, props: Any) -> None:
            acks[mid] = reason
            if len(acks) == 3:
                done.set()

        site_a.on_publish = on_publish
        into_b = site_a.publish("factory/site-b/line-a/m1/kpi", record("site-b", 666), qos=1)
        genuine = site_a.publish("factory/site-a/line-a/m1/kpi", record("site-a", 7), qos=1)
        forged = site_a.publish("factory/site-a/line-a/m2/kpi", record("site-b", 999), qos=1)
        assert await asyncio.to_thread(done.wait, 20), acks
        assert acks[into_b.mid].is_failure and "Not authorized" in str(acks[into_b.mid])
        assert not acks[genuine.mid].is_failure and not acks[forged.mid].is_failure
        deadline = time.monotonic() + 30
        while service.stats.acked < 2:
            assert time.monotonic() < deadline, service.stats
            await asyncio.sleep(0.1)
        site_a.disconnect()
        site_a.loop_stop()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # the broker dropped the publish into B's topic: the ingest never saw it
    assert service.stats.received == 2
    rows = influxdb.rows("SELECT * FROM kpi")
    assert [(r["site"], r["machine"], r["parts_produced"]) for r in rows] == [
        ("site-a", "m1", 7)]
    dead = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(d["topic"], d["code"]) for d in dead] == [
        ("factory/site-a/line-a/m2/kpi", "ids_differ_from_topic")]
    assert "'site-b'" in dead[0]["reason"] and "site 'site-a'" in dead[0]["reason"]
    assert service.stats.rejected == {"ids_differ_from_topic": 1}
