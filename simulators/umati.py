"""A machine served as an OPC 40501-1 (umati) MachineTool, for ``profile = "opc40501"``.

Not the published nodeset (it needs DI, Machinery, IA, ISA-95 job control and Machinery
Jobs): a minimal subset of its types is built programmatically, with the browse names,
namespace URIs and state names of OPC 40501-1 1.02 and OPC 40001-1, enough for a client
that finds nodes by browse name below the MachineTool object::

    Objects/ma:Machines/sim:{machine_id}                      mt:MachineToolType
        di:Identification/di:Manufacturer, di:Model, di:SerialNumber
        mt:Monitoring/mt:MachineTool                          mt:MachineOperationMonitoringType
            mt:OperationMode                                  mt:MachineOperationMode (Int32)
            mt:PowerOnDuration                                UInt32 s
            ma:MachineryItemState/CurrentState (+ Id)         ma:MachineryItemState_StateMachineType
        mt:Production
            mt:ActiveProgram/mt:Name, NumberInList, mt:JobIdentifier, mt:JobNodeId
            mt:ActiveProgram/mt:State/CurrentState (+ Id)     mt:ProductionProgramStateMachineType
            mt:ProductionPlan/mt:{job}                        mt:ProductionJobType
                mt:Identifier, NumberInList, mt:RunsCompleted, mt:RunsPlanned,
                mt:PartsCompleted, mt:PartsGood, mt:State/CurrentState (+ Id)
            mt:Statistics/mt:PartsProducedInLifetime          UInt32
        mt:Notification/mt:Messages, mt:Equipment

(``mt`` http://opcfoundation.org/UA/MachineTool/, ``ma`` .../Machinery/, ``di``
.../DI/, ``sim`` the simulator's own namespace.) The ``Statistics`` counter is the
1.00/1.01 place, kept (deprecated) in 1.02; jobs hang below the plan by HasComponent
rather than HasOrderedComponent. The values follow what the simulator writes for the
machine: the state code gives ``MachineryItemState`` (off: NotAvailable, unplanned down:
OutOfService, producing: Executing, else NotExecuting), the program state code the
active program's and the job's state, the operation mode code ``OperationMode``. Each
setup (the program state Initializing) starts a new job in the plan (the active program
names it); the plan keeps the last two. A job counts the parts completed while it is
active, and the good ones among them.

Fault injection (hidden nodes, bad status) applies to the simulator's own nodes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.structures104 import new_enum
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from simulators.scenario import MachineSpec

__all__ = ["DI_URI", "MACHINERY_URI", "MACHINE_TOOL_URI", "UmatiMachines"]

MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
DI_URI = "http://opcfoundation.org/UA/DI/"
IA_URI = "http://opcfoundation.org/UA/IA/"

PROFILE = "opc40501"

_PROGRAM_STATES = ("Initializing", "Running", "Ended", "Interrupted", "Aborted")
_ITEM_STATES = ("NotAvailable", "OutOfService", "NotExecuting", "Executing")
_OPERATION_MODES = ("Manual", "Automatic", "Setup", "AutoWithManualIntervention", "Service",
                    "Other")
_PROGRAM_NAMES = {0: "Ended", 1: "Running", 2: "Interrupted", 3: "Initializing"}
"""The simulator's ``program_state`` codes as ProductionStateMachineType states."""
_ITEM_OF_STATE = {0: "NotAvailable", 4: "OutOfService", 2: "Executing"}
"""The simulator's state codes (``simulators.machine.STATE_CODES``) as MachineryItemState;
every other one is NotExecuting."""
_KEEP_JOBS = 2
_FSM = ua.NodeId(ua.Int32(ObjectIds.FiniteStateMachineType))
_BASE_OBJECT = ua.NodeId(ua.Int32(ObjectIds.BaseObjectType))


def _id(ident: str | int, ns: int) -> ua.NodeId:
    if isinstance(ident, int):
        return ua.NodeId(ua.Int32(ident), ua.Int16(ns))
    return ua.NodeId(ua.String(ident), ua.Int16(ns))


