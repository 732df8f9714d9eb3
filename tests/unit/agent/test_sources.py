"""The source-type registry: every type registered, and ``check`` agreeing with ``build``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import pytest
import tomli_w

from agent.config import load_agent_config
from agent.config.load import load_model
from agent.config.model import AgentConfig, SignalSection
from agent.sources.registry import (
    SOURCE_TYPES,
    SignalAddress,
    SourceSection,
    addressed_as,
    source_type,
)
from collectors.modbus import ModbusCollector
from collectors.presets import PRESETS
from rules.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p for p in (REPO / "deploy" / "examples").glob("*.toml")
                  if p.name != "ingest.toml")

PLANT: dict[str, Any] = {
    "site": {"id": "s1"},
    "sources": [
        {"id": "plc", "type": "opcua", "url": "opc.tcp://127.0.0.1:4840"},
        {"id": "gw", "type": "modbus", "host": "127.0.0.1", "port": 5020},
    ],
    "lines": [{"id": "line-a", "output_machine": "cnc-01"}],
    "machines": [{
        "id": "cnc-01", "line": "line-a", "ideal_cycle_time_s": 30.0,
        "signals": {
            "state": {"source": "plc", "node": "ns=2;s=State", "map": {"1": "producing"}},
            "parts_total": {"source": "plc", "node": "ns=2;s=Total"},
            "parts_bad": {"source": "gw", "unit": 1, "table": "holding", "address": 10,
                          "type": "u32"},
        },
    }],
    "meters": [{"id": "m1", "machine": "cnc-01", "source": "gw", "unit": 2,
                "preset": sorted(PRESETS)[0]}],
}


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "agent.toml"
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def test_every_source_type_is_registered_once() -> None:
    tags = {get_args(variant.model_fields["type"].annotation)[0]
            for variant in get_args(get_args(SourceSection)[0])}
    assert tags == set(SOURCE_TYPES)
    for name, kind in SOURCE_TYPES.items():
        assert kind.name == name and source_type(name) is kind
        assert get_args(kind.section.model_fields["type"].annotation) == (name,)
        assert issubclass(SignalAddress, kind.address)
        assert issubclass(SignalSection, kind.address)
        # What a reload compares are keys the models have.
        assert set(kind.endpoint_keys) <= set(kind.section.model_fields)
        assert set(kind.meaning_keys) | set(kind.address_keys) <= set(kind.address.model_fields)


def test_unknown_type_is_a_located_config_error(tmp_path: Path) -> None:
    data = copy.deepcopy(PLANT)
    data["sources"][1] = {"id": "s7-plc", "type": "s7", "host": "10.0.0.5"}
    with pytest.raises(ConfigError) as info:
        load_agent_config(_write(tmp_path, data))
    (where, message), *_ = info.value.errors
    assert where == 'sources[1] "s7-plc": type'
    assert "'s7'" in message and all(f"'{name}'" in message for name in SOURCE_TYPES)


@pytest.mark.parametrize(("signal", "wanted"), [
    ({"node": "ns=2;s=X", "table": "holding", "address": 1}, "give either"),
    ({}, "needs"),
    ({"table": "holding", "address": 65535, "type": "u32"}, "past the last register 65535"),
    ({"table": "input", "address": 0, "type": "string"}, "type 'string' needs length"),
    ({"node": "ns=2;s=X", "length": 4}, "an OPC UA node has none"),
])
def test_signal_address_is_checked_when_the_file_is_read(
        tmp_path: Path, signal: dict[str, Any], wanted: str) -> None:
    data = copy.deepcopy(PLANT)
    data["machines"][0]["signals"]["parts_bad"] = {"source": "gw", "unit": 1, **signal}
    with pytest.raises(ConfigError) as info:
        load_model(_write(tmp_path, data), AgentConfig)
    assert [w for w, m in info.value.errors if wanted in m] == [
        'machines[0] "cnc-01": signals.parts_bad'], info.value.errors


def test_a_signal_is_addressed_in_one_protocol() -> None:
    opcua = SignalSection.model_validate({"source": "plc", "node": "ns=2;s=X"})
    modbus = SignalSection.model_validate({"source": "gw", "table": "coil", "address": 3})
    assert [t.name for t in addressed_as(opcua)] == ["opcua"]
    assert [t.name for t in addressed_as(modbus)] == ["modbus"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_what_check_accepts_builds(path: Path) -> None:
    cfg = load_agent_config(path)
    read = {sig.source for _, _, sig in cfg.signals()} | {
        mt.source for mt in cfg.meters if mt.preset is not None}
    for i, src in enumerate(cfg.sources):
        kind = source_type(src.type)
        assert kind.check(cfg, i, src) == []
        if kind.name == "opcua" and getattr(src, "password_env", None):
            continue  # build reads the password from the environment
        collector = kind.build(cfg, i, src)
        assert (collector is not None) == (src.id in read)
        if collector is not None:
            assert collector.name == src.id


def test_what_check_rejects_build_refuses_at_the_same_place() -> None:
    data = copy.deepcopy(PLANT)
    data["machines"][0]["signals"]["parts_total"]["node"] = "ns=2;q=Total"
    cfg = AgentConfig.model_validate(data)
    problems = {src.id: source_type(src.type).check(cfg, i, src)
                for i, src in enumerate(cfg.sources)}
    assert problems["gw"] == []
    ((where, message),) = problems["plc"]
    assert where == 'machines[0] "cnc-01": signals.parts_total'
    assert "is not a NodeId" in message
    with pytest.raises(ConfigError) as info:
        source_type("opcua").build(cfg, 0, cfg.sources[0])
    assert info.value.errors == problems["plc"]


def test_a_modbus_collector_groups_points_by_unit_with_the_presets() -> None:
    cfg = AgentConfig.model_validate(PLANT)
    collector = source_type("modbus").build(cfg, 1, cfg.sources[1])
    assert isinstance(collector, ModbusCollector) and collector.name == "gw"
    assert [(d.unit, d.id) for d in collector.spec.devices] == [(1, "cnc-01"), (2, "m1")]
