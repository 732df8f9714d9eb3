"""``edge-agent browse`` without a server: names, paths, the tree, snippets, arguments."""

from __future__ import annotations

import argparse
import io
import tomllib
from pathlib import Path

import pytest

from agent.cli import _parser
from agent.commission.browse import (
    Snippet,
    format_browse_path,
    guess_role,
    namespace_aliases,
    nsu_node_id,
    parse_browse_path,
    render_tree,
    run,
    toml_snippets,
)
from agent.commission.opcua_walk import NodeView
from agent.config import load_agent_config
from agent.config.model import OpcUaSourceSection
from rules.errors import InputError

NS = ["http://opcfoundation.org/UA/", "urn:freeopcua:python:server",
      "urn:factory-edge:simulator:cnc", "http://opcfoundation.org/UA/DI/", "urn:a:cnc"]


def test_aliases_prefer_the_config_then_the_uris_last_word() -> None:
    derived = namespace_aliases(NS, {})
    assert derived == {NS[1]: "server", NS[2]: "cnc", NS[3]: "di", NS[4]: "ns4"}
    given = namespace_aliases(NS, {"m": NS[2], "cnc": NS[4]})
    assert given[NS[2]] == "m" and given[NS[4]] == "cnc"
    assert namespace_aliases(["x", "urn:ns7"], {}) == {"urn:ns7": "ns1"}
    assert namespace_aliases(NS, {}) == derived  # the same server, the same aliases


def test_node_ids_in_namespace_uri_form() -> None:
    assert nsu_node_id("ns=2;s=Machines/cnc-01", NS) == (
        "nsu=urn:factory-edge:simulator:cnc;s=Machines/cnc-01")
    assert nsu_node_id("i=85", NS) == "i=85"
    assert nsu_node_id("ns=4;i=7", NS) == "nsu=urn:a:cnc;i=7"
    assert nsu_node_id("ns=9;i=7", NS) == "ns=9;i=7"  # an index the server did not list


def test_browse_paths_round_trip_through_aliases() -> None:
    aliases = namespace_aliases(NS, {})
    elements = parse_browse_path("Objects/cnc:Machines/2:cnc-01/Name", NS, aliases)
    assert elements == [(0, "Objects"), (2, "Machines"), (2, "cnc-01"), (0, "Name")]
    assert format_browse_path(elements, NS, aliases) == "Objects/cnc:Machines/cnc:cnc-01/Name"
    with pytest.raises(InputError, match=r"unknown namespace alias 'x' \(this server's: "
                                         r"server = urn:freeopcua"):
        parse_browse_path("Objects/x:Y", NS, aliases)
    with pytest.raises(InputError, match="empty element"):
        parse_browse_path("Objects//Y", NS, aliases)


@pytest.mark.parametrize(("name", "role"), [
    ("MachineState", "state"), ("OperationMode", "state"), ("PartsProducedInLifetime",
                                                            "parts_total"),
    ("PartsScrapInLifetime", "parts_bad"), ("GoodParts", "parts_good"), ("Power", "power_kw"),
    ("ActiveEnergyImport", "energy_kwh"), ("SpindleSpeed", None),
])
def test_role_guesses(name: str, role: str | None) -> None:
    assert guess_role(name) == role


def _node(name: str, cls: str = "Object", ns: int = 2, **kw: object) -> NodeView:
    view = NodeView(f"ns={ns};s={name}", ns, ns, name, cls)
    for key, value in kw.items():
        setattr(view, key, value)
    return view


def test_tree_rows_carry_names_ids_types_values_and_limits() -> None:
    state = _node("MachineState", "Variable", data_type="Int32", access="r", value="2")
    tool = _node("MachineTool", "Folder", children=[state])
    other = _node("cnc-02", below=4)
    root = _node("Machines", "Folder", children=[tool, other], more=3)
    lines = render_tree(root, NS, namespace_aliases(NS, {}))
    assert lines[0].split() == ["node", "class", "type", "access", "value", "node", "id"]
    (row,) = [ln for ln in lines if "MachineState" in ln]
    assert row.split() == ["│", "└─", "cnc:MachineState", "Variable", "Int32", "r", "2",
                           "nsu=urn:factory-edge:simulator:cnc;s=MachineState"]
    assert any("├─ cnc:cnc-02 [+4]" in ln for ln in lines)
    assert any("└─ … 3 more (--max-nodes)" in ln for ln in lines)
    assert lines[-1].startswith("[+N]: N children below --depth")


def _snippets() -> list[Snippet]:
    cnc = {"cnc": "urn:factory-edge:simulator:cnc"}
    base = "nsu=urn:factory-edge:simulator:cnc;s=Machines/cnc-01/"
    return [
        Snippet("state", True, base + "State", "Objects/cnc:Machines/cnc:cnc-01/cnc:State",
                "cnc:State", "Variable", "Int32", "2", "r", cnc),
        Snippet("parts_total", False, base + "Parts", None, "cnc:Parts", "Variable", "UInt32",
                "5", "r", cnc),
        Snippet("parts_bad", True, base + "Scrap", None, "cnc:Scrap", "Variable", "UInt32",
                "0", "r", cnc),
    ]


BASE = """\
[site]
id = "s"
[[lines]]
id = "l"
output_machine = "cnc-01"
"""


