"""``edge-agent browse`` against the bundled OPC UA simulator and a secure server, run as
a process the way an engineer runs it while the servers answer from this event loop."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from collectors.opcua.security import ensure_client_certificate, thumbprints
from simulators.opcua_server import NAMESPACE_URI
from simulators.plant import Plant
from simulators.scenario import default_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent / "collectors"))
from secure_servers import start_secure_server

pytestmark = pytest.mark.integration

MACHINE = "Objects/cnc:Machines/cnc:cnc-01"
BASE = """\
[site]
id = "s"

[[lines]]
id = "line-a"
output_machine = "cnc-01"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _edge_agent(*args: str, env: dict[str, str] | None = None
                      ) -> tuple[int, str, str]:
    """Run the command without blocking the loop the servers answer from."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(os.environ, **(env or {})))
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _row(out: str, name: str) -> list[str]:
    (line,) = [ln for ln in out.splitlines() if re.search(rf"[─ ]cnc:{name}( |$)", ln)]
    return line.split()


async def test_tree_shows_the_machines_with_namespace_uri_ids_and_values() -> None:
    async with Plant(default_scenario(machines=2, seed=3)) as plant, plant.frozen():
        async with Client(plant.opcua_endpoint) as client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            parts = await client.nodes.objects.get_child(
                [f"{ns}:Machines", f"{ns}:cnc-02", f"{ns}:Production",
                 f"{ns}:PartsProducedInLifetime"])
            served = await parts.read_value()
            state = await client.nodes.objects.get_child(
                [f"{ns}:Machines", f"{ns}:cnc-02", f"{ns}:Monitoring", f"{ns}:MachineTool",
                 f"{ns}:MachineState"])
            served_state = await state.read_value()
        code, out, err = await _edge_agent("browse", plant.opcua_endpoint,
                                           "--path", "Objects/cnc:Machines", "--depth", "5")
    assert code == 0, err
    assert f"cnc = {NAMESPACE_URI}" in out
    assert out.count("cnc:MachineState") == 2 and "cnc:cnc-01" in out and "cnc:cnc-02" in out
    rows = [ln.split() for ln in out.splitlines() if "cnc:PartsProducedInLifetime" in ln
            and "cnc-02/Production/Parts" in ln]
    (row,) = rows
    assert row[-5:] == ["Variable", "UInt32", "r", str(served),
                        f"nsu={NAMESPACE_URI};s=Machines/cnc-02/Production/"
                        "PartsProducedInLifetime"]
    states = [ln.split() for ln in out.splitlines() if "cnc-02/Monitoring/MachineTool/"
              "MachineState" in ln]
    assert states[0][-5:-1] == ["Variable", "Int32", "r", str(served_state)]
    assert "[+N]" not in out  # depth 5 reaches every variable of the machines
    assert "Traceback" not in err


async def test_depth_and_node_limits_bound_the_output() -> None:
    async with Plant(default_scenario(machines=3, seed=3)) as plant:
        code, out, err = await _edge_agent("browse", plant.opcua_endpoint, "--path",
                                           f"nsu={NAMESPACE_URI};s=Machines", "--depth", "1")
        assert code == 0, err
        assert re.search(r"├─ cnc:cnc-01 \[\+3\] ", out)  # Identification, Monitoring, Production
        assert "cnc:Monitoring" not in out
        code, out, err = await _edge_agent("browse", plant.opcua_endpoint, "--path",
                                           "Objects/cnc:Machines", "--depth", "9",
                                           "--max-nodes", "5")
    assert code == 0, err
    assert "5 nodes shown" in out and "more (--max-nodes)" in out


async def test_toml_snippets_pasted_into_the_config_pass_check_config(tmp_path: Path) -> None:
    async with Plant(default_scenario(machines=1, seed=3)) as plant:
        cfg = tmp_path / "agent.toml"
        agent = f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
        cfg.write_text(agent + BASE + f"""
[[sources]]
id = "cnc-opcua"
type = "opcua"
url = "{plant.opcua_endpoint}"
namespaces = {{ m = "{NAMESPACE_URI}" }}