def _dt(ts_ms: int) -> ua.DateTime:
    return ua.DateTime.fromtimestamp(ts_ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class _Ref:
    """A NodeId value by what it names: a node of the machine (``node``, its path) or a
    state of a state machine type (``program``/``item``, the state's name)."""

    kind: str
    name: str


@dataclass(slots=True)
class _Job:
    number: int
    identifier: str
    state: str = "Initializing"
    completed: int = 0
    good: int = 0


@dataclass(slots=True)
class _Machine:
    spec: MachineSpec
    values: dict[str, tuple[Any, ua.VariantType, int]] = field(default_factory=dict)
    jobs: list[_Job] = field(default_factory=list)
    next_job: int = 1
    program: int | None = None
    parts_total: int | None = None
    scrap_ts: int | None = None


class UmatiMachines:
    """The MachineTool objects of every machine with ``profile = "opc40501"``.

    Values are kept here across server restarts; :meth:`build` adds the types and the
    objects to a fresh server and serves the kept values.
    """

    def __init__(self, machines: list[MachineSpec]) -> None:
        self._machines = {m.id: _Machine(m) for m in machines
                          if getattr(m, "profile", None) == PROFILE}
        self._server: Server | None = None
        self._live = False
        self._sim_ns = 0
        self._mt = self._ma = self._di = 0
        self._types: dict[str, ua.NodeId] = {}
        self._states: dict[tuple[str, str], ua.NodeId] = {}
        for m in self._machines.values():
            self._new_job(m)

    def detach(self) -> None:
        """The server stopped: keep the values for the next :meth:`build`."""
        self._server, self._live = None, False

    def __contains__(self, machine_id: str) -> bool:
        return machine_id in self._machines

    # ------------------------------------------------------------------ building
    async def build(self, server: Server, sim_ns: int) -> None:
        """Add the type subset and every profile machine's object to ``server``."""
        self._server, self._live, self._sim_ns = server, False, sim_ns
        if not self._machines:
            return
        self._mt = await server.register_namespace(MACHINE_TOOL_URI)
        self._ma = await server.register_namespace(MACHINERY_URI)
        self._di = await server.register_namespace(DI_URI)
        await server.register_namespace(IA_URI)
        await self._build_types(server)
        objects = server.nodes.objects
        machines = await objects.add_folder(_id(1001, self._ma),
                                            ua.QualifiedName("Machines", self._ma))
        for m in self._machines.values():
            await self._build_machine(machines, m)
        self._live = True
        for m in self._machines.values():
            for key, (value, vtype, ts) in list(m.values.items()):
                await self._put(m, key, value, vtype, ts)

    async def _build_types(self, server: Server) -> None:
        base = server.nodes.base_object_type
        mt, ma = self._mt, self._ma
        for name in ("MachineToolType", "MonitoringType", "MachineOperationMonitoringType",
                     "ProductionType", "ProductionActiveProgramType", "ProductionJobListType",
                     "ProductionJobType", "ProductionStatisticsType", "NotificationType",
                     "MessagesType", "EquipmentType"):
            node = await base.add_object_type(_id(f"type/{name}", mt),
                                              ua.QualifiedName(name, mt))
            self._types[name] = node.nodeid
        fsm = server.get_node(_FSM)
        production = await fsm.add_object_type(_id("type/ProductionStateMachineType", mt),
                                               ua.QualifiedName("ProductionStateMachineType", mt))
        await self._add_states(production, "program", _PROGRAM_STATES, mt)
        for name in ("ProductionProgramStateMachineType", "ProductionJobStateMachineType"):
            node = await production.add_object_type(_id(f"type/{name}", mt),
                                                    ua.QualifiedName(name, mt))
            self._types[name] = node.nodeid
        item = await fsm.add_object_type(_id(1002, ma),
                                         ua.QualifiedName("MachineryItemState_StateMachineType",
                                                          ma))
        self._types["MachineryItemState_StateMachineType"] = item.nodeid
        await self._add_states(item, "item", _ITEM_STATES, ma)
        mode = await new_enum(server, mt, "MachineOperationMode",
                              list(_OPERATION_MODES))
        self._types["MachineOperationMode"] = mode.nodeid

    async def _add_states(self, sm_type: Node, kind: str, names: tuple[str, ...],
                          ns: int) -> None:
        """The states of a state machine type (no modelling rule: instances refer to
        these nodes in ``CurrentState/Id``), each with its StateNumber."""
        for number, name in enumerate(names):
            otype = ObjectIds.InitialStateType if number == 0 and kind == "program" \
                else ObjectIds.StateType
            state = await sm_type.add_object(_id(f"{kind}/{name}", ns),
                                             ua.QualifiedName(name, ns), objecttype=otype,
                                             instantiate_optional=False)
            number_node = await state.get_child(ua.QualifiedName("StateNumber", 0))
            await number_node.write_value(ua.Variant(number, ua.VariantType.UInt32))
            self._states[(kind, name)] = state.nodeid

    def _nid(self, m: _Machine, path: str) -> ua.NodeId:
        return _id(f"umati/{m.spec.id}/{path}".rstrip("/"), self._sim_ns)

    async def _obj(self, parent: Node, m: _Machine, path: str, name: str, ns: int,
                   type_name: str | None = None) -> Node:
        otype = self._types[type_name] if type_name else _BASE_OBJECT
        return await parent.add_object(self._nid(m, path), ua.QualifiedName(name, ns),
                                       objecttype=otype, instantiate_optional=False)

    async def _var(self, parent: Node, m: _Machine, path: str, name: str, ns: int,
                   vtype: ua.VariantType, prop: bool = False,
                   datatype: ua.NodeId | None = None) -> None:
        nid, qn = self._nid(m, path), ua.QualifiedName(name, ns)
        value = ua.Variant(_default(vtype), vtype)
        if prop:
            await parent.add_property(nid, qn, value)
        else:
            await parent.add_variable(nid, qn, value, datatype=datatype)

    async def _build_machine(self, machines: Node, m: _Machine) -> None:
        mt, ma, di = self._mt, self._ma, self._di
        root = await machines.add_object(self._nid(m, ""), ua.QualifiedName(m.spec.id,
                                                                             self._sim_ns),
                                         objecttype=self._types["MachineToolType"])
        ident = await self._obj(root, m, "Identification", "Identification", di)
        for name in ("Manufacturer", "Model", "SerialNumber"):
            await self._var(ident, m, f"Identification/{name}", name, di,
                            ua.VariantType.String, prop=True)
        monitoring = await self._obj(root, m, "Monitoring", "Monitoring", mt, "MonitoringType")
        tool = await self._obj(monitoring, m, "Monitoring/MachineTool", "MachineTool", mt,
                               "MachineOperationMonitoringType")
        await self._var(tool, m, "Monitoring/MachineTool/OperationMode", "OperationMode", mt,
                        ua.VariantType.Int32, datatype=self._types["MachineOperationMode"])
        await self._var(tool, m, "Monitoring/MachineTool/PowerOnDuration", "PowerOnDuration",
                        mt, ua.VariantType.UInt32)
        await self._obj(tool, m, "Monitoring/MachineTool/MachineryItemState",
                        "MachineryItemState", ma, "MachineryItemState_StateMachineType")
        production = await self._obj(root, m, "Production", "Production", mt, "ProductionType")
        active = await self._obj(production, m, "Production/ActiveProgram", "ActiveProgram", mt,
                                 "ProductionActiveProgramType")
        await self._var(active, m, "Production/ActiveProgram/Name", "Name", mt,
                        ua.VariantType.String, prop=True)
        await self._var(active, m, "Production/ActiveProgram/NumberInList", "NumberInList", 0,
                        ua.VariantType.UInt16, prop=True)
        await self._var(active, m, "Production/ActiveProgram/JobIdentifier", "JobIdentifier", mt,
                        ua.VariantType.String)
        await self._var(active, m, "Production/ActiveProgram/JobNodeId", "JobNodeId", mt,
                        ua.VariantType.NodeId)
        await self._obj(active, m, "Production/ActiveProgram/State", "State", mt,
                        "ProductionProgramStateMachineType")
        await self._obj(production, m, "Production/ProductionPlan", "ProductionPlan", mt,
                        "ProductionJobListType")
        for job in m.jobs:
            await self._build_job(m, job)
        stats = await self._obj(production, m, "Production/Statistics", "Statistics", mt,
                                "ProductionStatisticsType")
        await self._var(stats, m, "Production/Statistics/PartsProducedInLifetime",
                        "PartsProducedInLifetime", mt, ua.VariantType.UInt32)
        notification = await self._obj(root, m, "Notification", "Notification", mt,
                                       "NotificationType")
        await self._obj(notification, m, "Notification/Messages", "Messages", mt,
                        "MessagesType")
        await self._obj(root, m, "Equipment", "Equipment", mt, "EquipmentType")

    async def _build_job(self, m: _Machine, job: _Job) -> None:
        assert self._server is not None
        plan = self._server.get_node(self._nid(m, "Production/ProductionPlan"))
        mt = self._mt
        path = self._job_path(job)
        obj = await self._obj(plan, m, path, f"Job{job.number}", mt, "ProductionJobType")
        await self._var(obj, m, f"{path}/Identifier", "Identifier", mt, ua.VariantType.String,
                        prop=True)
        await self._var(obj, m, f"{path}/NumberInList", "NumberInList", 0,
                        ua.VariantType.UInt16, prop=True)
        for name in ("RunsCompleted", "RunsPlanned", "PartsCompleted", "PartsGood"):
            await self._var(obj, m, f"{path}/{name}", name, mt, ua.VariantType.UInt32)
        await self._obj(obj, m, f"{path}/State", "State", mt, "ProductionJobStateMachineType")

    @staticmethod
    def _job_path(job: _Job) -> str:
        return f"Production/ProductionPlan/Job{job.number}"

    # ------------------------------------------------------------------ values
    async def write(self, machine_id: str, key: str, value: Any, ts_ms: int) -> None:
        """Mirror one of the simulator's writes (its ``simulators.nodes`` key) for a
        profile machine; other machines and keys are ignored."""
        m = self._machines.get(machine_id)
        if m is None:
            return
        if key in ("manufacturer", "model", "serial_number"):
            name = {"manufacturer": "Manufacturer", "model": "Model",
                    "serial_number": "SerialNumber"}[key]
            await self._set(m, f"Identification/{name}", value, ua.VariantType.String, ts_ms)
        elif key == "operation_mode":
            await self._set(m, "Monitoring/MachineTool/OperationMode", int(value),
                            ua.VariantType.Int32, ts_ms)
        elif key == "power_on_s":
            await self._set(m, "Monitoring/MachineTool/PowerOnDuration", int(value),
                            ua.VariantType.UInt32, ts_ms)
        elif key == "state":
            await self._state(m, "Monitoring/MachineTool/MachineryItemState", "item",
                              _ITEM_OF_STATE.get(int(value), "NotExecuting"), ts_ms)
        elif key == "program_name":
            await self._set(m, "Production/ActiveProgram/Name", str(value),
                            ua.VariantType.String, ts_ms)
        elif key == "program_state":
            await self._program(m, _PROGRAM_NAMES.get(int(value), "Ended"), ts_ms)
        elif key == "parts_scrap":
            m.scrap_ts = ts_ms
        elif key == "parts_total":
            await self._parts(m, int(value), ts_ms)

    async def _program(self, m: _Machine, name: str, ts_ms: int) -> None:
        if name == "Initializing" and m.program != 3 and m.parts_total is not None:
            await self._start_job(m, ts_ms)
        m.program = 3 if name == "Initializing" else 0
        await self._state(m, "Production/ActiveProgram/State", "program", name, ts_ms)
        job = m.jobs[-1]
        job.state = name
        await self._state(m, f"{self._job_path(job)}/State", "program", name, ts_ms)

    async def _start_job(self, m: _Machine, ts_ms: int) -> None:
        old = m.jobs[-1]
        old.state = "Ended"
        await self._state(m, f"{self._job_path(old)}/State", "program", "Ended", ts_ms)
        job = self._new_job(m)
        if self._live:
            await self._build_job(m, job)
        await self._job_values(m, job, ts_ms)
        while len(m.jobs) > _KEEP_JOBS:
            gone = m.jobs.pop(0)
            prefix = self._job_path(gone)
            for key in [k for k in m.values if k.startswith(prefix)]:
                del m.values[key]
            if self._live and self._server is not None:
                node = self._server.get_node(self._nid(m, prefix))
                await self._server.delete_nodes([node], recursive=True)

    def _new_job(self, m: _Machine) -> _Job:
        job = _Job(m.next_job, f"{m.spec.id}-J{m.next_job:05d}")
        m.next_job += 1
        m.jobs.append(job)
        return job

    async def _job_values(self, m: _Machine, job: _Job, ts_ms: int) -> None:
        path = self._job_path(job)
        await self._set(m, f"{path}/Identifier", job.identifier, ua.VariantType.String, ts_ms)
        await self._set(m, f"{path}/NumberInList", len(m.jobs) - 1, ua.VariantType.UInt16, ts_ms)
        await self._set(m, f"{path}/RunsPlanned", 1, ua.VariantType.UInt32, ts_ms)
        await self._set(m, f"{path}/RunsCompleted", 0, ua.VariantType.UInt32, ts_ms)
        await self._counts(m, job, ts_ms)
        await self._state(m, f"{path}/State", "program", job.state, ts_ms)
        await self._set(m, "Production/ActiveProgram/JobIdentifier", job.identifier,
                        ua.VariantType.String, ts_ms)
        await self._set(m, "Production/ActiveProgram/JobNodeId", _Ref("node", path),
                        ua.VariantType.NodeId, ts_ms)

    async def _counts(self, m: _Machine, job: _Job, ts_ms: int) -> None:
        path = self._job_path(job)
        await self._set(m, f"{path}/PartsCompleted", job.completed, ua.VariantType.UInt32, ts_ms)
        await self._set(m, f"{path}/PartsGood", job.good, ua.VariantType.UInt32, ts_ms)

    async def _parts(self, m: _Machine, total: int, ts_ms: int) -> None:
        before, m.parts_total = m.parts_total, total
        await self._set(m, "Production/Statistics/PartsProducedInLifetime", total,
                        ua.VariantType.UInt32, ts_ms)
        if before is None:  # the first value: the job in progress at the start
            await self._job_values(m, m.jobs[-1], ts_ms)
            return
        if total != (before + 1) % m.spec.counter_modulus:
            return  # a counter reset, not a part
        job = m.jobs[-1]
        job.completed += 1
        if m.scrap_ts != ts_ms:
            job.good += 1
        await self._counts(m, job, ts_ms)

    async def _state(self, m: _Machine, path: str, kind: str, name: str, ts_ms: int) -> None:
        await self._set(m, f"{path}/CurrentState", ua.LocalizedText(name, "en"),
                        ua.VariantType.LocalizedText, ts_ms)
        await self._set(m, f"{path}/CurrentState/Id", _Ref(kind, name), ua.VariantType.NodeId,
                        ts_ms)

    async def _set(self, m: _Machine, path: str, value: Any, vtype: ua.VariantType,
                   ts_ms: int) -> None:
        m.values[path] = (value, vtype, ts_ms)
        await self._put(m, path, value, vtype, ts_ms)

    async def _put(self, m: _Machine, path: str, value: Any, vtype: ua.VariantType,
                   ts_ms: int) -> None:
        if not self._live or self._server is None:
            return
        if isinstance(value, _Ref):  # NodeIds are known once the server numbered them
            value = self._nid(m, value.name) if value.kind == "node" else \
                self._states[(value.kind, value.name)]
        dv = ua.DataValue(Value=ua.Variant(value, vtype), SourceTimestamp=_dt(ts_ms),
                          ServerTimestamp=_dt(ts_ms))
        await self._server.write_attribute_value(self._node(m, path), dv)

    def _node(self, m: _Machine, path: str) -> ua.NodeId:
        # asyncua names an instantiated child "<parent id>.<browse name>"
        for tail, suffix in (("/CurrentState", ".CurrentState"),
                             ("/CurrentState/Id", ".CurrentState.Id")):
            if path.endswith(tail):
                return _id(f"umati/{m.spec.id}/{path[:-len(tail)]}{suffix}", self._sim_ns)
        return self._nid(m, path)


def _default(vtype: ua.VariantType) -> Any:
    if vtype == ua.VariantType.String:
        return ""
    if vtype == ua.VariantType.NodeId:
        return ua.NodeId()
    return 0
