"""OPC UA sources: ``type = "opcua"`` in ``[[sources]]``, read by collectors/opcua.py.

Everything the agent knows about OPC UA as a source type: the source and signal keys,
their checks, the collector spec built from them, and what a reload compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, field_validator, model_validator

from agent.config.common import Id, StrictModel, check_id, resolve_secret
from agent.config.load import label
from agent.sources.base import Problems, located, problems_of, scaling, signal_uses

if TYPE_CHECKING:
    from agent.config.model import AgentConfig, MachineSection, SignalSection
    from collectors.opcua import Deadband, OpcUaCollector, OpcUaSourceSpec, OpcUaTag
    from collectors.opcua.spec import ProfileSpec

PROFILE_ROLES: dict[str, frozenset[str]] = {"opc40501": frozenset({"state", "parts_total",
                                                                   "parts_good"})}
"""The machine profiles (companion specifications) and the roles each provides; the
collector's table (``collectors.opcua.spec.PROFILES``) is the same, imported lazily."""


class OpcUaSourceSection(StrictModel):
    """An OPC UA server. Namespaces are given by URI and resolved at connect time.

    ``deadband`` is the default for every unmapped signal of the source (a signal's own
    ``deadband`` wins; 0 turns it off for that signal). Security: ``security_policy`` and
    ``security_mode`` (``Sign`` or ``SignAndEncrypt``); the client certificate is
    ``certificate``/``private_key`` or is created in ``pki_dir`` (default
    ``<agent.state_dir>/pki/<source id>``); servers are trusted by ``trust_dir``
    (default ``pki_dir/trusted``) and/or pinned ``server_thumbprints`` (SHA-1 or SHA-256).
    ``max_clock_skew_s`` (0: off) flags source timestamps that far from the receive time;
    ``clock_skew_action`` keeps them (``flag``) or uses the receive time (``receive``).
    ``watchdog_s`` is the interval of the liveness probe and the keep-alive period asked
    of the server: a subscription that sends neither a change nor a keep-alive for twice
    the granted period plus ``timeout_s`` is connected but silent, and is reconnected.
    """

    id: Id
    """The source's id, as signals name it in ``source``."""
    type: Literal["opcua"]
    """``opcua``: an OPC UA server, read through subscriptions."""
    url: str = Field(pattern=r"^opc\.tcp://")
    """The server's endpoint, ``opc.tcp://host:4840``; ``edge-agent browse URL`` lists what
    it offers."""
    namespaces: dict[str, str] = Field(default_factory=dict)
    """Aliases of namespace URIs for browse paths and node ids (``{ cnc = "urn:vendor:cnc"
    }``); namespaces are resolved by URI at every connect, since indexes can change when the
    server restarts."""
    publishing_interval_ms: int = Field(500, ge=10, le=600_000)
    """How often the server sends the changes it collected, in ms; shorter gives fresher
    samples at more traffic."""
    sampling_interval_ms: int = Field(0, ge=0, le=600_000)
    """How often the server samples each node, in ms; 0 asks for the fastest (event-driven
    on most servers)."""
    queue_size: int = Field(100, ge=1, le=100_000)
    """Values the server keeps per node between publishes, so changes faster than the
    publishing interval are not lost."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    """Seconds a request (connect, read, subscribe) may take; must be shorter than
    ``watchdog_s``."""
    session_timeout_s: float = Field(60.0, gt=0)
    """Session lifetime asked of the server, in seconds: how long it keeps the session (and
    its subscription) for a client that went quiet. Some servers shorten it."""
    watchdog_s: float = Field(10.0, gt=0)
    """Interval of the liveness probe and the keep-alive asked of the server, in seconds: a
    connection silent for about twice this is reconnected. Keep it at several seconds, a
    busy server can be slow to answer a probe."""
    username: str | None = None
    """User name for servers that want one; the password comes from ``password_env``."""
    password_env: str | None = None
    """Name of the environment variable holding the password (never the password itself,
    which stays out of the file)."""
    deadband: float | None = Field(None, ge=0)
    """Default deadband of the source's unmapped signals, in each node's unit (or percent
    with ``deadband_type``): changes smaller than it are not sent, saving traffic on noisy
    values."""
    deadband_type: Literal["absolute", "percent"] = "absolute"
    """``absolute`` or ``percent`` (of each node's EURange) for ``deadband``."""
    security_policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                             "Aes256_Sha256_RsaPss"] = "None"
    """Security policy of the connection: ``None``, or ``Basic256Sha256``,
    ``Aes128_Sha256_RsaOaep``, ``Aes256_Sha256_RsaPss``; set with ``security_mode``."""
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    """``Sign`` or ``SignAndEncrypt`` with a security policy, ``None`` without: encrypt
    where the network between agent and machine is not trusted."""
    application_uri: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
    """The client's application URI; must match the URI in the client certificate (not set:
    taken from it)."""
    pki_dir: Path | None = None
    """Directory of the client certificate and key, created there on first use (default
    ``<agent.state_dir>/pki/<source id>``), and of the ``trusted`` and ``rejected`` server
    certificates."""
    certificate: Path | None = None
    """A client certificate (DER or PEM) issued elsewhere, instead of the one created in
    ``pki_dir``; give ``private_key`` with it."""
    private_key: Path | None = None
    """The private key (PEM) of ``certificate``."""
    trust_dir: Path | None = None
    """Directory of the server certificates trusted (default ``pki_dir/trusted``); an
    untrusted server is refused before any credential is sent."""
    server_thumbprints: list[str] = Field(default_factory=list)
    """Pinned server certificate thumbprints (SHA-1 or SHA-256, hex), trusted in addition to
    ``trust_dir``."""
    max_clock_skew_s: float = Field(5.0, ge=0, le=86_400)
    """Seconds a source timestamp may be off the receive time before the device's clock
    counts as wrong (counted and logged); 0 turns the check off."""
    clock_skew_action: Literal["flag", "receive"] = "flag"
    """What a skewed sample gets: ``flag`` keeps its source timestamp (counted, the data is
    fine), ``receive`` stamps it with the receive time."""

    _id = field_validator("id")(check_id)

    @field_validator("server_thumbprints")
    @classmethod
    def _thumbprints(cls, value: list[str]) -> list[str]:
        from collectors.opcua_security import normalize_thumbprint

        for thumb in value:
            normalize_thumbprint(thumb)
        return value

    @model_validator(mode="after")
    def _security(self) -> Self:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError("security_policy and security_mode must both be 'None' or both "
                             "be set (e.g. 'Basic256Sha256' with 'SignAndEncrypt')")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither (then one is "
                             "created in pki_dir)")
        if self.deadband_type == "percent" and self.deadband is not None and self.deadband > 100:
            raise ValueError("a percent deadband must be within 0..100")
        return self


