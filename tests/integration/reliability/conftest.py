"""Shared rig for the "nothing lost, nothing doubled" scenarios (issue #6).

A :class:`Chain` runs the real processes (``edge-agent run`` and ``edge-agent ingest`` as
subprocesses from the ``edge_agent`` fixture, so they can be killed with SIGKILL) against
the simulators, a real Mosquitto and a real InfluxDB, and checks InfluxDB window by
window against the simulators' ledger: every closed window present exactly once, no gap
in the sequence of window ends, and the counts equal to the truth (exactly where the
agent saw the whole window; as a sum over the windows around a crash, where a value that
changed twice while the agent was down can only be seen once).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.demo import simulator_config
from agent.services import ManagedInfluxd, ManagedMosquitto
from rules.types import KpiRecord
from simulators.ledger import energy_in, max_power_kw, parts_in, read_ledger
from simulators.plant import Plant

WINDOW_S = 5
WINDOW_MS = WINDOW_S * 1000
LATENESS_S = 5.0  # generous: a loaded 2-core CI box can delay a notification by seconds
POLL_S = 1.0
T0 = 1_795_680_000_000


class Monitor:
    """A persistent MQTT 5 subscriber that records every KPI publication (replays too)."""

    def __init__(self, broker: ManagedMosquitto, topic: str = "factory/+/+/+/kpi") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-monitor",
                                  protocol=mqtt.MQTTv5)
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props: Any = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def assert_replays_identical(self) -> int:
        """Every publication of the same window carries the same payload; returns windows."""
        seen: dict[tuple[str, str], set[bytes]] = defaultdict(set)
        with self._lock:
            for topic, payload in self.messages:
                seen[(topic, json.loads(payload)["window_end"])].add(payload)
        differing = {k: v for k, v in seen.items() if len(v) > 1}
        assert not differing, f"a window was published with different contents: {differing}"
        return len(seen)


def ledger(plant: Plant) -> list[dict[str, Any]]:
    return [e for path in plant.ledger_paths().values() for e in read_ledger(path)]


async def eventually(check: Callable[[], bool], *, timeout_s: float, what: str,
                     every_s: float = 0.5) -> None:
    """Poll ``check`` (in a thread: it may query a server) until true or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


def kpi_record(site: str, line: str, machine: str, i: int) -> KpiRecord:
    """A synthetic, distinct KPI record (the value ``parts_produced`` identifies it)."""
    return KpiRecord(site=site, line=line, machine=machine, window="1m",
                     window_start_ms=T0 + 60_000 * i, window_end_ms=T0 + 60_000 * (i + 1),
                     planned_busy_time_s=60.0, producing_time_s=50.0, parts_produced=i,
                     parts_good=i, parts_scrap=0, energy_kwh=1.5)


