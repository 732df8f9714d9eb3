"""What an operator installs from deploy/ is complete and consistent.

systemd units (verified by systemd-analyze when present, else parsed), the platform
docker-compose file and everything it mounts, Grafana provisioning and dashboards, the
Telegraf config and the example ingest config. Nothing here needs a network or Docker;
the dashboards' queries are run against a real InfluxDB in
tests/integration/test_dashboards.py.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.ingest.config import load_ingest_config
from agent.ingest.points import LINE_PLACEHOLDER, SITE_PLACEHOLDER
from agent.ingest.schema import COUNT_FIELDS, KPI_SCHEMA
from rules.types import KPI_FIELDS

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = {
    "edge-agent.service": ("run", "/etc/edge-agent/agent.toml"),
    "edge-ingest.service": ("ingest", "/etc/edge-agent/ingest.toml"),
}
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


# ---------------------------------------------------------------- systemd


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          delimiters=("=",), comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name, encoding="utf-8")
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_has_the_required_options(name: str) -> None:
    unit = _unit(name)
    service = unit["Service"]
    command, config = UNITS[name]
    exec_start = service["ExecStart"]
    assert exec_start.startswith("/opt/edge-agent/venv/bin/edge-agent ")
    assert f" {command} " in exec_start and exec_start.endswith(f"-c {config}")
    assert "check-config" in service["ExecStartPre"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["TimeoutStopSec"]
    assert service["User"] and service["User"] != "root"
    assert service["StateDirectory"]
    assert service["ReadWritePaths"] == f"/var/lib/{service['StateDirectory']}"
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "CapabilityBoundingSet": "", "StandardOutput": "journal",
        "StandardError": "journal",
    }.items():
        assert service[key] == value, key
    families = set(service["RestrictAddressFamilies"].split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["Wants"]


def test_agent_unit_can_open_serial_ports_for_modbus_rtu() -> None:
    service = _unit("edge-agent.service")["Service"]
    assert service["SupplementaryGroups"] == "dialout"
    assert "PrivateDevices" not in service
    # RawConfigParser keeps only the last of repeated keys; read them from the file.
    text = (DEPLOY / "systemd" / "edge-agent.service").read_text()
    allowed = re.findall(r"^DeviceAllow=(\S+) rw$", text, flags=re.MULTILINE)
    assert {"char-ttyS", "char-ttyUSB"} <= set(allowed)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart binaries exist: point them at this install's script.
    binary = shutil.which("edge-agent") or sys.executable
    paths = []
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        target = tmp_path / name
        target.write_text(text.replace("/opt/edge-agent/venv/bin/edge-agent", binary))
        paths.append(str(target))
    res = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True,
                         text=True, timeout=60, check=False)
    output = (res.stdout + res.stderr).strip()
    ours = [line for line in output.splitlines() if any(n in line for n in UNITS)]
    assert res.returncode == 0 and not ours, output


# ---------------------------------------------------------------- docker-compose


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "platform" / "docker-compose.yml").read_text())
    return data


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_compose_has_the_platform_services() -> None:
    services = _compose()["services"]
    assert {"mosquitto", "influxdb", "grafana", "ingest"} <= set(services)
    influx_env = services["influxdb"]["environment"]
    for key in ("MODE", "USERNAME", "PASSWORD", "ORG", "BUCKET", "RETENTION", "ADMIN_TOKEN"):
        assert f"DOCKER_INFLUXDB_INIT_{key}" in influx_env, key
    assert str(services["influxdb"]["image"]).startswith("influxdb:2")


def test_compose_bind_mounts_and_build_reference_files_in_the_repo() -> None:
    base = DEPLOY / "platform"
    secrets_doc = (base / "secrets" / "README.md").read_text()
    missing = []
    for name, service in _compose()["services"].items():
        for source, _ in _bind_mounts(service):
            if source.startswith("./secrets/"):
                # provided by the operator (keys, passwords), never in the repo
                assert f"`{source.removeprefix('./secrets/').split('/')[0]}" in secrets_doc
                continue
            if not (base / source).exists():
                missing.append(f"{name}: {source}")
        build = service.get("build")
        if build:
            context = (base / build["context"]).resolve()
            assert context == REPO
            assert (context / build["dockerfile"]).is_file()
    assert not missing, f"mounted paths missing from the repo: {missing}"


def test_compose_mounts_the_broker_grafana_and_ingest_configs() -> None:
    services = _compose()["services"]
    broker = _bind_mounts(services["mosquitto"])
    assert ("../mosquitto/mosquitto.conf", "/mosquitto/config/mosquitto.conf") in broker
    # every file the broker config names is mounted where it looks for it
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    targets = [t for _, t in broker] + [v.split(":")[1] for v in services["mosquitto"]["volumes"]]
    for key in ("cafile", "certfile", "keyfile", "password_file", "acl_file",
                "persistence_location"):
        found = re.search(rf"^{key}\s+(\S+)", conf, flags=re.MULTILINE)
        if found:
            path = found.group(1).rstrip("/")
            assert any(path == t or path.startswith(t + "/") for t in targets), key
    listeners = re.findall(r"^listener\s+(\d+)\s*$", conf, flags=re.MULTILINE)
    ingest_port = load_ingest_config(DEPLOY / "platform" / "ingest.toml").mqtt.port
    assert str(ingest_port) in listeners
    grafana = dict(_bind_mounts(services["grafana"]))
    assert grafana["../grafana/provisioning/datasources"] == \
        "/etc/grafana/provisioning/datasources"
    assert grafana["../grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/factory.yml").read_text())["providers"][0]
    assert grafana["../grafana/dashboards"] == provider["options"]["path"]
    ingest = services["ingest"]
    config = dict(_bind_mounts(ingest))["./ingest.toml"]
    assert config in ingest["command"]


def test_dockerfile_installs_the_package() -> None:
    text = (DEPLOY / "platform" / "Dockerfile").read_text()
    for part in ("pyproject.toml", "agent", "collectors", "rules", "simulators"):
        assert re.search(rf"^COPY .*\b{part}\b", text, flags=re.MULTILINE), part
    assert "pip install ." in text
    assert re.search(r'^ENTRYPOINT \["edge-agent"', text, flags=re.MULTILINE)


def test_platform_ingest_config_passes_check_config() -> None:
    services = _compose()["services"]
    path = DEPLOY / "platform" / "ingest.toml"
    config = load_ingest_config(path)
    token_env = config.influxdb.token_env
    password_env = config.mqtt.password_env
    assert token_env and token_env in services["ingest"]["environment"]
    assert password_env and password_env in services["ingest"]["environment"]
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file is not None
    assert config.mqtt.tls.ca_file.as_posix() in \
        [target for _, target in _bind_mounts(services["ingest"])]
    assert config.mqtt.host == "mosquitto" and config.influxdb.url == "http://influxdb:8086"
    influx_env = services["influxdb"]["environment"]
    assert config.influxdb.bucket in influx_env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert config.influxdb.org in influx_env["DOCKER_INFLUXDB_INIT_ORG"]
    assert config.ingest.dead_letter_path.parent.as_posix() in \
        [target for _, target in [v.split(":")[:2] for v in services["ingest"]["volumes"]]]

    exe = shutil.which("edge-agent")
    cmd = [exe] if exe else [sys.executable, "-m", "agent.cli"]
    env = {**os.environ, token_env: "test-token", password_env: "test-password"}
    res = subprocess.run([*cmd, "check-config", "--ingest", "-c", str(path)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_compose_file_is_valid_for_docker_compose() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    env = {**os.environ, "INFLUX_TOKEN": "t", "INFLUX_ADMIN_PASSWORD": "p",
           "GRAFANA_ADMIN_PASSWORD": "p"}
    res = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "platform" / "docker-compose.yml"), "config",
         "--quiet"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- Grafana


def _datasource_uids() -> set[str]:
    uids = set()
    for path in (DEPLOY / "grafana/provisioning/datasources").glob("*.yml"):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            assert ds["type"] == "influxdb" and ds["jsonData"]["version"] == "Flux"
            assert "token" in ds["secureJsonData"]
            uids.add(ds["uid"])
    return uids


def test_two_dashboards_are_provisioned() -> None:
    assert {p.name for p in DASHBOARDS} == {"intelligent-workshop.json", "green-factory.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_query_the_provisioned_datasource(path: Path) -> None:
    board = json.loads(path.read_text())
    uids = _datasource_uids()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"site", "line", "machine", "window", "bucket"} <= set(variables)
    for name in ("site", "line", "machine", "window"):
        assert variables[name]["type"] == "query" and variables[name]["query"].strip()
        assert variables[name]["datasource"]["uid"] in uids
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 8
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            query = target["query"]
            assert 'from(bucket: "${bucket}")' in query, panel["title"]
            assert "range(start: v.timeRangeStart, stop: v.timeRangeStop)" in query
            assert 'r.site == "${site}"' in query and 'r.window == "${window}"' in query
            assert 'r._measurement == "kpi"' in query


def test_workshop_and_green_dashboards_cover_their_kpis() -> None:
    text = {p.name: p.read_text() for p in DASHBOARDS}
    workshop = text["intelligent-workshop.json"]
    for word in ("oee", "availability", "performance", "quality", "defect_rate", "cycle_time"):
        assert f'"{word}' in workshop or f"{word}:" in workshop, word
    green = text["green-factory.json"]
    for word in ("energy_kwh", "kgce_per_good_unit", "co2_kg_per_good_unit", "Totals by line"):
        assert word in green, word
    assert f'r.machine == \\"{LINE_PLACEHOLDER}\\"' in green
    assert f'r.line == \\"{SITE_PLACEHOLDER}\\"' in green


# ---------------------------------------------------------------- Telegraf


def test_telegraf_writes_the_ingest_measurement_and_tags() -> None:
    conf = tomllib.loads((DEPLOY / "telegraf" / "telegraf.conf").read_text())
    assert conf["agent"]["omit_hostname"] is True
    mqtt = conf["inputs"]["mqtt_consumer"][0]
    assert mqtt["topics"] == ["$share/telegraf/factory/+/+/+/kpi"]
    assert mqtt["qos"] == 1 and mqtt["persistent_session"] is True and mqtt["client_id"]
    assert mqtt["topic_tag"] == ""
    assert mqtt["data_format"] == "json_v2"
    parser = mqtt["json_v2"][0]
    assert parser["measurement_name"] == "kpi"
    assert parser["timestamp_path"] == "window_end"
    assert {t["path"] for t in parser["tag"]} == {"schema", "site", "line", "machine", "window"}
    fields = {f.get("rename", f["path"]): f["type"] for f in parser["field"]}
    expected = {name: "int" if name in COUNT_FIELDS else "float" for name in KPI_FIELDS}
    assert fields == {**expected, "flags": "string"}
    starlark = conf["processors"]["starlark"][0]["source"]
    for placeholder in (LINE_PLACEHOLDER, SITE_PLACEHOLDER, KPI_SCHEMA):
        assert f'"{placeholder}"' in starlark
    out = conf["outputs"]["influxdb_v2"][0]
    assert out["urls"] and out["token"] == "${INFLUX_TOKEN}" and out["bucket"]


# ---------------------------------------------------------------- example ingest config


def test_example_ingest_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    path = DEPLOY / "examples" / "ingest.toml"
    config = load_ingest_config(path)
    for name in (config.influxdb.token_env, config.mqtt.password_env):
        assert name
        monkeypatch.setenv(name, "secret")
    assert config.influxdb.token_value() == "secret"
    assert config.mqtt.password_value() == "secret"
    # Plain persistent subscription: Mosquitto 2.0 forgets shared ones on restart.
    assert config.subscriptions() == ["factory/+/+/+/kpi", "factory/+/+/+/alarm"]
    # every key is documented with a comment
    raw = tomllib.loads(path.read_text())
    lines = path.read_text().splitlines()
    for table, keys in raw.items():
        for key in keys:
            if isinstance(keys[key], dict):
                continue
            i = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key} ="))
            assert "#" in lines[i] or lines[i - 1].startswith("#"), \
                f"[{table}] {key} has no comment"
