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
import tomli_w

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


def _directives(path: Path) -> list[str]:
    """A Mosquitto config file's settings, one ``key value`` string each, in order."""
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# What Debian's /etc/mosquitto/mosquitto.conf sets itself; a second pid_file or
# persistence_location is fatal ("Duplicate ... value", exit 3), a second log_dest doubles
# the log, and the main file's user is the package's.
DEBIAN_MAIN_KEYS = {"pid_file", "persistence_location", "log_dest", "include_dir", "user"}


def test_mosquitto_dropin_leaves_the_main_file_settings_alone() -> None:
    keys = {d.split()[0] for d in _directives(DEPLOY / "mosquitto/conf.d/platform.conf")}
    assert not keys & DEBIAN_MAIN_KEYS, keys & DEBIAN_MAIN_KEYS
    debian = Path("/etc/mosquitto/mosquitto.conf")
    if debian.is_file():  # the installed package agrees with the list above
        assert {d.split()[0] for d in _directives(debian)} - {"persistence"} <= DEBIAN_MAIN_KEYS


def test_standalone_mosquitto_conf_is_the_dropin_plus_the_main_file_settings() -> None:
    standalone = _directives(DEPLOY / "mosquitto/mosquitto.conf")
    own = [d for d in standalone if d.split()[0] not in DEBIAN_MAIN_KEYS]
    assert own == _directives(DEPLOY / "mosquitto/conf.d/platform.conf")
    assert {d.split()[0] for d in standalone} - {d.split()[0] for d in own} == \
        {"user", "pid_file", "persistence_location", "log_dest"}


def test_mosquitto_readme_installs_the_dropin_and_names_the_duplicate_error() -> None:
    readme = (DEPLOY / "mosquitto/README.md").read_text()
    assert "install -m 0644 conf.d/platform.conf /etc/mosquitto/conf.d/platform.conf" in readme
    assert "install -m 0644 mosquitto.conf /etc/mosquitto/mosquitto.conf" in readme
    assert "/etc/mosquitto/conf.d/platform.conf" not in readme.replace(
        "conf.d/platform.conf /etc/mosquitto/conf.d/platform.conf", "")
    assert "Duplicate" in readme


def test_compose_mounts_the_broker_grafana_and_ingest_configs() -> None:
    services = _compose()["services"]
    broker = services["mosquitto"]
    mounts = dict(_bind_mounts(broker))
    main = DEPLOY / "platform" / "mosquitto.conf"
    main_target = mounts["./mosquitto.conf"]
    assert f"-c {main_target}" in broker["command"][-1]
    # The compose broker uses the same drop-in as a Debian host, in the main file's
    # include directory.
    include = re.search(r"^include_dir\s+(\S+)$", main.read_text(), flags=re.MULTILINE)
    assert include, "deploy/platform/mosquitto.conf has no include_dir"
    assert mounts["../mosquitto/conf.d/platform.conf"] == f"{include.group(1)}/platform.conf"
    # every file the broker config names is mounted where it looks for it
    conf = main.read_text() + (DEPLOY / "mosquitto/conf.d/platform.conf").read_text()
    targets = [v.split(":")[1] for v in broker["volumes"]]
    for key in ("cafile", "certfile", "keyfile", "password_file", "acl_file",
                "persistence_location"):
        found = re.search(rf"^{key}\s+(\S+)", conf, flags=re.MULTILINE)
        assert found, key
        path = found.group(1).rstrip("/")
        assert any(path == t or path.startswith(t + "/") for t in targets), key
    listeners = re.findall(r"^listener\s+(\d+)\s*$", conf, flags=re.MULTILINE)
    ingest_port = tomllib.loads((DEPLOY / "platform/ingest.toml").read_text())["mqtt"]["port"]
    assert str(ingest_port) in listeners
    assert f"{ingest_port}:{ingest_port}" in broker["ports"]
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


# -- tokens: one per service, each with the least it needs


