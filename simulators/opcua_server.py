"""The simulated CNC machines as an OPC UA server (asyncua).

Address space (all browse names in namespace ``urn:factory-edge:simulator:cnc``),
under ``Objects``::

    Machines/{machine_id}/
        Identification/Manufacturer, Model, SerialNumber            String
        Monitoring/MachineTool/MachineState                          Int32 (STATE_CODES)
        Monitoring/MachineTool/OperationMode                         Int32 (OPC 40001-1)
        Monitoring/MachineTool/PowerOnDuration                       UInt32 s
        Monitoring/Spindle/IsRotating                                Boolean
        Monitoring/Spindle/Speed                                     Double rpm
        Monitoring/Spindle/Load                                      Double %
        Production/ActiveProgram/Name                                String
        Production/ActiveProgram/State                               Int32
        Production/ActiveProgram/State/CurrentState                  LocalizedText
        Production/PartsProducedInLifetime                           UInt32 (good + scrap)
        Production/PartsScrapInLifetime                              UInt32
        Production/Statistics/PartsProducedInLifetime                UInt32 (same value)

Relation to OPC 40501-1 (Machine Tools), whose browse names are used where it defines
them: ``Identification`` (Manufacturer, Model, SerialNumber; served as String, the
companion spec has LocalizedText for the first two), ``Monitoring/MachineTool``
(``OperationMode`` with the ``MachineOperationMode`` enumeration values,
``PowerOnDuration``), ``Monitoring/<spindle>/IsRotating`` (SpindleMonitoringType),
``Production/ActiveProgram`` (``Name``; ``State/CurrentState`` carries the
ProductionStateMachineType state name: Initializing, Running, Ended, Interrupted) and
``Production/Statistics/PartsProducedInLifetime`` (ProductionStatisticsType). Not from
the companion spec, and fixed for the agent: ``MachineState`` (codes in
:data:`simulators.machine.STATE_CODES`), the Int32 ``ActiveProgram/State`` code,
``Production/PartsProducedInLifetime``, ``Production/PartsScrapInLifetime``, and the
spindle's ``Speed`` and ``Load``. All browse names are in the simulator's namespace,
not in the companion specs' namespaces, and no ObjectTypes are instantiated.

Each variable's NodeId is a string id equal to its path, e.g.
``ns=2;s=Machines/cnc-01/Production/PartsProducedInLifetime`` (the index of the
namespace is whatever the server assigns; resolve it by URI). Every value is written
as a DataValue whose SourceTimestamp is the simulator's instant of the change and whose
ServerTimestamp is the simulator's clock at the write (both include any clock skew,
as on a controller whose clock is wrong).

A "restart" builds a brand-new server on the same port (sessions are lost, like a real
controller reboot); values written while it was down are served when it is back. A
client that kept its old session sees its connection closed and must open a new one;
a session cannot survive a restart (asyncua ties sessions to their connection).

A machine with ``profile = "opc40501"`` in the scenario is also served as an OPC 40501-1
(umati) MachineTool object under ``Objects/Machines`` (Machinery namespace), with a
subset of the companion spec's types built programmatically; see :mod:`simulators.umati`.

A node can be made to disappear (fault injection): a single variable, or a machine's
whole subtree, is deleted from the address space; reads of it then fail with
``BadNodeIdUnknown`` and browsing no longer finds it. Restoring adds it back with the
same NodeIds and the current values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from simulators.machine import PROGRAM_STATE_NAMES
from simulators.nodes import BY_KEY, NAMESPACE_URI, VARIABLES, Variable, variable_by_path
from simulators.scenario import MachineSpec
from simulators.umati import UmatiMachines

__all__ = ["NAMESPACE_URI", "VARIABLES", "OpcUaMachineServer", "Variable", "variable_by_path"]

_log = logging.getLogger(__name__)


_VTYPE: dict[str, ua.VariantType] = {v.key: ua.VariantType[v.type_name] for v in VARIABLES}
"""Each variable's OPC UA type, by key."""

