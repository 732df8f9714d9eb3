"""What one OPC UA source is: its tags, its settings, and the checks they must pass.

Pure data and parsing (no connection): the config builds these specs, ``check-config``
validates them through :func:`validate`, and the collector and ``edge-agent browse``
both connect from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from asyncua import ua
from asyncua.ua.uaerrors import UaError

from collectors.opcua import security as sec
from rules.errors import ConfigError

__all__ = ["PROFILES", "Deadband", "OpcUaSourceSpec", "OpcUaTag", "ProfileSpec",
           "is_node_id", "parse_browse_path", "parse_node", "validate"]

PROFILES: dict[str, frozenset[str]] = {"opc40501": frozenset({"state", "parts_total",
                                                              "parts_good"})}
"""Companion-spec profiles a machine can be read by, and the roles each can provide."""


@dataclass(frozen=True, slots=True)
class Deadband:
    """A data-change deadband: ``absolute`` in engineering units, or ``percent`` of the
    node's EURange (0..100; the server needs an EURange property for it).

    It is applied by the server, so it saves both network and CPU: a power reading that
    jitters by a few watts does not produce a notification per publish.
    """

    kind: Literal["absolute", "percent"]
    value: float


@dataclass(frozen=True, slots=True)
class OpcUaTag:
    """One signal of one device, addressed by NodeId string or by browse path.

    ``node`` accepts ``ns=2;s=x``, ``i=85`` or ``nsu=<uri>;s=x``; the URI form is stable
    across server restarts and is resolved to an index at every connect. ``browse_path``
    reads like ``Objects/cnc:Machines/cnc:cnc-01/...`` where ``cnc`` is an alias from
    :attr:`OpcUaSourceSpec.namespaces` (names without alias are namespace 0).
    ``value_map`` translates raw values (``str(raw)``) into emitted ones, e.g. machine
    state codes into state names; an unmapped raw value gives a ``bad`` sample.
    ``sampling_interval_ms``, ``queue_size`` and ``deadband`` override the source's
    settings for this node (None: use the source's); ``Deadband("absolute", 0)`` opts a
    tag out of a source-wide deadband. ``scale``/``offset`` turn a numeric value into the
    role's unit (``value * scale + offset``, e.g. W to kW with ``scale=0.001``); they do
    not apply to mapped tags, and the deadband stays in the node's own unit.
    """

    device: str
    signal: str
    node: str | None = None
    browse_path: str | None = None
    value_map: Mapping[str, str] | None = None
    sampling_interval_ms: int | None = None
    queue_size: int | None = None
    deadband: Deadband | None = None
    scale: float = 1.0
    offset: float = 0.0
    plain: bool = field(init=False, default=True, compare=False, repr=False)
    """Neither mapped nor scaled: the collector's fast path passes the value as it is."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", self.value_map is None and self.scale == 1.0
                           and self.offset == 0.0)


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """One machine read through a companion specification's model instead of tags.

    ``machine_tool`` is the machine's object (a NodeId string, ``nsu=`` preferred, or a
    browse path with the source's aliases); at every connect the collector finds the
    nodes of ``roles`` below it by browse name (see :mod:`collectors.opcua.opc40501`).
    ``roles`` are those the machine does not configure itself.
    """

    device: str
    profile: str
    machine_tool: str
    roles: frozenset[str]


def is_node_id(text: str) -> bool:
    """True when ``text`` reads as a NodeId (``ns=2;s=x``, ``nsu=...;i=5``, ``i=85``),
    False for a browse path."""
    return re.match(r"^\s*(nsu?=|[isgb]=)", text) is not None