def publish_records(broker: ManagedMosquitto, messages: list[tuple[str, bytes]],
                    client_id: str, *, rate_per_s: float | None = None) -> None:
    """Publish with QoS 1 and wait for every PUBACK (optionally at a steady rate)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        started = time.monotonic()
        infos = []
        for n, (topic, body) in enumerate(messages):
            infos.append(client.publish(topic, body, qos=1))
            if rate_per_s is not None and n % 50 == 0:
                ahead = started + n / rate_per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        for info in infos:
            info.wait_for_publish(120)
            assert info.is_published(), f"{client_id}: a publish was not acknowledged"
    finally:
        client.disconnect()
        client.loop_stop()


class Chain:
    """Simulators -> agent -> Mosquitto -> ingest -> InfluxDB, as separate processes."""

    def __init__(self, tmp_path: Path, mosquitto: ManagedMosquitto,
                 influxdb: ManagedInfluxd, spawn: Callable[[list[str], Path], Any]) -> None:
        self.tmp = tmp_path
        self.mosquitto = mosquitto
        self.influxdb = influxdb
        self.spawn = spawn

    def agent_config(self, plant: Plant) -> Path:
        raw = simulator_config(plant, mqtt_port=self.mosquitto.port, window=f"{WINDOW_S}s",
                               state_dir=self.tmp / "state", lateness_s=LATENESS_S)
        path = self.tmp / "agent.toml"
        path.write_text(tomli_w.dumps(raw))
        return path

    def ingest_config(self, **ingest: Any) -> Path:
        path = self.tmp / "ingest.toml"
        path.write_text(tomli_w.dumps({
            "mqtt": {"host": self.mosquitto.host, "port": self.mosquitto.port,
                     "client_id": "reliability-ingest", "reconnect_min_s": 0.5,
                     "reconnect_max_s": 2.0},
            "influxdb": {"url": self.influxdb.url, "org": self.influxdb.org,
                         "bucket": self.influxdb.bucket, "token": self.influxdb.token},
            "ingest": {"dead_letter_path": str(self.tmp / "dead.jsonl"), "retry_min_s": 0.2,
                       "retry_max_s": 2.0, **ingest},
        }))
        return path

    def run_agent(self, config: Path, name: str = "agent") -> Any:
        return self.spawn(["run", "-c", str(config)], self.tmp / f"{name}.log")

    def run_ingest(self, config: Path, name: str = "ingest") -> Any:
        return self.spawn(["ingest", "-c", str(config)], self.tmp / f"{name}.log")

    def kpi_rows(self) -> list[dict[str, Any]]:
        return self.influxdb.rows("SELECT * FROM kpi")

    def count(self, measurement: str = "kpi", field: str = "parts_produced") -> int:
        rows = self.influxdb.rows(f"SELECT count({field}) FROM {measurement}")
        return int(rows[0]["count"]) if rows else 0  # type: ignore[call-overload]

    async def wait_settled(self, minimum: int = 1, timeout_s: float = 60) -> None:
        """Wait until InfluxDB holds at least ``minimum`` KPI points and stops growing."""
        last = -1
        stable = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = await asyncio.to_thread(self.count)
            stable = stable + 1 if now == last and now >= minimum else 0
            if stable >= 3:
                return
            last = now
            await asyncio.sleep(1.5)
        raise AssertionError(f"InfluxDB did not settle (last count {last}, want >= {minimum})")

    def dead_letters(self) -> list[dict[str, Any]]:
        path = self.tmp / "dead.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def check_windows(
        self, plant: Plant, *, started_ms: int, stopped_ms: int,
        disturbed: list[tuple[int, int]] = (),  # type: ignore[assignment]
    ) -> int:
        """Every closed window exactly once, no gaps, and the counts equal to the ledger.

        Windows overlapping a ``disturbed`` interval (a crash and its restart) are compared
        as a sum over each contiguous run of them; all others one by one. Returns the number
        of windows compared one by one.
        """
        rows = self.kpi_rows()
        keys = [(r["site"], r["line"], r["machine"], r["window"], r["time"]) for r in rows]
        assert len(keys) == len(set(keys)), "a window is stored twice"
        by_series: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for row in rows:
            assert row["window"] == f"{WINDOW_S}s"
            by_series[str(row["machine"])][int(row["time"])] = row
        series = [*plant.machines, "_line", "_site"]
        assert set(by_series) == set(series), sorted(by_series)
        reference = sorted(by_series[plant.machines[0]])
        first, last = reference[0], reference[-1]
        # No gap: every window end between the first and the last, in every series.
        assert reference == list(range(first, last + 1, WINDOW_MS)), (
            f"missing windows: {sorted(set(range(first, last + 1, WINDOW_MS)) - set(reference))}")
        for name in series:
            assert sorted(by_series[name]) == reference, f"{name} has other windows"
        # Everything the agent should have closed is there: from its first window to the
        # last one whose end plus lateness had passed when it stopped (one tick of slack).
        assert first <= started_ms + 3 * WINDOW_MS, (first, started_ms)
        should_close = (stopped_ms - int(LATENESS_S * 1000)) // WINDOW_MS * WINDOW_MS
        assert last >= should_close - WINDOW_MS, (last, should_close)

        events = ledger(plant)

        def in_disturbance(end: int) -> bool:
            start = end - WINDOW_MS
            return any(start < b and end > a for a, b in disturbed)

        compared = 0
        for i, machine in enumerate(plant.machines):
            meter, _ = plant.meters[i]
            tolerance = max_power_kw(events, meter) * Decimal(POLL_S) / 3600 + Decimal("0.02")
            run: list[int] = []
            for end in [*reference, None]:
                if end is not None and end - WINDOW_MS < started_ms + 3000:
                    continue
                if end is not None and in_disturbance(end):
                    run.append(end)
                    continue
                if run:  # a run of disturbed windows: the sums must match
                    a, b = run[0] - WINDOW_MS, run[-1]
                    got = sum(int(by_series[machine][e]["parts_produced"]) for e in run)
                    scrap = sum(int(by_series[machine][e]["parts_scrap"]) for e in run)
                    assert (got, scrap) == parts_in(events, machine, a, b), (
                        machine, run, got, scrap)
                    run = []
                if end is None:
                    break
                row = by_series[machine][end]
                if "incomplete" in str(row.get("flags") or ""):
                    continue
                produced, scrap = parts_in(events, machine, end - WINDOW_MS, end)
                assert (row["parts_produced"], row["parts_scrap"]) == (produced, scrap), (
                    machine, end, row)
                assert row["parts_good"] == produced - scrap
                energy = energy_in(events, meter, end - WINDOW_MS, end)
                assert abs(Decimal(str(row["energy_kwh"])) - energy) <= tolerance, (
                    machine, end, row["energy_kwh"], energy, tolerance)
                compared += 1
        return compared


@pytest.fixture
def chain(tmp_path: Path, mosquitto: ManagedMosquitto, influxdb: ManagedInfluxd,
          edge_agent: Callable[[list[str], Path], Any]) -> Chain:
    """The rig; every process it started is killed at the end, whatever happened."""
    return Chain(tmp_path, mosquitto, influxdb, edge_agent)


@pytest.fixture
def monitor(mosquitto: ManagedMosquitto) -> Iterator[Monitor]:
    """A persistent subscriber recording every KPI publication, replays included."""
    mon = Monitor(mosquitto)
    try:
        yield mon
    finally:
        mon.close()


@pytest.fixture
def helpers() -> Any:
    """The module-level helpers (this folder is imported in importlib mode)."""
    import types

    return types.SimpleNamespace(kpi_record=kpi_record, publish_records=publish_records,
                                 eventually=eventually)


def make_tls_material(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throwaway CA and a server certificate for ``host`` (IP and DNS subjectAltName)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test platform CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem",
             "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return paths


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file made with ``mosquitto_passwd -b``."""
    import shutil

    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path.write_text("")
    for user, password in users.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True,
                       capture_output=True)
    return path


@pytest.fixture
def security() -> Any:
    """TLS and password-file helpers."""
    import types

    return types.SimpleNamespace(make_tls_material=make_tls_material,
                                 make_password_file=make_password_file)