TOKEN_SCRIPT = DEPLOY / "platform/influxdb-init/10-service-tokens.sh"


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount target."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            out[source] = target
    return out


def _token_path(service: dict[str, Any]) -> str:
    """The token file a service's entrypoint reads."""
    found = re.search(r"\$\$\(cat (\S+)\)", " ".join(service["entrypoint"]))
    assert found, service["entrypoint"]
    return found.group(1)


def test_compose_gives_the_admin_token_to_influxdb_only() -> None:
    text = (DEPLOY / "platform/docker-compose.yml").read_text()
    services = _compose()["services"]
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].startswith(
        "${INFLUX_ADMIN_TOKEN:?")
    assert text.count("INFLUX_ADMIN_TOKEN") == 2  # the variable and its error message
    for name, service in services.items():
        if name != "influxdb":
            assert "INFLUX_TOKEN" not in service.get("environment", {}), name
            assert not any("ADMIN_TOKEN" in str(v) for v in service.get("environment", {})
                           .values()), name


def test_each_service_token_is_shared_by_influxdb_and_that_service_only() -> None:
    services = _compose()["services"]
    influx = _volume_mounts(services["influxdb"])
    script = TOKEN_SCRIPT.read_text()
    tokens_dir = re.search(r'tokens_dir="\$\{SERVICE_TOKENS_DIR:-(\S+)\}"', script)
    assert tokens_dir, "10-service-tokens.sh: no tokens_dir"
    calls = re.findall(r'^issue (\w+) "[^"]*"((?: \\\n)?(?:\s*--\S+ "\$bucket_id")+)$', script,
                       flags=re.MULTILINE)
    issued = {name: set(re.findall(r"--(\S+)-bucket", flags)) for name, flags in calls}
    # Least privilege, on the KPI bucket only: Telegraf writes, Grafana reads, the ingest
    # reads too (it compares a rewrite with the stored point); nothing else is granted.
    assert issued == {"ingest": {"read", "write"}, "grafana": {"read"},
                      "telegraf": {"write"}}
    for consumer in issued:
        volume = f"{consumer}-token"
        assert influx[volume] == f"{tokens_dir.group(1)}/{consumer}", consumer
        users = [n for n, s in services.items() if volume in _volume_mounts(s)]
        assert sorted(users) == sorted({"influxdb", consumer}), volume
        mount = next(v for v in services[consumer]["volumes"] if v.startswith(f"{volume}:"))
        assert mount.endswith(":ro"), mount
        target = _volume_mounts(services[consumer])[volume]
        if consumer == "ingest":
            path = tomllib.loads((DEPLOY / "platform/ingest.toml").read_text())[
                "influxdb"]["token_file"]
        else:
            path = _token_path(services[consumer])
        assert path == f"{target}/token", consumer
    # InfluxDB is healthy only once every token exists, so dependants start after.
    health = " ".join(services["influxdb"]["healthcheck"]["test"])
    for consumer in issued:
        assert f"test -s {tokens_dir.group(1)}/{consumer}/token" in health
    assert "--host http://localhost:8086" in health


