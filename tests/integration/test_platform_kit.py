"""The platform kit as an operator installs it: deploy/mosquitto and deploy/platform.

A real Mosquitto starts from the shipped files, laid out as deploy/mosquitto/README.md and
deploy/platform/docker-compose.yml install them:

* ``debian``: the installed Debian package's own /etc/mosquitto/mosquitto.conf (copied,
  never edited in place) with ``conf.d/platform.conf`` in its include directory;
* ``standalone``: ``deploy/mosquitto/mosquitto.conf`` as the main file;
* ``compose``: the compose broker's main file with the same conf.d file, every file at the
  place the compose file mounts it.

The password file is made with ``mosquitto_passwd`` as documented, the ACL is
``acl.example`` as shipped, and the TLS certificates are made here. What the test changes,
and only that: every absolute path moves under a temporary root (the files keep their
names and relative places), the listeners 1883 and 8883 move to free loopback ports, the
broker runs as the test's user (a packaged broker starts as root and drops to user
mosquitto, which cannot enter the test's directory), and the standalone file's syslog
output goes to stdout. Then the compose ingest config runs against that broker and a real
InfluxDB with org and bucket from the environment and the token from a file, as the
compose file hands them over, and the compose healthcheck command reports it ready.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w
import yaml  # type: ignore[import-untyped]
from paho.mqtt.enums import CallbackAPIVersion

from agent.mqtt.topics import kpi_topic
from agent.services import ManagedInfluxd, find_mosquitto, free_port
from rules.types import KpiRecord

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DEBIAN_MAIN = Path("/etc/mosquitto/mosquitto.conf")
USERS = {"ingest": "ingest-secret", "hb-sjz-01": "secret-sjz", "hb-bd-02": "secret-bd"}
MOVED = re.compile(r"(?<=\s)(/etc/mosquitto|/var/lib/mosquitto|/var/log/mosquitto"
                   r"|/run/mosquitto|/mosquitto)(?=[/\s]|$)", flags=re.MULTILINE)
NOT_AUTHORIZED = 135
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_unavailable(what: str, err: Exception) -> None:
    """Fail under CI, skip elsewhere (as tests/conftest.py does for its services)."""
    message = f"{what} unavailable: {err}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# ------------------------------------------------------------------ installing the broker


def _tls_material(directory: Path) -> None:
    """ca.pem, server.pem (subjectAltName localhost, 127.0.0.1) and server.key, as the
    README names them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory-platform test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))


