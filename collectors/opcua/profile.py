"""A machine read by a profile, turned into tags against the connected server.

At every connect (and again when the machine's active job changes) the collector calls
:func:`expand` for each :class:`~collectors.opcua.spec.ProfileSpec`: it finds the
MachineTool object, translates the profile's browse paths below it in one request,
picks the active job, and returns ordinary :class:`~collectors.opcua.spec.OpcUaTag`\\ s
(NodeIds of this session) for the roles, plus the profile's inputs, which
:class:`ProfileSink` turns into the ``state`` role before anything leaves the
collector. What is where, and the state table, are in :mod:`collectors.opcua.opc40501`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.object_ids import ObjectIds

from collectors.base import NonBlockingSink, SampleSink
from collectors.opcua import opc40501 as mt
from collectors.opcua.convert import plain_value
from collectors.opcua.spec import (
    Deadband,
    OpcUaTag,
    ProfileSpec,
    is_node_id,
    parse_browse_path,
    parse_node,
)
from rules.types import Sample

__all__ = ["Expansion", "ProfileSink", "expand", "relative_path"]

_ANY_CHANGE = Deadband("absolute", 0.0)
"""Counters and job keys opt out of a source-wide deadband: every change counts."""


@dataclass(slots=True)
class Expansion:
    """What one profile machine is on this server now.

    ``watch`` is the input whose change means the active job changed, with the value it
    had (``settled`` False: no active job was found, so the choice is checked again).
    ``missing`` gives, per role, why the server does not provide it.
    """

    device: str
    tags: list[OpcUaTag] = field(default_factory=list)
    optional: frozenset[str] = frozenset()
    missing: dict[str, str] = field(default_factory=dict)
    watch: tuple[str, object] | None = None
    settled: bool = True


def relative_path(elements: Iterable[tuple[str | None, str]], ns_array: Sequence[str]
                  ) -> ua.RelativePath:
    """A RelativePath following hierarchical references by browse names.

    Raises ``LookupError`` naming a namespace URI the server lacks.
    """
    rel = ua.RelativePath()
    for uri, name in elements:
        if uri is None:
            index = 0
        else:
            try:
                index = list(ns_array).index(uri)
            except ValueError:
                raise LookupError(f"namespace {uri!r} is not on the server") from None
        element: Any = ua.RelativePathElement()  # its Boolean fields are not bool-typed
        element.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
        element.IsInverse = False
        element.IncludeSubtypes = True
        element.TargetName = ua.QualifiedName(name, index)
        rel.Elements.append(element)
    return rel


def _plain(nodeid: ua.NodeId) -> ua.NodeId:
    return ua.NodeId(nodeid.Identifier, nodeid.NamespaceIndex, nodeid.NodeIdType)


async def _translate(client: Client, start: ua.NodeId, paths: Sequence[mt.Path],
                     ns_array: Sequence[str]) -> list[ua.NodeId | None]:
    """The node each path leads to from ``start`` (None where it leads nowhere, also
    through a namespace the server does not have)."""
    known = set(ns_array)
    asked = [i for i, path in enumerate(paths) if all(u is None or u in known for u, _ in path)]
    out: list[ua.NodeId | None] = [None] * len(paths)
    if not asked:
        return out
    results = await client.translate_browsepaths(
        start, [relative_path(paths[i], ns_array) for i in asked])
    for i, r in zip(asked, results, strict=True):
        if r.StatusCode.is_good() and r.Targets:
            out[i] = _plain(r.Targets[0].TargetId)
    return out


async def _values(client: Client, nodes: Sequence[ua.NodeId]) -> list[object]:
    """The plain values of ``nodes`` (None where a read fails)."""
    if not nodes:
        return []
    dvs = await client.read_attributes([client.get_node(n) for n in nodes])
    return [plain_value(dv.Value.Value) if dv.Value is not None
            and (dv.StatusCode is None or dv.StatusCode.is_good()) else None for dv in dvs]


async def _machine_tool(client: Client, prof: ProfileSpec, namespaces: Mapping[str, str],
                        ns_array: Sequence[str]) -> ua.NodeId:
    if is_node_id(prof.machine_tool):
        return parse_node(prof.machine_tool, list(ns_array))
    path = parse_browse_path(prof.machine_tool, namespaces)
    found = await _translate(client, ua.NodeId(ua.Int32(ObjectIds.RootFolder)), [tuple(path)],
                             ns_array)
    if found[0] is None:
        raise LookupError(f"machine_tool {prof.machine_tool!r} not found")
    return found[0]


def _tag(device: str, signal: str, node: ua.NodeId, value_map: Mapping[str, str] | None = None
         ) -> OpcUaTag:
    return OpcUaTag(device, signal, node=node.to_string(), value_map=value_map,
                    deadband=None if value_map is not None else _ANY_CHANGE)


_NAMES: dict[str, Mapping[str, str]] = {
    "program": {s: s for s in mt.PROGRAM_STATES},
    "mode": mt.OPERATION_MODES,
    "item_state": {s: s for s in mt.ITEM_STATES},
    "machinery_mode": {s: s for s in mt.MACHINERY_MODES},
}


async def expand(client: Client, ns_array: Sequence[str], prof: ProfileSpec,
                 namespaces: Mapping[str, str]) -> Expansion:
    """The tags of one profile machine on this server (see the module docstring).

    Raises ``LookupError`` when the MachineTool object or the profile's namespace is
    not on the server; a role the server lacks is in :attr:`Expansion.missing`.
    """
    out = Expansion(prof.device)
    if mt.MACHINE_TOOL_URI not in ns_array:
        raise LookupError(f"the server has no namespace {mt.MACHINE_TOOL_URI} (no OPC 40501 "
                          "machine tool)")
    root = await _machine_tool(client, prof, namespaces, ns_array)
    inputs = {"program": mt.PROGRAM_STATE, "mode": mt.OPERATION_MODE,
              "item_state": mt.ITEM_STATE, "machinery_mode": mt.MACHINERY_MODE}
    paths: list[mt.Path] = [*inputs.values(), *mt.LIFETIME_PARTS, mt.JOB_NODE_ID,
                            mt.JOB_IDENTIFIER, mt.PRODUCTION_PLAN]
    found = dict(zip([*inputs, "lifetime_a", "lifetime_b", "job_node_id", "job_identifier",
                      "plan"], await _translate(client, root, paths, ns_array), strict=True))
    if "state" in prof.roles:
        lacking = [k for k in ("program", "mode") if found[k] is None]
        if lacking:
            out.missing["state"] = " and ".join(
                "/".join(name for _, name in inputs[k]) for k in lacking) + " not found"
        else:
            for key in inputs:
                node = found[key]
                if node is not None:
                    out.tags.append(_tag(prof.device, mt.input_signal(key), node, _NAMES[key]))
            out.optional = frozenset(k for k in ("item_state", "machinery_mode")
                                     if found[k] is not None)
    lifetime = found["lifetime_a"] or found["lifetime_b"]
    if "parts_total" in prof.roles and lifetime is not None:
        out.tags.append(_tag(prof.device, "parts_total", lifetime))
    need_job = "parts_good" in prof.roles or ("parts_total" in prof.roles and lifetime is None)
    if need_job:
        job, reason = await _active_job(client, found, ns_array, out)
        counters = (await _translate(client, job, [mt.JOB_PARTS_GOOD, mt.JOB_PARTS_COMPLETED],
                                     ns_array) if job is not None else [None, None])
        for role, node, name in (("parts_good", counters[0], "PartsGood"),
                                 ("parts_total", counters[1], "PartsCompleted")):
            if role not in prof.roles or (role == "parts_total" and lifetime is not None):
                continue
            if node is not None:
                out.tags.append(_tag(prof.device, role, node))
            else:
                out.missing[role] = reason or f"the active job has no {name}"
    elif "parts_total" in prof.roles and lifetime is None:
        out.missing["parts_total"] = "no PartsProducedInLifetime"
    return out


async def _active_job(client: Client, found: Mapping[str, ua.NodeId | None],
                      ns_array: Sequence[str], out: Expansion) -> tuple[ua.NodeId | None, str]:
    """The job being worked on, and the input to watch for the next one (in ``out``);
    with no job, why not."""
    device = out.device
    node_id, identifier = found["job_node_id"], found["job_identifier"]
    if node_id is not None:
        dvs = await client.read_attributes([client.get_node(node_id)])
        raw = dvs[0].Value.Value if dvs[0].Value is not None else None
        out.watch = (mt.input_signal("job"), plain_value(raw))
        out.tags.append(_tag(device, mt.input_signal("job"), node_id))
        if isinstance(raw, ua.NodeId) and not raw.is_null():
            return _plain(raw), ""
    plan = found["plan"]
    jobs = (await client.get_node(plan).get_children(
        refs=ObjectIds.HierarchicalReferences, nodeclassmask=ua.NodeClass.Object)
            if plan is not None else [])
    job_ids = [j.nodeid for j in jobs]
    if identifier is not None and out.watch is None:
        (wanted,) = await _values(client, [identifier])
        out.watch = (mt.input_signal("job"), wanted)
        out.tags.append(_tag(device, mt.input_signal("job"), identifier))
        keys = [await _translate(client, j, [mt.JOB_IDENTIFIER_PROPERTY], ns_array)
                for j in job_ids]
        values = await _values(client, [k[0] for k in keys if k[0] is not None])
        named = [j for j, k in zip(job_ids, keys, strict=True) if k[0] is not None]
        for job, value in zip(named, values, strict=True):
            if wanted and value == wanted:
                return job, ""
    if not job_ids:
        out.settled = False
        return None, "the ProductionPlan has no job" if plan is not None else \
            "no Production/ProductionPlan"
    states = [await _translate(client, j, [mt.JOB_STATE], ns_array) for j in job_ids]
    state_nodes = [s[0] for s in states]
    values = await _values(client, [n for n in state_nodes if n is not None])
    by_job = dict(zip([j for j, n in zip(job_ids, state_nodes, strict=True) if n is not None],
                      zip([n for n in state_nodes if n is not None], values, strict=True),
                      strict=True))
    active = [j for j, (_, v) in by_job.items() if v in mt.ACTIVE_JOB_STATES]
    chosen = active[0] if active else (job_ids[0] if len(job_ids) == 1 else None)
    if chosen is None:
        out.settled = False
        return None, "no job of the ProductionPlan is running"
    if out.watch is None and chosen in by_job:
        state_node, value = by_job[chosen]
        out.watch = (mt.input_signal("job_state"), value)
        out.tags.append(_tag(device, mt.input_signal("job_state"), state_node))
    out.settled = bool(active)
    return chosen, ""


class ProfileSink:
    """The collector's sink while profile machines are read: their input samples become
    ``state`` samples (:class:`~collectors.opcua.opc40501.Inputs`), a change of a watched
    job input calls ``job_changed(device)``; everything else passes through.

    One object for the collector's lifetime, so a reconnect does not forget the inputs.
    """

    def __init__(self, job_changed: Callable[[str], None]) -> None:
        self.inner: SampleSink | None = None
        self._inputs: dict[str, mt.Inputs] = {}
        self._watch: dict[str, tuple[str, object]] = {}
        self._job_changed = job_changed

    def configure(self, exp: Expansion) -> None:
        """Take a device's (new) expansion: its optional inputs and the job watch."""
        inputs = self._inputs.get(exp.device)
        if inputs is None or inputs.optional != exp.optional:
            self._inputs[exp.device] = mt.Inputs(exp.device, exp.optional) if inputs is None \
                else inputs.with_optional(exp.optional)
        if exp.watch is None:
            self._watch.pop(exp.device, None)
        else:
            self._watch[exp.device] = exp.watch

    def take(self, sample: Sample) -> Sample | None:
        """What ``sample`` becomes: itself, a ``state`` sample, or nothing."""
        tag = sample.signal
        if not tag.startswith(mt.NAME + "."):
            return sample
        name = tag[len(mt.NAME) + 1:]
        if name in ("job", "job_state"):
            watch = self._watch.get(sample.device)
            if (watch is not None and watch[0] == tag and sample.quality == "good"
                    and sample.value != watch[1]
                    and (name == "job" or mt.job_left(sample.value))):
                self._watch.pop(sample.device, None)
                self._job_changed(sample.device)
            return None
        inputs = self._inputs.get(sample.device)
        return None if inputs is None else inputs.feed(name, sample)

    def wrap(self, inner: SampleSink) -> SampleSink:
        """A sink in front of ``inner`` (non-blocking when ``inner`` is)."""
        self.inner = inner
        if isinstance(inner, NonBlockingSink):
            return _NonBlocking(self, inner)
        return _Blocking(self, inner)


class _Blocking:
    __slots__ = ("_inner", "_profiles")

    def __init__(self, profiles: ProfileSink, inner: SampleSink) -> None:
        self._profiles = profiles
        self._inner = inner

    async def put(self, sample: Sample, /) -> None:
        out = self._profiles.take(sample)
        if out is not None:
            await self._inner.put(out)


class _NonBlocking(_Blocking):
    __slots__ = ("_nb",)

    def __init__(self, profiles: ProfileSink, inner: NonBlockingSink) -> None:
        super().__init__(profiles, inner)
        self._nb = inner

    def put_nowait(self, sample: Sample, /) -> None:
        out = self._profiles.take(sample)
        if out is not None:
            self._nb.put_nowait(out)

    def full(self) -> bool:
        return self._nb.full()
