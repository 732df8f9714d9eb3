"""The OPC UA side of ``edge-agent browse``: connect as the agent does, walk, read.

The connection uses the agent's own security set-up,
:func:`collectors.opcua.endpoint.secure_client`: the same client certificate (never
created here: ``edge-agent certs`` does that), the endpoint with the configured policy
and mode, and a server certificate that must be in the trust directory or pinned,
checked before the session is created, so a password is never sent to an untrusted
server.

Walking is breadth-first over hierarchical references with one Browse request per batch
of nodes and one Read per batch of variables, because each round trip to a controller
costs several milliseconds; a node budget and a depth bound keep big servers bounded.
Results are plain dataclasses; rendering is :mod:`agent.commission.browse`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from collectors.opcua import OpcUaSourceSpec
from collectors.opcua import security as sec
from collectors.opcua.endpoint import NoEndpointError, secure_client, server_trust
from rules.errors import ConfigError, DeviceError

__all__ = ["NodeView", "Session", "connect"]

log = logging.getLogger(__name__)

_BROWSE_BATCH = 50
_READ_BATCH = 40
"""Nodes per Browse / Read request: well inside the operation limits small PLCs declare."""
_MAX_REFS = 10_000
"""References collected per node at most; a folder with more is cut off and counted."""
_VALUE_CHARS = 60


def _ns0(identifier: int) -> ua.NodeId:
    """A numeric node id of namespace 0 (the standard nodes)."""
    return ua.NodeId(ua.Int32(identifier))


_NOT_EXPANDED = {_ns0(ObjectIds.Server): "server diagnostics; --path i=2253 shows it"}
"""Standard nodes whose (large) subtree is shown only when browsing starts there."""


@dataclass(slots=True)
class NodeView:
    """One node as the tree shows it.

    ``node_id`` is asyncua's ``ns=<index>;...`` text (``i=85`` in namespace 0);
    ``name_ns`` the namespace index of the browse name, which may differ from the node
    id's. ``more`` counts children left out by the node budget (``more_capped``: at
    least that many), ``below`` children beyond the depth bound; ``note`` says why a
    node was not expanded (``expand`` False) or could not be browsed.
    """

    node_id: str
    ns: int
    name_ns: int
    name: str
    node_class: str
    data_type: str | None = None
    access: str | None = None
    value: str | None = None
    children: list[NodeView] = field(default_factory=list)
    is_array: bool = False
    more: int = 0
    more_capped: bool = False
    below: int = 0
    expand: bool = True
    note: str = ""
    browse_path: list[tuple[int, str]] | None = None
    nodeid: Any = field(default=None, repr=False)
    type_id: Any = field(default=None, repr=False)


def _reason(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror})"
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(err, UaStatusCodeError):
        return ua.StatusCode(err.code).name if err.code is not None else type(err).__name__
    text = str(err) or type(err).__name__
    return " ".join(text.split())


async def _secure(client: Client, spec: OpcUaSourceSpec) -> sec.CertInfo:
    """The agent's security set-up: its certificate, the matching endpoint, a trusted
    server certificate pinned for the secure channel. Returns the client certificate."""
    try:
        cert = sec.ensure_client_certificate(
            spec.pki_dir or Path("."), spec.application_uri, cert_path=spec.certificate,
            key_path=spec.private_key, create=False)
    except ConfigError as err:
        raise ConfigError([("client certificate", err.render())]) from err
    try:
        await secure_client(client, spec, cert, server_trust(spec),
                            reason=lambda err: _reason(err, spec.timeout_s))
    except NoEndpointError as err:
        # In the syntax of --security, which the operator types next.
        raise DeviceError(f"{err.url} offers no endpoint with {','.join(err.wanted)}; it "
                          f"offers {'; '.join(','.join(pm) for pm in err.offered)}") from err
    return cert


@contextlib.asynccontextmanager
async def connect(spec: OpcUaSourceSpec) -> AsyncIterator[Session]:
    """A session with the server; DeviceError (one line, naming the URL) if there is none."""
    asyncua_log = logging.getLogger("asyncua")
    if asyncua_log.getEffectiveLevel() > logging.DEBUG:
        # The error raised here says what failed; asyncua's own lines would repeat it.
        asyncua_log.setLevel(logging.CRITICAL)
    # A one-shot command: the keep-alive probe only has to outlast the walk.
    client = Client(spec.url, timeout=spec.timeout_s, watchdog_intervall=30.0)
    client.session_timeout = int(spec.session_timeout_s * 1000)
    cert = await _secure(client, spec) if spec.secure else None
    if spec.username:
        client.set_user(spec.username)
    if spec.password:
        client.set_password(spec.password)
    connected = False
    try:
        try:
            async with asyncio.timeout(spec.timeout_s * 4 + 5):
                await client.connect()
                connected = True
                ns_array = list(await client.get_namespace_array())
        except (OSError, TimeoutError, UaError) as err:
            reason = _reason(err, spec.timeout_s)
            if cert is not None and (reason.startswith("BadCertificate")
                                     or reason == "BadSecurityChecksFailed"):
                reason += (f"; the server may not trust the client certificate "
                           f"{cert.cert_path} (SHA-256 {cert.sha256}): have its administrator "
                           "trust it")
            raise DeviceError(f"cannot reach {spec.url}: {reason}") from err
        yield Session(client, ns_array, spec.timeout_s)
    finally:
        with contextlib.suppress(Exception):
            if connected:
                async with asyncio.timeout(spec.timeout_s):
                    await client.disconnect()
        client.disconnect_socket()


def _text(value: Any) -> str:
    """A value as one short line; strings quoted, so ``"2"`` is told from ``2``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return f"{value.name} ({value.value})"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, ua.LocalizedText):
        text = json.dumps(value.Text, ensure_ascii=False) if value.Text is not None else "null"
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, bytes):
        text = f"0x{value[:24].hex()}" + ("…" if len(value) > 24 else "")
    elif isinstance(value, list):
        shown = []
        for item in value[:8]:
            shown.append(_text(item))
        text = "[" + ", ".join(shown) + (", …" if len(value) > 8 else "") + "]"
        if len(value) > 8:
            text += f" ({len(value)} items)"
    elif isinstance(value, ua.QualifiedName):
        text = f"{value.NamespaceIndex}:{value.Name}"
    elif isinstance(value, ua.NodeId):
        text = value.to_string()
    else:
        text = " ".join(str(value).split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _value_text(dv: ua.DataValue) -> str:
    status = dv.StatusCode
    if status is not None and not status.is_good():
        if status.is_uncertain() and dv.Value is not None:
            return f"{_variant_text(dv.Value)} ({status.name})"
        return f"<{status.name}>"
    return _variant_text(dv.Value) if dv.Value is not None else "null"


def _variant_text(variant: ua.Variant) -> str:
    raw = variant.Value
    if variant.VariantType == ua.VariantType.Float and isinstance(raw, float):
        return f"{raw:.7g}"  # float32: more digits would be conversion noise
    return _text(raw)


def _access(level: Any) -> str:
    try:
        bits = int(level)
    except (TypeError, ValueError):
        return "?"
    text = ("r" if bits & 1 else "") + ("w" if bits & 2 else "")
    text = text or "-"
    return text + (" hist" if bits & 4 else "")


def _plain(nodeid: ua.NodeId) -> ua.NodeId:
    """An ExpandedNodeId (from a browse result) as a plain NodeId."""
    return ua.NodeId(nodeid.Identifier, nodeid.NamespaceIndex, nodeid.NodeIdType)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Session:
    """An open session and its namespace array (index -> URI, read once per session)."""

    def __init__(self, client: Client, ns_array: list[str], timeout_s: float) -> None:
        self.client = client
        self.ns_array = ns_array
        self.timeout_s = timeout_s
        self._type_names: dict[ua.NodeId, str] = {}

    # -- requests ----------------------------------------------------------------

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (OSError, TimeoutError, UaError) as err:
            raise DeviceError(f"{what}: {_reason(err, self.timeout_s)}") from err

    async def _children(self, nodeids: Sequence[ua.NodeId]
                        ) -> list[tuple[list[ua.ReferenceDescription], bool, str]]:
        """Forward hierarchical references of each node: (refs, cut off, problem)."""
        out: list[tuple[list[ua.ReferenceDescription], bool, str]] = []
        for chunk in _chunks(nodeids, _BROWSE_BATCH):
            params = ua.BrowseParameters()
            params.RequestedMaxReferencesPerNode = 0
            for nodeid in chunk:
                desc = ua.BrowseDescription()
                desc.NodeId = nodeid
                desc.BrowseDirection = ua.BrowseDirection.Forward
                desc.ReferenceTypeId = _ns0(ObjectIds.HierarchicalReferences)
                desc.IncludeSubtypes = True
                desc.NodeClassMask = 0
                desc.ResultMask = ua.BrowseResultMask.All
                params.NodesToBrowse.append(desc)
            results = await self._call("browse", self.client.uaclient.browse(params))
            for result in results:
                out.append(await self._collect(result))
        return out

    async def _collect(self, result: ua.BrowseResult
                       ) -> tuple[list[ua.ReferenceDescription], bool, str]:
        if not result.StatusCode.is_good():
            return [], False, result.StatusCode.name
        refs = list(result.References or [])
        point = result.ContinuationPoint
        while point:
            release = len(refs) >= _MAX_REFS
            params = ua.BrowseNextParameters()
            params.ReleaseContinuationPoints = release
            params.ContinuationPoints = [point]
            (more,) = await self._call("browse next", self.client.uaclient.browse_next(params))
            if release:
                return refs, True, ""
            refs += list(more.References or [])
            point = more.ContinuationPoint
        return refs, False, ""

    async def _read(self, pairs: Sequence[tuple[ua.NodeId, int]]) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for chunk in _chunks(pairs, _READ_BATCH * 4):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Neither
            for nodeid, attribute in chunk:
                rv = ua.ReadValueId()
                rv.NodeId = nodeid
                rv.AttributeId = attribute
                params.NodesToRead.append(rv)
            out += await self._call("read", self.client.uaclient.read(params))
        return out

    # -- nodes ---------------------------------------------------------------------

    def parse_node_id(self, text: str) -> ua.NodeId:
        """``ns=2;s=x``, ``i=85`` or ``nsu=<uri>;s=x`` (resolved against this server)."""
        body = text.strip()
        if body.startswith("nsu="):
            uri, sep, rest = body[4:].partition(";")
            if not sep or not uri:
                raise ValueError(f"node {text!r}: expected nsu=<uri>;<i|s|g|b>=<id>")
            if uri not in self.ns_array:
                raise LookupError(f"node {text!r}: namespace {uri!r} is not on the server "
                                  f"(it has {', '.join(self.ns_array)})")
            body = f"ns={self.ns_array.index(uri)};{rest}"
        try:
            return ua.NodeId.from_string(body)
        except (ValueError, TypeError, UaError) as err:
            raise ValueError(f"node {text!r} is not a node id: {err}") from err

    async def resolve_path(self, elements: Sequence[tuple[int, str]], text: str) -> ua.NodeId:
        """The node at a browse path from the Root folder; LookupError if there is none."""
        rel = ua.RelativePath()
        for index, name in elements:
            element: Any = ua.RelativePathElement()
            element.ReferenceTypeId = _ns0(ObjectIds.HierarchicalReferences)
            element.IsInverse = False
            element.IncludeSubtypes = True
            element.TargetName = ua.QualifiedName(name, index)
            rel.Elements.append(element)
        (result,) = await self._call("translate browse path", self.client.translate_browsepaths(
            _ns0(ObjectIds.RootFolder), [rel]))
        if not result.StatusCode.is_good() or not result.Targets:
            raise LookupError(f"browse path {text!r} is not on the server "
                              f"({result.StatusCode.name})")
        return _plain(result.Targets[0].TargetId)

    async def node(self, nodeid: ua.NodeId) -> NodeView:
        """One node with its attributes; LookupError if the server does not know it."""
        name_dv, class_dv = await self._read([(nodeid, AttributeIds.BrowseName),
                                              (nodeid, AttributeIds.NodeClass)])
        status = name_dv.StatusCode
        if (status is not None and not status.is_good()) or name_dv.Value is None:
            raise LookupError(f"node {nodeid.to_string()} is not on the server "
                              f"({status.name if status is not None else 'no browse name'})")
        qname: ua.QualifiedName = name_dv.Value.Value
        node_class = ua.NodeClass(class_dv.Value.Value) if class_dv.Value is not None \
            else ua.NodeClass.Unspecified
        view = NodeView(nodeid.to_string(), nodeid.NamespaceIndex, qname.NamespaceIndex,
                        qname.Name or "", node_class.name, nodeid=nodeid)
        if node_class == ua.NodeClass.Variable:
            await self._fill_variables([view])
        return view

    async def _fill_variables(self, views: Sequence[NodeView]) -> None:
        """Value, data type, array rank and this user's access of each variable."""
        attrs = (AttributeIds.Value, AttributeIds.DataType, AttributeIds.ValueRank,
                 AttributeIds.UserAccessLevel)
        values = await self._read([(v.nodeid, a) for v in views for a in attrs])
        for i, view in enumerate(views):
            value, dtype, rank, access = values[4 * i: 4 * i + 4]
            view.value = _value_text(value)
            view.type_id = dtype.Value.Value if dtype.Value is not None else None
            view.is_array = (rank.Value is not None and isinstance(rank.Value.Value, int)
                             and rank.Value.Value >= 1)
            view.access = _access(access.Value.Value) if access.Value is not None else "?"
        await self._name_types(views)

    async def _name_types(self, views: Sequence[NodeView]) -> None:
        unknown = [v.type_id for v in views if isinstance(v.type_id, ua.NodeId)
                   and v.type_id not in self._type_names
                   and not (v.type_id.NamespaceIndex == 0
                            and isinstance(v.type_id.Identifier, int)
                            and v.type_id.Identifier in ObjectIdNames)]
        unknown = list(dict.fromkeys(unknown))
        if unknown:
            names = await self._read([(t, AttributeIds.BrowseName) for t in unknown])
            for type_id, dv in zip(unknown, names, strict=True):
                qname = dv.Value.Value if dv.Value is not None else None
                self._type_names[type_id] = (qname.Name if isinstance(qname, ua.QualifiedName)
                                             else type_id.to_string())
        for view in views:
            type_id = view.type_id
            if not isinstance(type_id, ua.NodeId):
                continue
            if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int) \
                    and type_id.Identifier in ObjectIdNames:
                name = ObjectIdNames[type_id.Identifier]
            else:
                name = self._type_names[type_id]
            view.data_type = name + ("[]" if view.is_array else "")

    async def walk(self, start: NodeView, depth: int, max_nodes: int) -> int:
        """Fill ``start``'s subtree, breadth-first, down to ``depth`` levels and at most
        ``max_nodes`` nodes in all; returns how many nodes were shown."""
        shown = 1
        seen = {start.nodeid}
        frontier = [start]
        for level in range(depth + 1):
            expand = [n for n in frontier if n.expand and n.node_class != "Method"]
            if not expand:
                break
            children = await self._children([n.nodeid for n in expand])
            if level == depth:
                for node, (refs, capped, _) in zip(expand, children, strict=True):
                    node.below = len(refs)
                    node.more_capped = node.more_capped or capped
                break
            next_frontier: list[NodeView] = []
            for node, (refs, capped, problem) in zip(expand, children, strict=True):
                if problem:
                    node.note = f"browse: {problem}"
                node.more_capped = capped
                unique: dict[ua.NodeId, ua.ReferenceDescription] = {}
                for ref in refs:
                    unique.setdefault(_plain(ref.NodeId), ref)
                for nodeid, ref in unique.items():
                    if shown >= max_nodes:
                        node.more += 1
                        continue
                    child = self._view(nodeid, ref)
                    if nodeid in seen:
                        child.expand, child.note = False, "shown elsewhere in this tree"
                    elif nodeid in _NOT_EXPANDED:
                        child.expand, child.note = False, _NOT_EXPANDED[nodeid]
                    seen.add(nodeid)
                    node.children.append(child)
                    next_frontier.append(child)
                    shown += 1
            variables = [n for n in next_frontier if n.node_class == "Variable"]
            for batch in _chunks(variables, _READ_BATCH):
                await self._fill_variables(batch)
            frontier = next_frontier
        return shown

    @staticmethod
    def _view(nodeid: ua.NodeId, ref: ua.ReferenceDescription) -> NodeView:
        qname = ref.BrowseName
        node_class = ref.NodeClass.name if isinstance(ref.NodeClass, Enum) \
            else ua.NodeClass(ref.NodeClass).name
        if node_class == "Object" and ref.TypeDefinition is not None \
                and _plain(ref.TypeDefinition) == _ns0(ObjectIds.FolderType):
            node_class = "Folder"
        return NodeView(nodeid.to_string(), nodeid.NamespaceIndex, qname.NamespaceIndex,
                        qname.Name or "", node_class, nodeid=nodeid)

    async def path_of(self, nodeid: ua.NodeId, max_levels: int = 32
                      ) -> list[tuple[int, str]] | None:
        """A browse path from the Root folder that leads back to ``nodeid``, or None.

        Walks up the first inverse hierarchical reference of each node, then checks
        that the path resolves to the node again (a name may repeat under a parent).
        """
        elements: list[tuple[int, str]] = []
        current = nodeid
        root = _ns0(ObjectIds.RootFolder)
        for _ in range(max_levels):
            if current == root:
                break
            params = ua.BrowseParameters()
            desc = ua.BrowseDescription()
            desc.NodeId = current
            desc.BrowseDirection = ua.BrowseDirection.Inverse
            desc.ReferenceTypeId = _ns0(ObjectIds.HierarchicalReferences)
            desc.IncludeSubtypes = True
            desc.ResultMask = ua.BrowseResultMask.All
            params.NodesToBrowse.append(desc)
            (result,) = await self._call("browse", self.client.uaclient.browse(params))
            qname = await self._read([(current, AttributeIds.BrowseName)])
            value = qname[0].Value.Value if qname[0].Value is not None else None
            if not result.References or not isinstance(value, ua.QualifiedName):
                return None
            elements.append((value.NamespaceIndex, value.Name))
            current = _plain(result.References[0].NodeId)
        else:
            return None
        elements.reverse()
        try:
            back = await self.resolve_path(elements, "")
        except LookupError:
            return None
        return elements if back == nodeid else None
