"""OPC UA sources: ``type = "opcua"`` in ``[[sources]]``, read by collectors/opcua.py.

Everything the agent knows about OPC UA as a source type: the source and signal keys,
their checks, the collector spec built from them, and what a reload compares.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, field_validator, model_validator

from agent.config.common import Id, StrictModel, check_id, resolve_secret
from agent.config.load import label
from agent.sources.base import Problems, located, problems_of, scaling, signal_uses

if TYPE_CHECKING:
    from agent.config.model import AgentConfig, SignalSection
    from collectors.opcua import Deadband, OpcUaCollector, OpcUaSourceSpec, OpcUaTag


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
    type: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    namespaces: dict[str, str] = Field(default_factory=dict)
    publishing_interval_ms: int = Field(500, ge=10, le=600_000)
    sampling_interval_ms: int = Field(0, ge=0, le=600_000)
    queue_size: int = Field(100, ge=1, le=100_000)
    timeout_s: float = Field(5.0, gt=0, le=120)
    session_timeout_s: float = Field(60.0, gt=0)
    watchdog_s: float = Field(10.0, gt=0)
    username: str | None = None
    password_env: str | None = None
    deadband: float | None = Field(None, ge=0)
    deadband_type: Literal["absolute", "percent"] = "absolute"
    security_policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                             "Aes256_Sha256_RsaPss"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    application_uri: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
    pki_dir: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    trust_dir: Path | None = None
    server_thumbprints: list[str] = Field(default_factory=list)
    max_clock_skew_s: float = Field(5.0, ge=0, le=86_400)
    clock_skew_action: Literal["flag", "receive"] = "flag"

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
    browse_path: str | None = None
    deadband: float | None = Field(None, ge=0)
    deadband_type: Literal["absolute", "percent"] = "absolute"
    sampling_interval_ms: int | None = Field(None, ge=0, le=600_000)
    queue_size: int | None = Field(None, ge=1, le=100_000)


def _deadband(value: float | None, kind: str) -> Deadband | None:
    from collectors.opcua import Deadband

    if value is None:
        return None
    return Deadband("percent" if kind == "percent" else "absolute", value)


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
        if not tags:
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
        )
        return spec, rename

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