def _password_file(path: Path) -> None:
    """As the README does it: ``-c`` creates the file with the first user, ``-b`` adds."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        service_unavailable("mosquitto_passwd", FileNotFoundError("not installed"))
    assert tool is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = USERS.items()
    subprocess.run([tool, "-c", "-b", str(path), *first], check=True, capture_output=True)
    for user, password in rest:
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)


def _listening_ports() -> set[int]:
    """The local TCP (IPv4) ports in LISTEN state."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Kit:
    """A broker installed from the shipped files under ``root``."""

    root: Path
    main: Path
    plain_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    stdout: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.stdout = self.root / "stdout.log"

    @property
    def ca(self) -> Path:
        return self.root / "etc/mosquitto/certs/ca.pem"

    def place(self, absolute: str) -> Path:
        """Where a file the broker expects at ``absolute`` lives in this installation."""
        return self.root / absolute.lstrip("/")

    def install(self, source: Path, target: str, *, main: bool = False) -> str:
        """Copy a shipped config file to ``target`` with the test's overrides; its text."""
        text = MOVED.sub(lambda m: f"{self.root}{m.group(1)}", source.read_text())
        text = re.sub(r"^listener 1883 127\.0\.0\.1$", f"listener {self.plain_port} 127.0.0.1",
                      text, flags=re.MULTILINE)
        text = re.sub(r"^listener 8883$", f"listener {self.tls_port} 127.0.0.1", text,
                      flags=re.MULTILINE)
        if main:
            text = re.sub(r"^user \S+$", "", text, flags=re.MULTILINE)
            text = f"user {getpass.getuser()}\n{text}"
        text = text.replace("log_dest syslog", "log_dest stdout")
        dest = self.place(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        return text

    def log(self) -> str:
        parts = [self.stdout.read_text(errors="replace") if self.stdout.exists() else ""]
        parts += [p.read_text(errors="replace") for p in self.root.glob("var/log/mosquitto/*")]
        return "\n".join(parts)

    def start(self) -> None:
        binary = find_mosquitto()
        if binary is None:
            service_unavailable("mosquitto", FileNotFoundError("not installed"))
        assert binary is not None
        with self.stdout.open("wb") as out:
            self.proc = subprocess.Popen([binary, "-c", str(self.main)], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        # Ready means both ports are in LISTEN state, read from /proc/net/tcp: a TCP probe
        # of the TLS port would itself be logged as an OpenSSL error, which the tests
        # forbid, and the broker's stdout log is block-buffered.
        deadline = time.monotonic() + 15
        while not {self.plain_port, self.tls_port} <= _listening_ports():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the broker did not start\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def _common_files(kit: Kit) -> None:
    """passwd, acl and certificates where conf.d/platform.conf names them."""
    _password_file(kit.place("/etc/mosquitto/passwd"))
    shutil.copyfile(DEPLOY / "mosquitto/acl.example", kit.place("/etc/mosquitto/acl"))
    _tls_material(kit.place("/etc/mosquitto/certs"))


def _debian(root: Path) -> Kit:
    if not DEBIAN_MAIN.is_file():
        service_unavailable("Debian's mosquitto.conf",
                            FileNotFoundError(f"{DEBIAN_MAIN} (apt-get install mosquitto)"))
    kit = Kit(root, root / "etc/mosquitto/mosquitto.conf")
    main = kit.install(DEBIAN_MAIN, "/etc/mosquitto/mosquitto.conf", main=True)
    assert f"include_dir {root}/etc/mosquitto/conf.d" in main, main
    # The package creates these directories.
    for directory in ("/var/lib/mosquitto", "/var/log/mosquitto", "/run/mosquitto"):
        kit.place(directory).mkdir(parents=True, exist_ok=True)
    kit.install(DEPLOY / "mosquitto/conf.d/platform.conf", "/etc/mosquitto/conf.d/platform.conf")
    _common_files(kit)
    return kit


def _standalone(root: Path) -> Kit:
    kit = Kit(root, root / "etc/mosquitto/mosquitto.conf")
    kit.install(DEPLOY / "mosquitto/mosquitto.conf", "/etc/mosquitto/mosquitto.conf", main=True)
    for directory in ("/var/lib/mosquitto", "/run/mosquitto"):
        kit.place(directory).mkdir(parents=True, exist_ok=True)
    _common_files(kit)
    return kit


def _compose(root: Path) -> Kit:
    """Every mount of the compose broker, at its target; secrets made as documented."""
    service = yaml.safe_load((DEPLOY / "platform/docker-compose.yml").read_text())[
        "services"]["mosquitto"]
    script = service["command"][-1]
    main_target = re.search(r"mosquitto -c (\S+)", script)
    assert main_target, script
    kit = Kit(root, root / main_target.group(1).lstrip("/"))
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source == "./secrets/mosquitto-passwd":
            _password_file(kit.place(target))
        elif source == "./secrets/mosquitto-certs":
            _tls_material(kit.place(target))
        elif source.startswith("."):
            kit.install((DEPLOY / "platform" / source).resolve(), target,
                        main=target == main_target.group(1))
        else:
            kit.place(target).mkdir(parents=True, exist_ok=True)  # a named volume
    return kit


LAYOUTS: dict[str, Callable[[Path], Kit]] = {
    "debian": _debian, "standalone": _standalone, "compose": _compose}


@pytest.fixture(params=sorted(LAYOUTS))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    broker = LAYOUTS[request.param](tmp_path / "root")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ------------------------------------------------------------------ MQTT clients


class Client:
    """A paho MQTT 5 client over TLS that records PUBACK reason codes and messages."""

    def __init__(self, kit: Kit, user: str, password: str) -> None:
        self.received: list[str] = []
        self.acks: dict[int, int] = {}
        self.subacks: set[int] = set()
        self.event = threading.Condition()
        self.connack: Any = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"kit-{user}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(kit.ca))
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", kit.tls_port)
        self.client.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        with self.event:
            self.connack = rc
            self.event.notify_all()

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.event:
            self.received.append(msg.topic)
            self.event.notify_all()

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, rc: Any, props: Any) -> None:
        with self.event:
            self.acks[mid] = int(rc.value)
            self.event.notify_all()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, codes: Any, props: Any) -> None:
        with self.event:
            self.subacks.add(mid)
            self.event.notify_all()

    def subscribe(self, topic: str) -> None:
        """Subscribe with QoS 1 and wait for the SUBACK."""
        _, mid = self.client.subscribe(topic, qos=1)
        self.wait(lambda: mid in self.subacks, f"SUBACK of {topic}")

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
        with self.event:
            if not self.event.wait_for(check, timeout_s):
                raise AssertionError(f"timed out waiting for {what}")

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish with QoS 1; the PUBACK reason code (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=1)
        self.wait(lambda: info.mid in self.acks, f"PUBACK of {topic}")
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------------ tests


