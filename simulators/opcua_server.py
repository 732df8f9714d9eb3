"""The simulated CNC machines as an OPC UA server (asyncua).

Address space (all browse names in namespace ``urn:factory-edge:simulator:cnc``),
under ``Objects``::

    Machines/{machine_id}/
        Identification/Manufacturer, Model, SerialNumber            String
        Monitoring/MachineTool/MachineState                          Int32 (STATE_CODES)
        Monitoring/MachineTool/OperationMode                         Int32 (OPC 40001-1)
        Monitoring/MachineTool/PowerOnDuration                       UInt32 s
        Monitoring/Spindle/Speed                                     Double rpm
        Monitoring/Spindle/Load                                      Double %
        Production/ActiveProgram/Name                                String
        Production/ActiveProgram/State                               Int32
        Production/PartsProducedInLifetime                           UInt32 (good + scrap)
        Production/PartsScrapInLifetime                              UInt32

Each variable's NodeId is a string id equal to its path, e.g.
``ns=2;s=Machines/cnc-01/Production/PartsProducedInLifetime`` (the index of the
namespace is whatever the server assigns; resolve it by URI). Every value is written
as a DataValue whose SourceTimestamp is the simulator's instant of the change and whose
ServerTimestamp is the simulator's clock at the write (both include any clock skew,
as on a controller whose clock is wrong).

A "restart" builds a brand-new server on the same port (sessions are lost, like a real
controller reboot); values written while it was down are served when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from simulators.scenario import MachineSpec

__all__ = ["NAMESPACE_URI", "VARIABLES", "OpcUaMachineServer", "Variable"]

NAMESPACE_URI = "urn:factory-edge:simulator:cnc"
"""Namespace of every browse name the simulator defines (fixed contract)."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable of a machine: its key in the simulator, path under the machine, type."""

    key: str
    path: tuple[str, ...]
    vtype: ua.VariantType


VARIABLES: tuple[Variable, ...] = (
    Variable("manufacturer", ("Identification", "Manufacturer"), ua.VariantType.String),
    Variable("model", ("Identification", "Model"), ua.VariantType.String),
    Variable("serial_number", ("Identification", "SerialNumber"), ua.VariantType.String),
    Variable("state", ("Monitoring", "MachineTool", "MachineState"), ua.VariantType.Int32),
    Variable("operation_mode", ("Monitoring", "MachineTool", "OperationMode"),
             ua.VariantType.Int32),
    Variable("power_on_s", ("Monitoring", "MachineTool", "PowerOnDuration"),
             ua.VariantType.UInt32),
    Variable("spindle_speed", ("Monitoring", "Spindle", "Speed"), ua.VariantType.Double),
    Variable("spindle_load", ("Monitoring", "Spindle", "Load"), ua.VariantType.Double),
    Variable("program_name", ("Production", "ActiveProgram", "Name"), ua.VariantType.String),
    Variable("program_state", ("Production", "ActiveProgram", "State"), ua.VariantType.Int32),
    Variable("parts_total", ("Production", "PartsProducedInLifetime"), ua.VariantType.UInt32),
    Variable("parts_scrap", ("Production", "PartsScrapInLifetime"), ua.VariantType.UInt32),
)
"""Every variable of a machine, in creation order."""

_BY_KEY: dict[str, Variable] = {v.key: v for v in VARIABLES}


def _dt(ts_ms: int) -> ua.DateTime:
    return ua.DateTime.fromtimestamp(ts_ms / 1000, tz=UTC)


def _nid(path: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(path), ua.Int16(ns))