def test_url_snippets_pasted_below_a_machine_make_a_valid_config(tmp_path: Path) -> None:
    lines = toml_snippets(_snippets(), "opcua-10.0.0.5", source_block={
        "id": "opcua-10.0.0.5", "type": "opcua", "url": "opc.tcp://10.0.0.5:4840"})
    text = "\n".join(lines)
    assert "# role 'state' guessed from the browse name: check it" in text
    assert "# role 'parts_total' guessed" not in text
    assert '# map = { "<raw value>" = "<state>"' in text
    cfg = tmp_path / "agent.toml"
    cfg.write_text(BASE + '[[machines]]\nid = "cnc-01"\nline = "l"\nideal_cycle_time_s = 30\n'
                   + text + "\n")
    loaded = load_agent_config(cfg)
    (source,) = loaded.sources
    assert isinstance(source, OpcUaSourceSection)
    assert source.namespaces == {"cnc": "urn:factory-edge:simulator:cnc"}
    signals = loaded.machines[0].signals
    assert signals.state is not None and signals.state.node is not None
    assert signals.state.node.endswith(";s=Machines/cnc-01/State")
    # The commented browse path is a valid alternative to the node id.
    uncommented = text.replace('node = "nsu=urn:factory-edge:simulator:cnc;s=Machines/cnc-01/'
                               'State"\n# browse_path', "browse_path")
    uncommented = uncommented.replace("   (instead of node)", "")
    cfg.write_text(cfg.read_text().replace(text, uncommented))
    state = load_agent_config(cfg).machines[0].signals.state
    assert state is not None and state.browse_path == "Objects/cnc:Machines/cnc:cnc-01/cnc:State"


def test_config_snippets_name_missing_aliases() -> None:
    lines = toml_snippets(_snippets(), "cnc", configured_aliases={"m": "urn:other"})
    assert lines[0] == ('# The browse_path lines need namespaces { cnc = '
                        '"urn:factory-edge:simulator:cnc" } in source "cnc".')
    assert "[[sources]]" not in lines
    assert toml_snippets(_snippets(), "cnc", configured_aliases={
        "cnc": "urn:factory-edge:simulator:cnc"})[0].startswith("# cnc:State")
    tomllib.loads("\n".join(lines))


def test_meter_roles_go_to_meters() -> None:
    snip = Snippet("energy_kwh", False, "i=5", None, "Energy", "Variable", "Double", "1.5", "r")
    text = "\n".join(toml_snippets([snip], "src", configured_aliases={}))
    assert "[meters.signals.energy_kwh]" in text and "[[meters]] entry" in text
    assert '# engineering_unit = "Wh"' in text


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["browse", *argv])


@pytest.mark.parametrize(("argv", "message"), [
    (["http://x:4840"], "'http://x:4840' is not an opc.tcp://host:port URL"),
    ([], "give the server's opc.tcp://host:port URL, or -c agent.toml"),
    (["opc.tcp://x:4840", "--depth", "-1"], "--depth: give 0..50"),
    (["opc.tcp://x:4840", "--max-nodes", "0"], "--max-nodes"),
    (["opc.tcp://x:4840", "--security", "Basic256Sha256"], "give POLICY,MODE"),
    (["opc.tcp://x:4840", "--security", "Basic128,Sign"], "unknown policy 'Basic128'"),
    (["opc.tcp://x:4840", "--security", "Basic256Sha256,Encrypt"], "unknown mode 'Encrypt'"),
    (["opc.tcp://x:4840", "--security", "Basic256Sha256,Sign"], "needs --cert and --key"),
    (["opc.tcp://x:4840", "--cert", "c.der"], "need --security"),
    (["opc.tcp://x:4840", "--toml", "role=i=5"], "unknown role 'role'"),
    (["opc.tcp://x:4840", "--toml", "state="], "no node after state="),
    (["opc.tcp://x:4840", "--password-env", "EDGE_AGENT_TEST_UNSET_VARIABLE"],
     "EDGE_AGENT_TEST_UNSET_VARIABLE is not set"),
    (["-c", "agent.toml", "opc.tcp://x:4840"], "with -c give the source id, not a URL"),
    (["-c", "agent.toml", "--username", "u"], "--username: with -c the connection settings"),
])
def test_bad_arguments_exit_2_before_connecting(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(_args(*argv), out, err) == 2
    assert message in err.getvalue(), err.getvalue()
    assert out.getvalue() == ""


def test_config_errors_name_the_source_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[site]\nid = "s"\n[[sources]]\nid = "a"\ntype = "opcua"\n'
                   'url = "opc.tcp://h:1"\n[[sources]]\nid = "b"\ntype = "opcua"\n'
                   'url = "opc.tcp://h:2"\nsecurity_mode = "Sign"\n')
    out, err = io.StringIO(), io.StringIO()
    assert run(_args("-c", str(cfg)), out, err) == 2
    assert "name the OPC UA source to browse (OPC UA sources: a, b)" in err.getvalue()
    err = io.StringIO()
    assert run(_args("-c", str(cfg), "c"), out, err) == 2
    assert "no OPC UA source 'c'" in err.getvalue()
    err = io.StringIO()
    assert run(_args("-c", str(cfg), "b"), out, err) == 2
    assert f'{cfg}: sources[1] "b": security_policy and security_mode must both' \
        in err.getvalue()
