"""``profile = "opc40501"`` on a machine: checked when the file is read, expanded into the
collector's spec, and known to the engine (a good counter) and to reload."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from agent.config import load_agent_config
from agent.config.build import engine_spec, opcua_specs
from agent.reload import plan_reload
from agent.sources.opcua import PROFILE_ROLES
from collectors.opcua import OpcUaCollector
from collectors.opcua.spec import PROFILES, ProfileSpec
from rules.errors import ConfigError

MACHINERY = "http://opcfoundation.org/UA/Machinery/"
PLANT: dict[str, Any] = {
    "site": {"id": "s1"},
    "sources": [
        {"id": "cnc", "type": "opcua", "url": "opc.tcp://127.0.0.1:4840",
         "namespaces": {"ma": MACHINERY, "v": "urn:vendor"}},
        {"id": "gw", "type": "modbus", "host": "127.0.0.1", "port": 5020},
    ],
    "lines": [{"id": "line-a", "output_machine": "cnc-01"}],
    "machines": [{
        "id": "cnc-01", "line": "line-a", "ideal_cycle_time_s": 30.0,
        "profile": "opc40501", "source": "cnc",
        "machine_tool": "Objects/ma:Machines/v:cnc-01",
    }],
}


def _load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "agent.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return load_agent_config(path)


def _errors(tmp_path: Path, data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, data)
    return list(info.value.errors)


def test_the_agent_and_the_collector_agree_on_the_profiles() -> None:
    assert PROFILE_ROLES == PROFILES


def test_a_profile_machine_needs_no_signals_and_counts_good_parts(tmp_path: Path) -> None:
    cfg = _load(tmp_path, PLANT)
    (spec,) = opcua_specs(cfg)
    assert spec.tags == ()
    assert spec.profiles == (ProfileSpec("cnc-01", "opc40501", "Objects/ma:Machines/v:cnc-01",
                                         frozenset({"state", "parts_total", "parts_good"})),)
    OpcUaCollector(spec)  # the collector takes it
    (machine,) = engine_spec(cfg).machines
    assert machine.good_counter is True


def test_explicit_signals_override_the_profile(tmp_path: Path) -> None:
    data = copy.deepcopy(PLANT)
    data["machines"][0]["signals"] = {
        "state": {"source": "cnc", "node": "ns=2;s=State", "map": {"1": "producing"}},
        "parts_bad": {"source": "gw", "unit": 1, "table": "holding", "address": 10,
                      "type": "u32"},
    }
    cfg = _load(tmp_path, data)
    (spec,) = opcua_specs(cfg)
    assert [t.signal for t in spec.tags] == ["state"]
    assert spec.profiles[0].roles == frozenset({"parts_total"})
    assert engine_spec(cfg).machines[0].good_counter is False


@pytest.mark.parametrize(("change", "expected"), [
    ({"profile": "umati"},
     [('machines[0] "cnc-01": profile', "unknown profile 'umati' (known: opc40501)")]),
    ({"source": "gw"},
     [('machines[0] "cnc-01": source', 'source "gw" is not an OPC UA source: profile '
       "'opc40501' reads an OPC UA model")]),
    ({"source": "nowhere"}, [('machines[0] "cnc-01": source',
                              'source "nowhere" is not defined')]),
    ({"machine_tool": None},
     [('machines[0] "cnc-01": machine_tool', "profile 'opc40501' needs machine_tool (the NodeId "
       "or browse path of the machine's MachineTool object)")]),
    ({"machine_tool": "Objects/x:Machines/v:cnc-01"},
     [('machines[0] "cnc-01": machine_tool', "browse path 'Objects/x:Machines/v:cnc-01': "
       'namespace alias not in sources "cnc" namespaces: \'x\'')]),
    ({"machine_tool": "ns=x;i=5"},
     [('machines[0] "cnc-01": machine_tool', "node 'ns=x;i=5' is not a NodeId")]),
])
def test_profile_problems_are_named_by_their_place(
        tmp_path: Path, change: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    data = copy.deepcopy(PLANT)
    for key, value in change.items():
        if value is None:
            del data["machines"][0][key]
        else:
            data["machines"][0][key] = value
    errors = _errors(tmp_path, data)
    profile_errors = [(w, m) for w, m in errors if not w.endswith(
        ("signals.state", "signals.parts_total", "signals.parts_bad"))]
    assert [(w, m[:len(expected[0][1])]) for w, m in profile_errors] == expected


def test_profile_keys_without_a_profile_are_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(PLANT)
    del data["machines"][0]["profile"]
    errors = _errors(tmp_path, data)
    assert ('machines[0] "cnc-01": source', "is read only with profile") in errors
    assert ('machines[0] "cnc-01": machine_tool', "is read only with profile") in errors
    assert ('machines[0] "cnc-01": signals.state', "required role is not configured") in errors


def test_reload_restarts_the_source_and_distrusts_counters_when_the_profile_moves(
        tmp_path: Path) -> None:
    old = _load(tmp_path, PLANT)
    data = copy.deepcopy(PLANT)
    data["machines"][0]["machine_tool"] = "nsu=urn:vendor;s=cnc-01"
    new = _load(tmp_path, data)
    plan = plan_reload(old, new)
    assert "cnc" in plan.sources_to_start
    assert plan.carry("machines", "cnc-01") == "totals"
    assert plan_reload(old, old).changed is False