class OpcUaAddress(StrictModel):
    """The OPC UA keys of a signal: the node and how the server reports it."""

    node: str | None = None
    """The node's NodeId: ``nsu=<namespace URI>;s=...`` (stable across server restarts),
    ``ns=2;s=...`` or ``i=85``. ``edge-agent browse`` prints them."""
    browse_path: str | None = None
    """The node's path from the root, ``Objects/cnc:Machines/cnc:cnc-01/cnc:State``, each
    element prefixed with an alias of the source's ``namespaces``; survives servers that
    renumber node ids."""
    deadband: float | None = Field(None, ge=0)
    """Change the server ignores for this node, in the node's own unit (or percent of its
    EURange with ``deadband_type = "percent"``); 0 turns the source's deadband off for it."""
    deadband_type: Literal["absolute", "percent"] = "absolute"
    """``absolute`` (in the node's unit) or ``percent`` (of the node's EURange, which the
    server must provide)."""
    sampling_interval_ms: int | None = Field(None, ge=0, le=600_000)
    """How often the server samples this node, in ms (default the source's); 0 asks for the
    fastest, event-driven on most servers."""
    queue_size: int | None = Field(None, ge=1, le=100_000)
    """Values the server keeps for this node between publishes (default the source's), so
    fast changes are not lost."""


def _deadband(value: float | None, kind: str) -> Deadband | None:
    from collectors.opcua import Deadband

    if value is None:
        return None
    return Deadband("percent" if kind == "percent" else "absolute", value)


def profile_roles(m: MachineSection) -> frozenset[str]:
    """The roles a machine's ``profile`` provides: those it does not configure itself
    (explicit signals, ``state_rules`` or ``power_state`` win)."""
    if m.profile is None or m.profile not in PROFILE_ROLES:
        return frozenset()
    sig = m.signals
    roles: set[str] = set()
    if sig.state is None and not m.state_rules and m.power_state is None:
        roles.add("state")
    if sig.parts_total is None:
        roles.add("parts_total")
    if sig.parts_good is None and sig.parts_bad is None:
        roles.add("parts_good")
    return frozenset(roles & PROFILE_ROLES[m.profile])