[[machines]]
id = "cnc-01"
line = "line-a"
ideal_cycle_time_s = 30
""")
        code, out, err = await _edge_agent(
            "browse", "-c", str(cfg), "--toml",
            "Objects/m:Machines/m:cnc-01/m:Monitoring/m:MachineTool/m:MachineState",
            f"nsu={NAMESPACE_URI};s=Machines/cnc-01/Production/PartsProducedInLifetime",
            "parts_bad=Objects/m:Machines/m:cnc-01/m:Production/m:PartsScrapInLifetime")
        assert code == 0, err
        assert "[machines.signals.state]" in out and "[[sources]]" not in out
        assert ('# browse_path = "Objects/m:Machines/m:cnc-01/m:Production/'
                'm:PartsProducedInLifetime"') in out  # the config's own alias
        cfg.write_text(cfg.read_text() + "\n" + out)
        code, checked, err = await _edge_agent("check-config", "-c", str(cfg))
        assert code == 0, err
        assert "1 machines" in checked

        # Without a config: the source table comes along, with a derived alias.
        url_cfg = tmp_path / "url.toml"
        code, out, err = await _edge_agent(
            "browse", plant.opcua_endpoint, "--toml",
            "state=" + MACHINE + "/cnc:Monitoring/cnc:MachineTool/cnc:MachineState",
            MACHINE + "/cnc:Production/cnc:PartsProducedInLifetime",
            MACHINE + "/cnc:Production/cnc:PartsScrapInLifetime")
        assert code == 0, err
        assert f'namespaces = {{ cnc = "{NAMESPACE_URI}" }}' in out
        url_cfg.write_text(agent + BASE + '\n[[machines]]\nid = "cnc-01"\nline = "line-a"\n'
                                  'ideal_cycle_time_s = 30\n\n' + out + "\n")
        code, checked, err = await _edge_agent("check-config", "-c", str(url_cfg))
        assert code == 0, err

        code, out, err = await _edge_agent("browse", plant.opcua_endpoint, "--toml",
                                           MACHINE + "/cnc:Monitoring/cnc:Spindle/cnc:Speed")
        assert code == 2 and "cannot tell the role of 'Speed'" in err
        code, out, err = await _edge_agent("browse", plant.opcua_endpoint, "--toml", MACHINE)
        assert code == 2 and "is not a Variable but Object" in err
        code, out, err = await _edge_agent("browse", plant.opcua_endpoint, "--path",
                                           "Objects/cnc:NoSuchFolder")
        assert code == 1 and "'Objects/cnc:NoSuchFolder' is not on the server" in err


async def test_unreachable_server_is_one_line_and_exit_1() -> None:
    port = _free_port()
    code, out, err = await _edge_agent("browse", f"opc.tcp://127.0.0.1:{port}", "--timeout", "2")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        f"edge-agent browse: cannot reach opc.tcp://127.0.0.1:{port}: connection refused "
        "(nothing listens on that port)"]


async def test_bad_usage_exits_2() -> None:
    code, _, err = await _edge_agent("browse", "opc.tcp://127.0.0.1:1", "--depth", "many")
    assert code == 2 and "invalid int value" in err


async def test_secure_server_with_the_agents_certificate_and_trust(tmp_path: Path) -> None:
    srv = await start_secure_server(_free_port(), tmp_path / "server",
                                    [("Basic256Sha256", "SignAndEncrypt")],
                                    users={"engineer": "s3cret"})
    pki = tmp_path / "pki"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(BASE + f"""
[agent]
state_dir = "{tmp_path / 'state'}"

[[sources]]
id = "secure-cnc"
type = "opcua"
url = "{srv.url}"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
pki_dir = "{pki}"
username = "engineer"
password_env = "EDGE_AGENT_TEST_OPCUA_PASSWORD"
""")
    env = {"EDGE_AGENT_TEST_OPCUA_PASSWORD": "s3cret"}
    sha256 = thumbprints(srv.cert_path.read_bytes())[1]
    try:
        # No client certificate yet: browse never creates one behind the operator's back.
        code, out, err = await _edge_agent("browse", "-c", str(cfg), env=env)
        assert code == 2 and "run 'edge-agent certs'" in err
        cert = ensure_client_certificate(pki)
        # Untrusted server: refused before the session (and the password), saying how.
        code, out, err = await _edge_agent("browse", "-c", str(cfg), env=env)
        assert code == 1 and out == ""
        assert "server certificate is not trusted" in err and f"sha256:{sha256}" in err
        assert len(err.strip().splitlines()) == 1
        assert srv.users.logins == []
        rejected = list((pki / "rejected").glob("*.der"))
        (pki / "trusted").mkdir()
        rejected[0].rename(pki / "trusted" / rejected[0].name)

        code, out, err = await _edge_agent("browse", "-c", str(cfg), "--path",
                                           "Objects/2:Machines", "--depth", "2", env=env)
        assert code == 0, err
        assert _row(out, "PartsProducedInLifetime")[-5:-1] == ["Variable", "UInt32", "r", "7"]
        assert srv.users.logins == ["engineer"]

        # The same connection from flags, the server pinned by its thumbprint.
        code, out, err = await _edge_agent(
            "browse", srv.url, "--security", "Basic256Sha256,SignAndEncrypt",
            "--cert", str(cert.cert_path), "--key", str(cert.key_path),
            "--server-thumbprint", f"sha256:{sha256}", "--username", "engineer",
            "--password-env", "EDGE_AGENT_TEST_OPCUA_PASSWORD", "--path",
            "Objects/2:Machines/2:cnc-01", "--depth", "1", env=env)
        assert code == 0, err
        assert _row(out, "PartsProducedInLifetime")[-2] == "7"
        code, out, err = await _edge_agent(
            "browse", srv.url, "--security", "Basic256Sha256,Sign", "--cert",
            str(cert.cert_path), "--key", str(cert.key_path), env=env)
        assert code == 1
        assert "offers no endpoint with Basic256Sha256,Sign; it offers" in err

        # The server stops trusting the agent's certificate: the error says which one.
        async def refuse(_cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

        srv.server.set_certificate_validator(refuse)
        code, out, err = await _edge_agent("browse", "-c", str(cfg), env=env)
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert "BadCertificateUntrusted; the server may not trust the client certificate " \
            f"{cert.cert_path} (SHA-256 {cert.sha256})" in err
    finally:
        await srv.stop()