_DERIVED: dict[str, tuple[tuple[str, Callable[[Any], Any]], ...]] = {
    "spindle_speed": (("spindle_rotating", lambda rpm: bool(rpm > 0)),),
    "program_state": (("program_state_name",
                       lambda code: ua.LocalizedText(PROGRAM_STATE_NAMES.get(code, "Ended"),
                                                     "en")),),
    "parts_total": (("statistics_parts_total", lambda n: n),),
}
"""Variables written together with another one, from its value."""


class _SharedDataValue(ua.DataValue):
    """A DataValue nobody changes after it is built, so copying it is returning it.

    asyncua deep-copies the written DataValue for every monitored item that watches the
    node (so that a writer mutating its object later cannot change what was reported);
    that copy cost about three times the rest of a write. The simulator builds a new
    DataValue for every change and never mutates one, so the copy can be the object.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedDataValue:
        return self


def _dt(ts_ms: int) -> ua.DateTime:
    return ua.DateTime.fromtimestamp(ts_ms / 1000, tz=UTC)


def _nid(path: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(path), ua.Int16(ns))


class OpcUaMachineServer:
    """One asyncua server exposing all machines; values are cached across restarts.

    Writes go through :meth:`write`; while the server is stopped, a machine is held at a
    bad status or a node is hidden, the value is only cached and is served when that ends.
    """

    def __init__(
        self,
        machines: list[MachineSpec],
        host: str,
        port: int,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self._machines = machines
        self._specs = {m.id: m for m in machines}
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.host = host
        self.port = port
        self._server: Server | None = None
        self._ns = 0
        self._cache: dict[tuple[str, str], ua.DataValue] = {}
        self._bad: dict[str, ua.StatusCode] = {}
        self._node_ids: dict[tuple[str, str], ua.NodeId] = {}
        self._hidden: dict[str, set[tuple[str, ...]]] = {}
        self._present: set[tuple[str, tuple[str, ...]]] = set()
        self._umati = UmatiMachines(machines)

    @property
    def endpoint(self) -> str:
        """``opc.tcp://host:port`` clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    @property
    def namespace_index(self) -> int:
        """Index of :data:`NAMESPACE_URI` in the running server's namespace array."""
        return self._ns

    def node_id(self, machine_id: str, key: str) -> ua.NodeId:
        """The NodeId of one machine variable (valid while the server runs)."""
        return self._node_ids[(machine_id, key)]

    async def start(self) -> None:
        """Build the address space, serve the cached values, and listen."""
        if self._server is not None:
            return
        asyncua_logger = logging.getLogger("asyncua")
        if asyncua_logger.level == logging.NOTSET:
            asyncua_logger.setLevel(logging.WARNING)
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/")
        server.set_server_name("factory-edge CNC simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        # Anonymous only: user names or certificates without a secure channel are moot.
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        self._ns = await server.register_namespace(NAMESPACE_URI)
        self._present.clear()
        root = await server.nodes.objects.add_folder(_nid("Machines", self._ns),
                                                     ua.QualifiedName("Machines", self._ns))
        for spec in self._machines:
            await self._build_machine(server, root, spec)
        # asyncua logs a traceback when it cannot listen and then raises; the caller
        # reports the raised error, once.
        start_logger = logging.getLogger("asyncua.server.server")
        level = start_logger.level
        start_logger.setLevel(logging.CRITICAL)
        try:
            await server.start()
        finally:
            start_logger.setLevel(level)
        self._server = server
        await self._umati.build(server, self._ns)
        for (machine_id, key), value in self._cache.items():
            await self._put(machine_id, key, value)
        for machine_id, code in self._bad.items():
            await self._put_bad(machine_id, code, None)

    async def stop(self) -> None:
        """Stop listening and drop every session (values stay cached)."""
        server, self._server = self._server, None
        self._umati.detach()
        if server is not None:
            await server.stop()

    async def write(self, machine_id: str, key: str, value: Any, ts_ms: int) -> None:
        """Set one variable with SourceTimestamp ``ts_ms`` (cached if it cannot be served).

        Variables derived from this one (e.g. ``Spindle/IsRotating`` from the speed) are
        written with the same timestamps.
        """
        await self.write_many(machine_id, ((key, value),), ts_ms)

    async def write_many(self, machine_id: str, values: Sequence[tuple[str, Any]],
                         ts_ms: int, *, derived: bool = True) -> None:
        """:meth:`write` of several variables of one machine at one instant, in order.

        The timestamps are built once for all of them: at a few thousand changes a
        second, per-variable overhead is what decides whether the plant keeps its
        schedule. ``derived=False`` skips the derived variables, for a caller that
        knows they keep their values (a cutting spindle stays rotating).
        """
        source_ts = _dt(ts_ms)
        server_ts = _dt(self._now_ms())
        cache = self._cache
        umati = machine_id in self._umati
        for key, value in values:
            dv = _SharedDataValue(Value=ua.Variant(value, _VTYPE[key]),
                                  SourceTimestamp=source_ts, ServerTimestamp=server_ts)
            cache[(machine_id, key)] = dv
            await self._put(machine_id, key, dv)
            if umati:
                await self._umati.write(machine_id, key, value, ts_ms)
            for derived_key, derive in _DERIVED.get(key, ()) if derived else ():
                ddv = _SharedDataValue(Value=ua.Variant(derive(value), _VTYPE[derived_key]),
                                       SourceTimestamp=source_ts, ServerTimestamp=server_ts)
                cache[(machine_id, derived_key)] = ddv
                await self._put(machine_id, derived_key, ddv)

    async def set_status(self, machine_id: str, status: str | None, ts_ms: int) -> None:
        """Serve every variable of a machine with a bad status (``None`` restores values).

        ``status`` is a StatusCodes name such as ``BadCommunicationError``. Restored
        values carry ``ts_ms`` as their SourceTimestamp, like a device whose link is back.
        """
        if status is None:
            self._bad.pop(machine_id, None)
            for var in VARIABLES:
                cached = self._cache.get((machine_id, var.key))
                if cached is None:
                    continue
                fresh = _SharedDataValue(Value=cached.Value, SourceTimestamp=_dt(ts_ms),
                                         ServerTimestamp=_dt(self._now_ms()))
                self._cache[(machine_id, var.key)] = fresh
                await self._put(machine_id, var.key, fresh)
            return
        code = ua.StatusCode(getattr(StatusCodes, status))
        if not code.is_bad():
            raise ValueError(f"{status} is not a bad status code")
        self._bad[machine_id] = code
        await self._put_bad(machine_id, code, ts_ms)

    async def hide(self, machine_id: str, path: str | None = None) -> None:
        """Fault: delete one variable (``path`` under the machine, e.g.
        ``Production/PartsProducedInLifetime``) or, with ``path`` None, the machine's
        whole subtree from the address space. Writes keep being cached."""
        prefix: tuple[str, ...] = () if path is None else variable_by_path(path).path
        self._hidden.setdefault(machine_id, set()).add(prefix)
        server = self._server
        if server is None or (machine_id, prefix) not in self._present:
            return
        nid = _nid(self._path_id(machine_id, prefix), self._ns)
        await server.delete_nodes([server.get_node(nid)], recursive=True)
        self._present = {(m, p) for m, p in self._present
                         if m != machine_id or p[:len(prefix)] != prefix}

    async def restore(self, machine_id: str, path: str | None = None) -> None:
        """End of :meth:`hide`: the node is back with its NodeId and current value."""
        prefix: tuple[str, ...] = () if path is None else variable_by_path(path).path
        hidden = self._hidden.get(machine_id, set())
        hidden.discard(prefix)
        if not hidden:
            self._hidden.pop(machine_id, None)
        server = self._server
        if server is None:
            return
        root = server.get_node(_nid("Machines", self._ns))
        await self._build_machine(server, root, self._specs[machine_id])
        for var in VARIABLES:
            cached = self._cache.get((machine_id, var.key))
            if cached is not None:
                await self._put(machine_id, var.key, cached)
        if machine_id in self._bad:
            await self._put_bad(machine_id, self._bad[machine_id], None)

    def _is_hidden(self, machine_id: str, path: tuple[str, ...]) -> bool:
        return any(path[:len(p)] == p for p in self._hidden.get(machine_id, ()))

    def _served(self, machine_id: str, key: str) -> bool:
        return (machine_id, BY_KEY[key].path) in self._present

    async def _put_bad(self, machine_id: str, code: ua.StatusCode, ts_ms: int | None) -> None:
        if self._server is None:
            return
        for var in VARIABLES:
            if not self._served(machine_id, var.key):
                continue
            bad = _SharedDataValue(Value=ua.Variant(None, ua.VariantType.Null), StatusCode=code,
                               SourceTimestamp=None if ts_ms is None else _dt(ts_ms),
                               ServerTimestamp=_dt(self._now_ms()))
            await self._server.write_attribute_value(self._node_ids[(machine_id, var.key)], bad)

    async def _put(self, machine_id: str, key: str, dv: ua.DataValue) -> None:
        server = self._server
        if server is None or machine_id in self._bad or not self._served(machine_id, key):
            return
        await server.write_attribute_value(self._node_ids[(machine_id, key)], dv)

    @staticmethod
    def _path_id(machine_id: str, path: tuple[str, ...]) -> str:
        return "/".join(("Machines", machine_id, *path))

    async def _build_machine(self, server: Server, root: Any, spec: MachineSpec) -> None:
        """Add whatever of one machine's subtree is neither present nor hidden."""
        ns = self._ns
        if self._is_hidden(spec.id, ()):
            return
        nodes: dict[tuple[str, ...], Any] = {}
        if (spec.id, ()) not in self._present:
            nodes[()] = await root.add_object(_nid(self._path_id(spec.id, ()), ns),
                                              ua.QualifiedName(spec.id, ns))
            self._present.add((spec.id, ()))
        else:
            nodes[()] = server.get_node(_nid(self._path_id(spec.id, ()), ns))
        variable_paths = {v.path for v in VARIABLES}
        for var in VARIABLES:
            if self._is_hidden(spec.id, var.path):
                continue
            for depth in range(1, len(var.path) + 1):
                prefix = var.path[:depth]
                if prefix in nodes:
                    continue
                nid = _nid(self._path_id(spec.id, prefix), ns)
                if (spec.id, prefix) in self._present:
                    nodes[prefix] = server.get_node(nid)
                    continue
                parent = nodes[prefix[:-1]]
                qname = ua.QualifiedName(prefix[-1], ns)
                if prefix == var.path:
                    nodes[prefix] = await parent.add_variable(
                        nid, qname, ua.Variant(_default(_VTYPE[var.key]), _VTYPE[var.key]))
                elif prefix in variable_paths:
                    break  # a parent variable that is hidden: its children go with it
                else:
                    nodes[prefix] = await parent.add_folder(nid, qname)
                self._present.add((spec.id, prefix))
            self._node_ids[(spec.id, var.key)] = _nid(self._path_id(spec.id, var.path), ns)


def _default(vtype: ua.VariantType) -> Any:
    if vtype == ua.VariantType.String:
        return ""
    if vtype == ua.VariantType.Double:
        return 0.0
    if vtype == ua.VariantType.Boolean:
        return False
    if vtype == ua.VariantType.LocalizedText:
        return ua.LocalizedText("")
    return 0