@dataclass(frozen=True, slots=True)
class OpcUaSourceSpec:
    """One OPC UA server and the tags to subscribe to on it.

    ``queue_size`` is the server-side monitored-item queue (so fast changes between
    publishes are not lost), ``sampling_interval_ms`` 0 asks for the fastest sampling
    (event-driven on most servers). ``watchdog_s`` is the interval of the liveness probe
    and the keep-alive period asked of the server (a subscription silent for twice the
    granted period plus ``timeout_s`` ends the session); keep it at several seconds since
    a probe on a busy server can time out spuriously.
    ``deadband`` is the default of tags without their own (mapped tags, i.e. states,
    never get a source-wide deadband).

    Security: ``security_policy``/``security_mode`` other than ``"None"`` need a client
    certificate (``certificate``/``private_key``, else created in ``pki_dir``) and trust
    in the server (``trust_dir``, default ``pki_dir/trusted``, and/or
    ``server_thumbprints``). ``application_uri`` must match the certificate's (None:
    take it from the certificate).
    """

    id: str
    url: str
    tags: tuple[OpcUaTag, ...]
    namespaces: Mapping[str, str] = field(default_factory=dict)
    publishing_interval_ms: int = 500
    sampling_interval_ms: int = 0
    queue_size: int = 100
    timeout_s: float = 5.0
    session_timeout_s: float = 60.0
    watchdog_s: float = 10.0
    username: str | None = None
    password: str | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    deadband: Deadband | None = None
    security_policy: str = "None"
    security_mode: str = "None"
    pki_dir: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    application_uri: str | None = None
    trust_dir: Path | None = None
    server_thumbprints: tuple[str, ...] = ()
    max_clock_skew_s: float = 5.0
    clock_skew_action: Literal["flag", "receive"] = "flag"
    profiles: tuple[ProfileSpec, ...] = ()
    """Machines read by a profile: expanded into tags at every connect."""

    @property
    def secure(self) -> bool:
        """True when the connection signs (and maybe encrypts) its messages."""
        return self.security_mode != "None"

    @property
    def effective_trust_dir(self) -> Path | None:
        """The trust directory, defaulting to ``pki_dir/trusted``."""
        if self.trust_dir is not None:
            return self.trust_dir
        return self.pki_dir / "trusted" if self.pki_dir is not None else None


def _check_deadband(deadband: Deadband | None) -> str | None:
    if deadband is None:
        return None
    if deadband.kind not in ("absolute", "percent"):
        return f"deadband kind {deadband.kind!r} is not absolute or percent"
    if deadband.value < 0 or (deadband.kind == "percent" and deadband.value > 100):
        allowed = "0..100" if deadband.kind == "percent" else ">= 0"
        return f"deadband {deadband.value} is outside {allowed}"
    return None


def parse_browse_path(path: str, namespaces: Mapping[str, str]) -> list[tuple[str | None, str]]:
    """Split ``Objects/cnc:Machines/...`` into ``(namespace URI or None, name)`` pairs.

    ``None`` means namespace 0. A prefix that is not a known alias is a config error:
    a typo would otherwise only surface as "not found" at run time.
    """
    parts: list[tuple[str | None, str]] = []
    for element in path.strip("/").split("/"):
        if not element:
            raise ValueError(f"browse path {path!r} has an empty element")
        alias, sep, name = element.partition(":")
        if not sep:
            parts.append((None, element))
        elif alias in namespaces:
            if not name:
                raise ValueError(f"browse path {path!r}: element {element!r} has no name")
            parts.append((namespaces[alias], name))
        else:
            raise ValueError(f"browse path {path!r}: unknown namespace alias {alias!r}")
    return parts


def validate(spec: OpcUaSourceSpec) -> None:
    """Raise one ConfigError naming every problem of ``spec``, so the operator fixes a
    config in one pass instead of one error per run."""
    errors: list[tuple[str, str]] = []
    place = f"opcua source {spec.id!r}"
    if not spec.url.startswith("opc.tcp://"):
        errors.append((place, f"url {spec.url!r} is not opc.tcp://host:port"))
    seen: set[tuple[str, str]] = set()
    for i, tag in enumerate(spec.tags):
        tplace = f"{place} tags[{i}] {tag.device}.{tag.signal}"
        if (tag.device, tag.signal) in seen:
            errors.append((tplace, "duplicate device/signal"))
        seen.add((tag.device, tag.signal))
        if (tag.node is None) == (tag.browse_path is None):
            errors.append((tplace, "exactly one of node and browse_path is required"))
        if tag.node is not None:
            try:
                parse_node(tag.node, None)
            except ValueError as err:
                errors.append((tplace, str(err)))
        if tag.browse_path is not None:
            try:
                parse_browse_path(tag.browse_path, spec.namespaces)
            except ValueError as err:
                errors.append((tplace, str(err)))
        problem = _check_deadband(tag.deadband)
        if problem:
            errors.append((tplace, problem))
        if (tag.sampling_interval_ms or 0) < 0 or (tag.queue_size or 0) < 0:
            errors.append((tplace, "sampling_interval_ms and queue_size must be >= 0"))
    for i, prof in enumerate(spec.profiles):
        errors.extend(_check_profile(f"{place} profiles[{i}] {prof.device}", prof, spec, seen))
    problem = _check_deadband(spec.deadband)
    if problem:
        errors.append((place, problem))
    errors.extend(_check_security(spec, place))
    if spec.max_clock_skew_s < 0:
        errors.append((place, "max_clock_skew_s must be >= 0 (0 turns the check off)"))
    if spec.publishing_interval_ms <= 0 or spec.sampling_interval_ms < 0:
        errors.append((place, "publishing_interval_ms must be > 0, sampling_interval_ms >= 0"))
    if spec.queue_size < 0:
        errors.append((place, "queue_size must be >= 0"))
    if spec.timeout_s <= 0 or spec.session_timeout_s <= 0 or spec.watchdog_s <= 0:
        errors.append((place, "timeout_s, session_timeout_s and watchdog_s must be > 0"))
    if not 0 < spec.reconnect_min_s <= spec.reconnect_max_s:
        errors.append((place, "need 0 < reconnect_min_s <= reconnect_max_s"))
    if errors:
        raise ConfigError(errors)