def test_token_script_is_executable_bash() -> None:
    # The image runs only executable *.sh files of /docker-entrypoint-initdb.d.
    assert os.access(TOKEN_SCRIPT, os.X_OK)
    assert TOKEN_SCRIPT.read_text().startswith("#!/bin/bash\n")
    res = subprocess.run(["bash", "-n", str(TOKEN_SCRIPT)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    mounts = dict(_bind_mounts(_compose()["services"]["influxdb"]))
    assert mounts["./influxdb-init"] == "/docker-entrypoint-initdb.d"


FAKE_INFLUX = r"""#!/bin/bash
# Stands in for the influx CLI: records each call and answers in its tab-separated
# --hide-headers format (auth create: ID, Description, Token, User Name, User ID, ...).
echo "$*" >>"$FAKE_INFLUX_LOG"
case "$1 $2" in
  "bucket list") printf '0a1b2c3d4e5f6a7b\tfactory\t800d\t-\t0f0f0f0f0f0f0f0f\n' ;;
  "auth list") if [[ -f "$FAKE_INFLUX_AUTHS" ]]; then cat "$FAKE_INFLUX_AUTHS"; fi ;;
  "auth delete") sed -i "/^$4\t/d" "$FAKE_INFLUX_AUTHS" ;;
  "auth create")
    n=$(wc -l <"$FAKE_INFLUX_LOG")
    while [[ $# -gt 0 ]]; do [[ $1 == --description ]] && d=$2; shift; done
    printf 'id%s\t%s\ttoken-%s\n' "$n" "$d" "$n" | tee -a "$FAKE_INFLUX_AUTHS"
    ;;
esac
"""


def test_token_script_issues_each_token_once_and_replaces_a_lost_one(tmp_path: Path) -> None:
    """Run against a stand-in for the influx CLI (the script's only seam), in its output
    format: token files appear read-only, a second run keeps them, a deleted one is
    issued anew and the old authorization deleted."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "influx"
    fake.write_text(FAKE_INFLUX)
    fake.chmod(0o755)
    calls = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "FAKE_INFLUX_LOG": str(calls), "FAKE_INFLUX_AUTHS": str(tmp_path / "auths"),
           "SERVICE_TOKENS_DIR": str(tmp_path / "tokens"),
           "DOCKER_INFLUXDB_INIT_ORG": "factory", "DOCKER_INFLUXDB_INIT_BUCKET": "factory",
           "DOCKER_INFLUXDB_INIT_USERNAME": "admin"}

    def run() -> str:
        res = subprocess.run(["bash", str(TOKEN_SCRIPT)], capture_output=True, text=True,
                             timeout=60, env=env, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    run()
    files = {name: tmp_path / "tokens" / name / "token" for name in
             ("ingest", "grafana", "telegraf")}
    tokens = {name: path.read_text().strip() for name, path in files.items()}
    assert len(set(tokens.values())) == 3 and all(tokens.values())
    assert all(path.stat().st_mode & 0o777 == 0o444 for path in files.values())
    creates = [c for c in calls.read_text().splitlines() if c.startswith("auth create")]
    assert len(creates) == 3
    assert all("--org factory --user admin" in c for c in creates)
    bucket = "0a1b2c3d4e5f6a7b"
    assert f"--read-bucket {bucket} --write-bucket {bucket}" in creates[0]
    assert f"--read-bucket {bucket}" in creates[1] and "write" not in creates[1]
    assert f"--write-bucket {bucket}" in creates[2] and "read" not in creates[2]
    assert all(c.count("-bucket ") == len(expected) for c, expected in
               zip(creates, ({"read", "write"}, {"read"}, {"write"}), strict=True))

    assert "kept" in run()
    assert {name: path.read_text().strip() for name, path in files.items()} == tokens

    files["grafana"].unlink()
    run()
    log = calls.read_text()
    old_id = "id" + tokens["grafana"].removeprefix("token-")
    assert f"auth delete --id {old_id}" in log
    assert files["grafana"].read_text().strip() not in {"", tokens["grafana"]}
    assert files["ingest"].read_text().strip() == tokens["ingest"]

    # A first setup that failed half-way starts InfluxDB afresh, but the volumes stay: a
    # token file InfluxDB does not know is replaced.
    (tmp_path / "auths").unlink()
    run()
    assert all(path.read_text().strip() != tokens[name] for name, path in files.items())


# -- health, start order, environment


def test_compose_healthchecks_and_start_order() -> None:
    services = _compose()["services"]
    ingest = services["ingest"]
    test = ingest["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"] and "curl" not in " ".join(test)
    health = load_ingest_config_with_env(DEPLOY / "platform/ingest.toml").health
    assert health.enabled and health.host == "127.0.0.1"
    assert f"http://127.0.0.1:{health.port}/readyz" in test[-1]
    assert "healthcheck" in services["influxdb"]
    for name in ("grafana", "ingest", "telegraf"):
        depends = services[name]["depends_on"]
        assert depends["influxdb"] == {"condition": "service_healthy"}, name
    for name in ("ingest", "telegraf"):
        assert services[name]["depends_on"]["mosquitto"]["condition"] == "service_started"


def _references(text: str) -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{(\w+)", text))


def test_every_compose_variable_is_defined_in_env_example() -> None:
    text = (DEPLOY / "platform/docker-compose.yml").read_text()
    defined = {line.split("=", 1)[0] for line in
               (DEPLOY / "platform/env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert _references(text) <= defined, _references(text) - defined
    # docker-compose 1.x refuses a top-level name:, the project name comes from .env
    assert "name" not in _compose() and "COMPOSE_PROJECT_NAME" in defined
    for name, service in _compose()["services"].items():
        for volume in _volume_mounts(service):
            assert volume in _compose()["volumes"], f"{name}: volume {volume} not declared"


def load_ingest_config_with_env(path: Path) -> Any:
    """The compose ingest config as the container sees it: org and bucket from its
    environment (the compose defaults), the token from a file."""
    ingest_env = _compose()["services"]["ingest"]["environment"]
    env = {key: re.sub(r"^\$\{\w+:-([^}]*)\}$", r"\1", str(value))
           for key, value in ingest_env.items()}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return load_ingest_config(path)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_platform_ingest_config_takes_org_and_bucket_from_the_environment() -> None:
    services = _compose()["services"]
    raw = tomllib.loads((DEPLOY / "platform/ingest.toml").read_text())["influxdb"]
    assert "org" not in raw and "bucket" not in raw, "org and bucket belong to .env"
    influx_env = services["influxdb"]["environment"]
    ingest_env = services["ingest"]["environment"]
    # the same .env variables that set InfluxDB up
    assert ingest_env[raw["org_env"]] == influx_env["DOCKER_INFLUXDB_INIT_ORG"]
    assert ingest_env[raw["bucket_env"]] == influx_env["DOCKER_INFLUXDB_INIT_BUCKET"]
    config = load_ingest_config_with_env(DEPLOY / "platform/ingest.toml")
    assert (config.influxdb.org, config.influxdb.bucket) == ("factory", "factory")
    assert config.mqtt.host == "mosquitto" and config.influxdb.url == "http://influxdb:8086"
    assert config.mqtt.password_env in ingest_env
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file is not None
    assert config.mqtt.tls.ca_file.as_posix() in \
        [target for _, target in _bind_mounts(services["ingest"])]
    assert config.ingest.dead_letter_path.parent.as_posix() in \
        [target for _, target in [v.split(":")[:2] for v in services["ingest"]["volumes"]]]


def _self_signed(path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory-platform CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_platform_ingest_config_passes_check_config(tmp_path: Path) -> None:
    """check-config on the compose ingest config, the container's files (CA, token,
    dead-letter directory) moved to a temporary directory, its environment as compose
    sets it."""
    services = _compose()["services"]
    raw = tomllib.loads((DEPLOY / "platform/ingest.toml").read_text())
    _self_signed(tmp_path / "ca.pem")
    (tmp_path / "token").write_text("test-token\n")
    raw["mqtt"]["tls"]["ca_file"] = str(tmp_path / "ca.pem")
    raw["influxdb"]["token_file"] = str(tmp_path / "token")
    raw["ingest"]["dead_letter_path"] = str(tmp_path / "dead-letter.jsonl")
    path = tmp_path / "ingest.toml"
    path.write_text(tomli_w.dumps(raw))
    exe = shutil.which("edge-agent")
    cmd = [exe] if exe else [sys.executable, "-m", "agent.cli"]
    env = {**os.environ, raw["mqtt"]["password_env"]: "test-password"}
    for key, value in services["ingest"]["environment"].items():
        if key != raw["mqtt"]["password_env"]:
            env[key] = re.sub(r"^\$\{\w+:-([^}]*)\}$", r"\1", str(value))
    res = subprocess.run([*cmd, "check-config", "--ingest", "-c", str(path)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout
    env.pop(raw["influxdb"]["bucket_env"])
    res = subprocess.run([*cmd, "check-config", "--ingest", "-c", str(path)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 2 and raw["influxdb"]["bucket_env"] in res.stderr, res.stderr


def _compose_tool() -> list[str] | None:
    """``docker compose`` (v2) when the plugin answers, else ``docker-compose`` (1.x)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True,
                               timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


def test_compose_file_is_valid_for_docker_compose() -> None:
    """`config` validates the file against the Compose schema without a Docker daemon,
    with the variables of env.example (a variable it lacks fails the `:?` check)."""
    tool = _compose_tool()
    if tool is None:
        message = "neither docker compose nor docker-compose is installed (scripts/test " \
                  "installs docker-compose)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    platform = DEPLOY / "platform"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUX", "GRAFANA",
                                                                     "INGEST", "COMPOSE"))}
    base = [*tool, "--env-file", str(platform / "env.example"),
            "-f", str(platform / "docker-compose.yml")]
    res = subprocess.run([*base, "config", "--quiet"], capture_output=True, text=True,
                         timeout=120, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([*base, "--profile", "telegraf", "config", "--services"],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(res.stdout.split()) == {"mosquitto", "influxdb", "grafana", "ingest", "telegraf"}


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
    assert {"site", "line", "machine", "window", "bucket", "baseline_offset"} <= set(variables)
    for name in ("site", "line", "machine", "window"):
        assert variables[name]["type"] == "query" and variables[name]["query"].strip()
        assert variables[name]["datasource"]["uid"] in uids
    # Several sites or All (a regex, as for lines and machines); one window only.
    for name in ("site", "line", "machine"):
        assert variables[name]["multi"] and variables[name]["includeAll"], name
        assert variables[name]["allValue"] == ".*", name
    assert not variables["window"]["multi"]
    for name in ("window", "line", "machine"):
        assert 'r.site =~ /^${site:regex}$/' in variables[name]["query"], name
    offset = variables["baseline_offset"]
    assert offset["type"] == "custom" and not offset["multi"]
    assert [o["value"] for o in offset["options"]] == ["7d", "28d", "1y"]
    assert offset["current"]["value"] == "1y"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 8
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            query = target["query"]
            assert 'from(bucket: "${bucket}")' in query, panel["title"]
            if 'r._measurement == "agent_status"' in query:
                # Who is offline now, across all sites: no window, site or time range.
                assert "-30d" in query and "r._field == \"state\"" in query, panel["title"]
                continue
            if "${baseline_offset}" in query:
                # The baseline: the same range one offset earlier, moved onto the current one.
                assert query.startswith('import "experimental"\n'), panel["title"]
                assert ("range(start: experimental.subDuration(d: ${baseline_offset}, from: "
                        "v.timeRangeStart), stop: experimental.subDuration(d: "
                        "${baseline_offset}, from: v.timeRangeStop))") in query, panel["title"]
                assert "timeShift(duration: ${baseline_offset})" in query, panel["title"]
                assert 'yield(name: "' in query and '_baseline")' in query, panel["title"]
            else:
                assert "range(start: v.timeRangeStart, stop: v.timeRangeStop)" in query
            assert 'r.site =~ /^${site:regex}$/' in query, panel["title"]
            assert 'r.window == "${window}"' in query, panel["title"]
            assert 'r._measurement == "kpi"' in query


def _panels() -> dict[tuple[str, str], dict[str, Any]]:
    return {(path.name, panel["title"]): panel for path in DASHBOARDS
            for panel in json.loads(path.read_text())["panels"]}


def test_key_kpis_show_their_baseline_next_to_the_current_period() -> None:
    panels = _panels()
    for board, title in [("intelligent-workshop.json", "OEE"),
                         ("intelligent-workshop.json", "Defect rate"),
                         ("intelligent-workshop.json", "Line OEE"),
                         ("intelligent-workshop.json", "Line defect rate"),
                         ("green-factory.json", "Standard coal per good unit"),
                         ("green-factory.json", "Standard coal per good unit per line")]:
        panel = panels[board, title]
        current, baseline = (t["query"] for t in panel["targets"][:2])
        assert "${baseline_offset}" not in current and "${baseline_offset}" in baseline, title
        # the same computation, only shifted: the query differs in its range and names only
        name = re.search(r'yield\(name: "(\w+)"\)', current)
        assert name, title
        assert f'yield(name: "{name[1]}_baseline")' in baseline, title
        assert "Baseline offset" in panel["description"], title


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_read_only_fields_the_records_have(path: Path) -> None:
    board = json.loads(path.read_text())
    kpi = "".join(t["query"] for p in board["panels"] for t in p.get("targets", [])
                  if 'r._measurement == "kpi"' in t["query"])
    fields = set(re.findall(r'r\._field == "(\w+)"', kpi))
    assert fields and fields <= {*KPI_FIELDS, "flags"}, fields - set(KPI_FIELDS)


def test_site_ranking_and_agent_overview_are_on_the_workshop_board() -> None:
    panels = _panels()
    ranking = panels["intelligent-workshop.json", "Site ranking"]
    columns = [re.search(r'keep\(columns: \["site", "(\w+)"\]\)', t["query"])
               for t in ranking["targets"]]
    assert [c[1] for c in columns if c] == ["oee", "defect_rate", "kgce_per_good_unit"]
    for target in ranking["targets"]:
        assert "${line" not in target["query"]  # whole sites, whatever line is selected
    assert "sum" in ranking["description"] and "never averaged" in ranking["description"]
    fields = re.findall(r'r\._field == "(\w+)"', "".join(t["query"] for t in ranking["targets"]))
    assert set(fields) <= set(KPI_FIELDS), set(fields) - set(KPI_FIELDS)
    counts = panels["intelligent-workshop.json", "Agents online / offline"]
    assert [t["refId"] for t in counts["targets"]] == ["A", "B"]
    table = panels["intelligent-workshop.json", "Agents (all sites)"]
    assert {"state", "last_seen"} <= set(table["transformations"][0]["options"]["indexByName"])


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
    # Plain: Mosquitto 2.0 loses shared subscriptions on a restart (see the comment there).
    assert mqtt["topics"] == ["factory/+/+/+/kpi"]
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


def test_telegraf_says_why_it_subscribes_plainly_and_gets_every_variable() -> None:
    text = (DEPLOY / "telegraf" / "telegraf.conf").read_text()
    found = re.search(r"^  topics = ", text, flags=re.MULTILINE)
    assert found
    comment = text[:found.start()]
    for word in ("Mosquitto 2.0", "restart", "EMQX", "HiveMQ", "VerneMQ",
                 '"$share/telegraf/factory/+/+/+/kpi"'):
        assert word in comment, word
    service = _compose()["services"]["telegraf"]
    provided = set(service["environment"])
    if "INFLUX_TOKEN=" in " ".join(service["entrypoint"]):
        provided.add("INFLUX_TOKEN")
    # Telegraf drops comments before it substitutes variables.
    used = _references("\n".join(ln for ln in text.splitlines()
                                 if not ln.lstrip().startswith("#")))
    assert used <= provided, used - provided


# ---------------------------------------------------------------- example ingest config


def test_example_ingest_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    path = DEPLOY / "examples" / "ingest.toml"
    config = load_ingest_config(path)
    for name in (config.influxdb.token_env, config.mqtt.password_env):
        assert name
        monkeypatch.setenv(name, "secret")
    assert config.influxdb.token_value() == "secret"
    assert config.mqtt.password_value() == "secret"
    # Plain persistent subscriptions: Mosquitto 2.0 forgets shared ones on restart.
    subscriptions = config.subscriptions()
    assert {"factory/+/+/+/kpi", "factory/+/+/+/alarm"} <= set(subscriptions)
    assert not any(s.startswith("$share/") for s in subscriptions), subscriptions
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