class OpcUaMachineServer:
    """One asyncua server exposing all machines; values are cached across restarts.

    Writes go through :meth:`write`; while the server is stopped or a machine is held
    at a bad status, the value is only cached and is served when that ends.
    """

    def __init__(
        self,
        machines: list[MachineSpec],
        host: str,
        port: int,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self._machines = machines
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.host = host
        self.port = port
        self._server: Server | None = None
        self._ns = 0
        self._cache: dict[tuple[str, str], ua.DataValue] = {}
        self._bad: dict[str, ua.StatusCode] = {}
        self._node_ids: dict[tuple[str, str], ua.NodeId] = {}

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
        await self._build(server)
        await server.start()
        self._server = server
        for (machine_id, key), value in self._cache.items():
            await self._put(machine_id, key, value)
        for machine_id, code in self._bad.items():
            await self._put_bad(machine_id, code, None)

    async def stop(self) -> None:
        """Stop listening and drop every session (values stay cached)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def write(self, machine_id: str, key: str, value: Any, ts_ms: int) -> None:
        """Set one variable with SourceTimestamp ``ts_ms`` (cached if it cannot be served)."""
        var = _BY_KEY[key]
        dv = ua.DataValue(
            Value=ua.Variant(value, var.vtype),
            SourceTimestamp=_dt(ts_ms),
            ServerTimestamp=_dt(self._now_ms()),
        )
        self._cache[(machine_id, key)] = dv
        if self._server is not None and machine_id not in self._bad:
            await self._put(machine_id, key, dv)

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
                fresh = ua.DataValue(Value=cached.Value, SourceTimestamp=_dt(ts_ms),
                                     ServerTimestamp=_dt(self._now_ms()))
                self._cache[(machine_id, var.key)] = fresh
                if self._server is not None:
                    await self._put(machine_id, var.key, fresh)
            return
        code = ua.StatusCode(getattr(StatusCodes, status))
        if not code.is_bad():
            raise ValueError(f"{status} is not a bad status code")
        self._bad[machine_id] = code
        await self._put_bad(machine_id, code, ts_ms)

    async def _put_bad(self, machine_id: str, code: ua.StatusCode, ts_ms: int | None) -> None:
        if self._server is None:
            return
        for var in VARIABLES:
            bad = ua.DataValue(Value=ua.Variant(None, ua.VariantType.Null), StatusCode=code,
                               SourceTimestamp=None if ts_ms is None else _dt(ts_ms),
                               ServerTimestamp=_dt(self._now_ms()))
            await self._server.write_attribute_value(self._node_ids[(machine_id, var.key)], bad)

    async def _put(self, machine_id: str, key: str, dv: ua.DataValue) -> None:
        server = self._server
        if server is None:
            return
        if machine_id in self._bad:
            return
        await server.write_attribute_value(self._node_ids[(machine_id, key)], dv)

    async def _build(self, server: Server) -> None:
        ns = self._ns
        objects = server.nodes.objects
        root = await objects.add_folder(_nid("Machines", ns), ua.QualifiedName("Machines", ns))
        for spec in self._machines:
            base = f"Machines/{spec.id}"
            machine = await root.add_object(_nid(base, ns), ua.QualifiedName(spec.id, ns))
            folders: dict[tuple[str, ...], Any] = {(): machine}
            for var in VARIABLES:
                parent = machine
                for depth in range(1, len(var.path)):
                    prefix = var.path[:depth]
                    if prefix not in folders:
                        path = "/".join(prefix)
                        folders[prefix] = await folders[prefix[:-1]].add_folder(
                            _nid(f"{base}/{path}", ns), ua.QualifiedName(prefix[-1], ns)
                        )
                    parent = folders[prefix]
                node_id = _nid(f"{base}/{'/'.join(var.path)}", ns)
                await parent.add_variable(
                    node_id,
                    ua.QualifiedName(var.path[-1], ns),
                    ua.Variant(_default(var.vtype), var.vtype),
                )
                self._node_ids[(spec.id, var.key)] = node_id


def _default(vtype: ua.VariantType) -> Any:
    if vtype == ua.VariantType.String:
        return ""
    if vtype == ua.VariantType.Double:
        return 0.0
    return 0