def _check_profile(place: str, prof: ProfileSpec, spec: OpcUaSourceSpec,
                   seen: set[tuple[str, str]]) -> list[tuple[str, str]]:
    roles = PROFILES.get(prof.profile)
    if roles is None:
        return [(place, f"unknown profile {prof.profile!r} (known: {', '.join(PROFILES)})")]
    errors: list[tuple[str, str]] = []
    if not prof.roles <= roles:
        errors.append((place, f"profile {prof.profile!r} provides {', '.join(sorted(roles))}, "
                       f"not {', '.join(sorted(prof.roles - roles))}"))
    twice = sorted(role for role in prof.roles if (prof.device, role) in seen)
    if twice:
        errors.append((place, f"{', '.join(twice)} also configured as a tag"))
    try:
        if is_node_id(prof.machine_tool):
            parse_node(prof.machine_tool, None)
        else:
            parse_browse_path(prof.machine_tool, spec.namespaces)
    except ValueError as err:
        errors.append((place, f"machine_tool: {err}"))
    return errors


def _check_security(spec: OpcUaSourceSpec, place: str) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if spec.security_policy != "None" and spec.security_policy not in sec.POLICIES:
        errors.append((place, f"unknown security_policy {spec.security_policy!r}"))
    if spec.security_mode not in ("None", "Sign", "SignAndEncrypt"):
        errors.append((place, f"unknown security_mode {spec.security_mode!r}"))
    if (spec.security_policy == "None") != (spec.security_mode == "None"):
        errors.append((place, "security_policy and security_mode must both be None or both "
                       "be set (e.g. Basic256Sha256 with SignAndEncrypt)"))
    if spec.secure:
        if spec.pki_dir is None and (spec.certificate is None or spec.private_key is None):
            errors.append((place, "a secure connection needs pki_dir or certificate and "
                           "private_key"))
        if spec.effective_trust_dir is None and not spec.server_thumbprints:
            errors.append((place, "a secure connection needs trust_dir or server_thumbprints"))
    for thumb in spec.server_thumbprints:
        try:
            sec.normalize_thumbprint(thumb)
        except ValueError as err:
            errors.append((place, str(err)))
    return errors


def parse_node(text: str, ns_array: list[str] | None) -> ua.NodeId:
    """Parse a NodeId string; ``nsu=`` is resolved against ``ns_array`` (None: syntax only).

    Raises ``ValueError`` for bad syntax and ``LookupError`` for a URI the server lacks.
    """
    body = text.strip()
    if body.startswith("nsu="):
        uri, sep, rest = body[4:].partition(";")
        if not sep or not uri:
            raise ValueError(f"node {text!r}: expected nsu=<uri>;<i|s|g|b>=<id>")
        index = 0
        if ns_array is not None:
            try:
                index = ns_array.index(uri)
            except ValueError:
                raise LookupError(f"namespace {uri!r} is not on the server") from None
        body = f"ns={index};{rest}"
    try:
        return ua.NodeId.from_string(body)
    except (ValueError, TypeError, UaError) as err:
        raise ValueError(f"node {text!r} is not a NodeId: {err}") from err