def test_broker_starts_from_the_shipped_files_and_keeps_sites_apart(kit: Kit) -> None:
    ingest = Client(kit, "ingest", USERS["ingest"])
    site = Client(kit, "hb-sjz-01", USERS["hb-sjz-01"])
    try:
        assert not ingest.connack.is_failure and not site.connack.is_failure
        ingest.subscribe("factory/#")
        own = "factory/hb-sjz-01/line-1/cnc-01/kpi"
        foreign = "factory/hb-bd-02/line-1/cnc-01/kpi"
        assert site.publish(foreign) == NOT_AUTHORIZED
        assert ingest.publish(own) == NOT_AUTHORIZED  # the ingest only reads
        assert site.publish(own) == 0
        # The broker keeps one client's messages in order: once `own` arrived, `foreign`
        # would have arrived before it.
        ingest.wait(lambda: own in ingest.received, "the site's own message")
        assert foreign not in ingest.received and ingest.received.count(own) == 1
    finally:
        ingest.close()
        site.close()
    wrong = Client(kit, "hb-sjz-01", "not-the-password")
    wrong.close()
    assert wrong.connack.is_failure, wrong.connack
    kit.stop()
    log = kit.log()
    assert "Error" not in log and "Duplicate" not in log, log
    assert kit.proc is not None and kit.proc.returncode == 0, log


def _compose_service(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "platform/docker-compose.yml").read_text())
    service: dict[str, Any] = data["services"][name]
    return service


def _healthcheck(port: int) -> list[str]:
    """The compose healthcheck of the ingest, pointed at ``port``, run by this Python."""
    test = _compose_service("ingest")["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    code = test[-1]
    assert "http://127.0.0.1:9465/readyz" in code, code
    return [sys.executable, *test[2:-1], code.replace(":9465/", f":{port}/")]


def _ingest_argv(config: Path) -> list[str]:
    """The image's entrypoint with the compose command, the config moved to ``config``."""
    dockerfile = (DEPLOY / "platform/Dockerfile").read_text()
    found = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, flags=re.MULTILINE)
    assert found, "Dockerfile has no ENTRYPOINT"
    entrypoint = json.loads(found.group(1))
    assert entrypoint[0] == "edge-agent"
    command = [str(config) if arg == "/etc/edge-agent/ingest.toml" else arg
               for arg in _compose_service("ingest")["command"]]
    return [sys.executable, "-m", "agent.cli", *entrypoint[1:], *command]


@pytest.mark.parametrize("kit", ["compose"], indirect=True)
def test_compose_ingest_config_stores_a_site_record_and_reports_healthy(
    kit: Kit, influxdb: ManagedInfluxd, tmp_path: Path
) -> None:
    raw = tomllib.loads((DEPLOY / "platform/ingest.toml").read_text())
    assert {"org", "bucket", "token", "token_env"}.isdisjoint(raw["influxdb"]), raw["influxdb"]
    token_file = tmp_path / "influx-token" / "token"
    token_file.parent.mkdir()
    token_file.write_text(influxdb.token + "\n")
    health_port = free_port()
    raw["mqtt"].update(host="127.0.0.1", port=kit.tls_port)
    raw["mqtt"]["tls"]["ca_file"] = str(kit.ca)
    raw["influxdb"].update(url=influxdb.url, token_file=str(token_file))
    raw["ingest"]["dead_letter_path"] = str(tmp_path / "dead-letter.jsonl")
    raw["health"]["port"] = health_port
    config = tmp_path / "ingest.toml"
    config.write_text(tomli_w.dumps(raw))
    ingest_env = _compose_service("ingest")["environment"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MQTT_PASSWORD": USERS["ingest"],
           # InfluxDB 1.8's names for what .env calls INFLUX_ORG and INFLUX_BUCKET.
           "INFLUX_ORG": influxdb.org, "INFLUX_BUCKET": influxdb.bucket}
    assert {raw["mqtt"]["password_env"], raw["influxdb"]["org_env"],
            raw["influxdb"]["bucket_env"]} <= set(ingest_env)

    healthcheck = _healthcheck(health_port)
    before = subprocess.run(healthcheck, capture_output=True, timeout=30, check=False)
    assert before.returncode != 0  # nothing listens yet
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_ingest_argv(config), stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(healthcheck, capture_output=True, timeout=30,
                             check=False).returncode != 0:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
            time.sleep(0.5)

        end_ms = (int(time.time()) // 60 - 10) * 60_000
        record = KpiRecord(site="hb-sjz-01", line="line-1", machine="cnc-01", window="1m",
                           window_start_ms=end_ms - 60_000, window_end_ms=end_ms,
                           planned_busy_time_s=60.0, producing_time_s=50.0,
                           parts_produced=7, parts_good=7, parts_scrap=0)
        site = Client(kit, "hb-sjz-01", USERS["hb-sjz-01"])
        try:
            topic = kpi_topic(raw["mqtt"]["prefix"], "hb-sjz-01", "line-1", "cnc-01")
            payload = json.dumps(record.to_json_dict()).encode()
            assert site.publish(topic, payload) == 0
        finally:
            site.close()
        query = "SELECT parts_produced FROM kpi WHERE site = 'hb-sjz-01'"
        while not influxdb.rows(query):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline + 60, f"record not stored:\n{log.read_text()}"
            time.sleep(0.2)
        assert [row["parts_produced"] for row in influxdb.rows(query)] == [7]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
