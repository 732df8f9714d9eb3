"""The OPC 40501-1 profile's pure parts: the state table, the combined state sample, the
job watch and the spec's checks."""

from __future__ import annotations

import asyncio

import pytest

from collectors.opcua import OpcUaSourceSpec, OpcUaTag
from collectors.opcua.opc40501 import (
    OPERATION_MODES,
    PROGRAM_STATES,
    STATE_RULES,
    Inputs,
    input_signal,
    machine_state,
)
from collectors.opcua.profile import Expansion, ProfileSink
from collectors.opcua.spec import PROFILES, ProfileSpec, is_node_id, validate
from rules.errors import ConfigError
from rules.types import MACHINE_STATES, Sample

# (program, mode, MachineryItemState, MachineryOperationMode) -> state
TABLE = [
    ("Running", "Automatic", None, None, "producing"),
    ("Running", "AutoWithManualIntervention", None, None, "producing"),
    ("Running", "Other", None, None, "producing"),
    ("Running", "Setup", None, None, "setup"),
    ("Running", "Manual", None, None, "setup"),
    ("Running", "Service", None, None, "planned_down"),
    ("Initializing", "Automatic", None, None, "setup"),
    ("Initializing", "Setup", None, None, "setup"),
    ("Ended", "Automatic", None, None, "idle"),
    ("Ended", "Other", None, None, "idle"),
    ("Ended", "Setup", None, None, "setup"),
    ("Ended", "Manual", None, None, "setup"),
    ("Ended", "Service", None, None, "planned_down"),
    ("Interrupted", "Automatic", None, None, "unplanned_down"),
    ("Interrupted", "Service", None, None, "unplanned_down"),
    ("Aborted", "AutoWithManualIntervention", None, None, "unplanned_down"),
    ("Interrupted", "Setup", None, None, "setup"),
    ("Aborted", "Manual", None, None, "setup"),
    # OPC 40001-1 building blocks (1.02) first
    ("Running", "Automatic", "NotAvailable", None, "off"),
    ("Ended", "Other", "NotAvailable", None, "off"),
    ("Running", "Automatic", "OutOfService", None, "unplanned_down"),
    ("Ended", "Setup", "OutOfService", None, "unplanned_down"),
    ("Running", "Automatic", "Executing", None, "producing"),
    ("Ended", "Automatic", "NotExecuting", None, "idle"),
    ("Ended", "Automatic", "NotExecuting", "Maintenance", "planned_down"),
    ("Ended", "Automatic", None, "Setup", "setup"),
    ("Running", "Automatic", "Executing", "Processing", "producing"),
    ("Interrupted", "Automatic", None, "Maintenance", "unplanned_down"),
]


@pytest.mark.parametrize(("program", "mode", "item", "machinery", "state"), TABLE)
def test_state_table(program: str, mode: str, item: str | None, machinery: str | None,
                     state: str) -> None:
    assert machine_state(program, mode, item, machinery) == state


def test_every_combination_gives_a_machine_state() -> None:
    for program in PROGRAM_STATES:
        for mode in OPERATION_MODES.values():
            for item in (None, "NotAvailable", "OutOfService", "NotExecuting", "Executing"):
                assert machine_state(program, mode, item) in MACHINE_STATES
    assert all(rule.state in MACHINE_STATES for rule in STATE_RULES)
    assert all(rule.why for rule in STATE_RULES)


def _s(ts: int, name: str, value: object, quality: str = "good") -> Sample:
    return Sample(ts, "cnc-01", input_signal(name), value, quality)  # type: ignore[arg-type]


def test_inputs_combine_program_and_mode_stamped_with_the_latest() -> None:
    inputs = Inputs("cnc-01")
    assert inputs.feed("program", _s(1000, "program", "Running")) is None  # no mode yet
    first = inputs.feed("mode", _s(500, "mode", "Automatic"))
    assert first == Sample(1000, "cnc-01", "state", "producing")
    assert inputs.feed("mode", _s(2000, "mode", "Automatic")) is None  # unchanged
    assert inputs.feed("mode", _s(3000, "mode", "Setup")) == Sample(3000, "cnc-01", "state",
                                                                    "setup")
    # a late notification of the other input never moves the state back in time
    assert inputs.feed("program", _s(2500, "program", "Ended")) is None  # still setup
    assert inputs.feed("mode", _s(4000, "mode", "Automatic")) == Sample(4000, "cnc-01", "state",
                                                                        "idle")


def test_inputs_bad_required_input_gives_a_bad_state_and_optional_waits() -> None:
    inputs = Inputs("cnc-01", frozenset({"item_state"}))
    inputs.feed("program", _s(1000, "program", "Running"))
    assert inputs.feed("mode", _s(1000, "mode", "Automatic")) is None  # item_state awaited
    first = inputs.feed("item_state", _s(1000, "item_state", "NotAvailable"))
    assert first is not None and first.value == "off"
    bad = inputs.feed("program", _s(2000, "program", None, "bad"))
    assert bad is not None and (bad.value, bad.quality) == (None, "bad")
    back = inputs.feed("program", _s(3000, "program", "Running"))
    assert back is not None and back.value == "off"
    # a bad optional input is left out rather than spoiling the state
    out = inputs.feed("item_state", _s(4000, "item_state", None, "bad"))
    assert out is not None and (out.value, out.quality) == ("producing", "good")