def profile_problems(where: str, m: MachineSection, sources: Mapping[str, object]) -> Problems:
    """A machine's ``profile``, ``source`` and ``machine_tool``, checked when the file is
    read: a known profile, read through an OPC UA source, at a well-formed address."""
    if m.profile is None:
        extra = [k for k in ("source", "machine_tool") if getattr(m, k) is not None]
        return [(f"{where}: {k}", "is read only with profile") for k in extra]
    if m.profile not in PROFILE_ROLES:
        return [(f"{where}: profile", f"unknown profile {m.profile!r} (known: "
                 f"{', '.join(sorted(PROFILE_ROLES))})")]
    out: Problems = []
    src = sources.get(m.source) if m.source is not None else None
    if m.source is None:
        out.append((f"{where}: source", f"profile {m.profile!r} needs source (an OPC UA "
                    "source)"))
    elif src is None:
        out.append((f"{where}: source", f'source "{m.source}" is not defined'))
    elif not isinstance(src, OpcUaSourceSection):
        out.append((f"{where}: source", f'source "{m.source}" is not an OPC UA source: '
                    f"profile {m.profile!r} reads an OPC UA model"))
    if m.machine_tool is None:
        out.append((f"{where}: machine_tool", f"profile {m.profile!r} needs machine_tool (the "
                    "NodeId or browse path of the machine's MachineTool object)"))
    elif isinstance(src, OpcUaSourceSection):
        from collectors.opcua.spec import is_node_id, parse_browse_path, parse_node

        try:
            if is_node_id(m.machine_tool):
                parse_node(m.machine_tool, None)
            else:
                parse_browse_path(m.machine_tool, src.namespaces)
        except ValueError as err:
            out.append((f"{where}: machine_tool", str(err).replace(
                "unknown namespace alias", f'namespace alias not in sources "{src.id}" '
                "namespaces:")))
    return out


def client_pki_dir(cfg: AgentConfig, src: OpcUaSourceSection) -> Path | None:
    """Where a source's client certificate lives (and is created on first connect).

    A secure source without ``pki_dir`` keeps it under the agent's state directory
    (``pki/<source id>``), so it survives restarts and upgrades.
    """
    if src.pki_dir is None and src.security_mode != "None":
        return cfg.agent.state_dir / "pki" / src.id
    return src.pki_dir