def test_with_optional_keeps_the_memory() -> None:
    inputs = Inputs("cnc-01")
    inputs.feed("program", _s(1000, "program", "Running"))
    inputs.feed("mode", _s(1000, "mode", "Automatic"))
    other = inputs.with_optional(frozenset({"machinery_mode"}))
    assert other.feed("machinery_mode", _s(2000, "machinery_mode", "Maintenance")) == Sample(
        2000, "cnc-01", "state", "planned_down")


class _Queue:
    def __init__(self) -> None:
        self.items: list[Sample] = []

    async def put(self, sample: Sample) -> None:
        self.items.append(sample)


def test_profile_sink_turns_inputs_into_state_and_watches_the_job() -> None:
    changed: list[str] = []
    profiles = ProfileSink(changed.append)
    profiles.configure(Expansion("cnc-01", watch=(input_signal("job"), "ns=3;s=Job1")))
    inner = _Queue()
    sink = profiles.wrap(inner)

    async def feed() -> None:
        await sink.put(Sample(900, "cnc-01", "parts_total", 41))
        await sink.put(_s(1000, "program", "Running"))
        await sink.put(_s(1000, "mode", "Automatic"))
        await sink.put(_s(1000, "job", "ns=3;s=Job1"))  # the job it was expanded for
        await sink.put(_s(2000, "job", "ns=3;s=Job2"))
        await sink.put(_s(2100, "job", "ns=3;s=Job3"))  # already being followed

    asyncio.run(feed())
    assert inner.items == [Sample(900, "cnc-01", "parts_total", 41),
                           Sample(1000, "cnc-01", "state", "producing")]
    assert changed == ["cnc-01"]


def test_profile_sink_job_state_watch_fires_only_when_the_job_ends() -> None:
    changed: list[str] = []
    profiles = ProfileSink(changed.append)
    profiles.configure(Expansion("m", watch=(input_signal("job_state"), "Running")))
    assert profiles.take(Sample(1, "m", input_signal("job_state"), "Interrupted")) is None
    assert changed == []
    assert profiles.take(Sample(2, "m", input_signal("job_state"), "Ended")) is None
    assert changed == ["m"]


def test_non_blocking_sink_stays_non_blocking() -> None:
    queue: asyncio.Queue[Sample] = asyncio.Queue(1)
    sink = ProfileSink(lambda d: None).wrap(queue)
    assert hasattr(sink, "put_nowait") and not sink.full()  # type: ignore[attr-defined]
    sink.put_nowait(Sample(1, "m", "parts_total", 1))  # type: ignore[attr-defined]
    assert sink.full() and queue.get_nowait().value == 1  # type: ignore[attr-defined]


def test_node_id_or_browse_path() -> None:
    assert is_node_id("ns=2;s=Machines/cnc-01") and is_node_id("i=85")
    assert is_node_id("nsu=http://opcfoundation.org/UA/Machinery/;i=1001")
    assert not is_node_id("Objects/ma:Machines/v:cnc-01")


def _spec(*profiles: ProfileSpec, tags: tuple[OpcUaTag, ...] = ()) -> OpcUaSourceSpec:
    return OpcUaSourceSpec(id="plc", url="opc.tcp://127.0.0.1:4840", tags=tags,
                           namespaces={"ma": "http://opcfoundation.org/UA/Machinery/"},
                           profiles=profiles)


def test_spec_checks_name_the_profile_machine() -> None:
    roles = PROFILES["opc40501"]
    validate(_spec(ProfileSpec("cnc-01", "opc40501", "Objects/ma:Machines/ma:cnc-01", roles)))
    with pytest.raises(ConfigError) as err:
        validate(_spec(
            ProfileSpec("cnc-01", "opc405", "i=85", roles),
            ProfileSpec("cnc-02", "opc40501", "Objects/x:Machines", roles),
            ProfileSpec("cnc-03", "opc40501", "i=85", frozenset({"power_kw"})),
            ProfileSpec("cnc-04", "opc40501", "i=85", roles),
            tags=(OpcUaTag("cnc-04", "state", node="i=1"),)))
    assert err.value.errors == [
        ("opcua source 'plc' profiles[0] cnc-01", "unknown profile 'opc405' (known: opc40501)"),
        ("opcua source 'plc' profiles[1] cnc-02",
         "machine_tool: browse path 'Objects/x:Machines': unknown namespace alias 'x'"),
        ("opcua source 'plc' profiles[2] cnc-03",
         "profile 'opc40501' provides parts_good, parts_total, state, not power_kw"),
        ("opcua source 'plc' profiles[3] cnc-04", "state also configured as a tag"),
    ]