class OpcUaType:
    """The OPC UA source type (see :class:`agent.sources.base.SourceType`)."""

    name = "opcua"
    title = "OPC UA"
    section = OpcUaSourceSection
    address = OpcUaAddress
    address_keys = ("node", "browse_path")
    address_phrase = "node or browse_path"
    endpoint_keys = ("url",)
    meaning_keys = ("node", "browse_path")
    takes_presets = False

    def address_problem(self, sig: SignalSection) -> str | None:
        """One of node and browse_path; no register count; a percent within 0..100."""
        if sig.node is not None and sig.browse_path is not None:
            return "give node or browse_path, not both"
        if sig.length is not None:
            return "length is the register count of a Modbus string; an OPC UA node has none"
        if sig.deadband_type == "percent" and sig.deadband is not None and sig.deadband > 100:
            return "a percent deadband must be within 0..100"
        return None

    def endpoint(self, src: OpcUaSourceSection) -> str:
        """The server's URL."""
        return src.url

    def check_file(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection) -> Problems:
        """A request must time out before the liveness probe gives the session up."""
        if src.timeout_s >= src.watchdog_s:
            return [(label("sources", index, src.id) + ": timeout_s",
                     "must be shorter than watchdog_s")]
        return []

    def check_signal(self, where: str, sig: SignalSection, src: OpcUaSourceSection) -> Problems:
        """No deadband on a state code; browse path aliases the source defines."""
        if sig.map is not None and sig.deadband:
            return [(where + ".deadband", "a mapped (state) signal takes no deadband: a state "
                     "code that changes by less than the deadband would be missed")]
        if sig.browse_path:
            for element in sig.browse_path.strip("/").split("/"):
                alias, sep, _ = element.partition(":")
                if sep and alias not in src.namespaces:
                    return [(where + ".browse_path", f'namespace alias "{alias}" is not in '
                             f'sources "{src.id}" namespaces')]
        return []

    def spec(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection, *,
             secrets: bool = True) -> OpcUaSourceSpec | None:
        """The collector's spec with every tag read through ``src`` (None: no tags).

        ``secrets=False`` leaves the password unset instead of reading it from the
        environment: for validating the spec where the variable may not exist.
        """
        return self._spec(cfg, index, src, secrets=secrets)[0]

    def _spec(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection, *,
              secrets: bool) -> tuple[OpcUaSourceSpec | None, dict[str, str]]:
        from collectors.opcua import OpcUaSourceSpec, OpcUaTag

        where = label("sources", index, src.id)
        base = f"opcua source {src.id!r}"
        rename = {base: where}
        tags: list[OpcUaTag] = []
        for use in signal_uses(cfg, src.id):
            sig = use.sig
            scale, offset = scaling(use.role, sig)
            rename[f"{base} tags[{len(tags)}] {use.device}.{use.role}"] = use.place
            tags.append(OpcUaTag(
                device=use.device, signal=use.role, node=sig.node, browse_path=sig.browse_path,
                value_map=dict(sig.map) if sig.map else None,
                sampling_interval_ms=sig.sampling_interval_ms, queue_size=sig.queue_size,
                deadband=_deadband(sig.deadband, sig.deadband_type),
                scale=scale, offset=offset))
        profiles = self._profiles(cfg, src, rename, base)
        if not tags and not profiles:
            return None, rename
        spec = OpcUaSourceSpec(
            id=src.id, url=src.url, tags=tuple(tags), namespaces=dict(src.namespaces),
            publishing_interval_ms=src.publishing_interval_ms,
            sampling_interval_ms=src.sampling_interval_ms, queue_size=src.queue_size,
            timeout_s=src.timeout_s, session_timeout_s=src.session_timeout_s,
            watchdog_s=src.watchdog_s, username=src.username,
            password=resolve_secret(None, src.password_env, f"{where}: password_env")
            if secrets else None,
            deadband=_deadband(src.deadband, src.deadband_type),
            security_policy=src.security_policy, security_mode=src.security_mode,
            pki_dir=client_pki_dir(cfg, src), certificate=src.certificate,
            private_key=src.private_key, application_uri=src.application_uri,
            trust_dir=src.trust_dir, server_thumbprints=tuple(src.server_thumbprints),
            max_clock_skew_s=src.max_clock_skew_s, clock_skew_action=src.clock_skew_action,
            profiles=profiles,
        )
        return spec, rename

    @staticmethod
    def _profiles(cfg: AgentConfig, src: OpcUaSourceSection, rename: dict[str, str],
                  base: str) -> tuple[ProfileSpec, ...]:
        """The machines read through ``src`` by a profile, for the collector's spec."""
        from collectors.opcua.spec import ProfileSpec

        out: list[ProfileSpec] = []
        for i, m in enumerate(cfg.machines):
            roles = profile_roles(m)
            if m.source != src.id or m.profile is None or m.machine_tool is None or not roles:
                continue
            rename[f"{base} profiles[{len(out)}] {m.id}"] = label("machines", i, m.id) + \
                ": profile"
            out.append(ProfileSpec(m.id, m.profile, m.machine_tool, roles))
        return tuple(out)

    def _collector(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection, *,
                   secrets: bool) -> OpcUaCollector | None:
        from collectors.opcua import OpcUaCollector

        spec, rename = self._spec(cfg, index, src, secrets=secrets)
        return None if spec is None else located(lambda: OpcUaCollector(spec), rename)

    def check(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection) -> Problems:
        """What :meth:`build` would refuse, without reading the password."""
        return problems_of(lambda: self._collector(cfg, index, src, secrets=False))

    def check_host(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection) -> Problems:
        """The client certificate, key and trust list of a secure source in use."""
        from agent.config.preflight import opcua_pki_problems

        return opcua_pki_problems(cfg, index, src)

    def build(self, cfg: AgentConfig, index: int, src: OpcUaSourceSection
              ) -> OpcUaCollector | None:
        """The collector subscribing to every tag read through ``src``."""
        return self._collector(cfg, index, src, secrets=True)


SOURCE = OpcUaType()

