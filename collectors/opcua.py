"""OPC UA subscription collector.

Subscribes (never polls) to every configured node of one server and forwards each data
change as a :class:`Sample`, stamped with the value's SourceTimestamp (else the server's,
else the receive time; ``ts_source`` says which). Status codes become sample quality.

Connection handling is the collector's own, not asyncua's ``auto_reconnect``: on any
loss (a dropped connection, a failed liveness probe, or a subscription that has sent
neither a change nor a keep-alive for two keep-alive periods) it tears the client down,
backs off with jitter, and builds a fresh session, so namespace URIs are resolved to
indexes again (a restarted server may number them differently), every node is read
once more, and monitored items are created exactly once per session (no duplicates
piling up on a server that survived the loss). asyncua's own stale-subscription check
only recreates the subscription, forever, when the server accepts the recreate and
stays silent; the collector's check is what turns that into a reconnect.

Monitored items take their sampling interval, queue size and deadband (absolute, or
percent of the node's EURange) from the tag, falling back to the source's settings. A
server that refuses a deadband filter for a node gets that node without the filter
(logged once): more notifications are better than none.

Security (policy, mode, client certificate, server trust) is set up per connect by
:mod:`collectors.opcua_security`; an untrusted server certificate is refused before
the session is created, so credentials are never sent to it. When the server refuses
the agent's certificate instead, the failed handshake (the request under way is tracked
through the client's observer) becomes one line saying so, naming the certificate file,
its application URI and thumbprints. Failures are logged once per failing streak and
kind (unavailable, server not trusted, certificate refused), the recovery once.

asyncua logs its side of every failed connect and of every server restart (the
received ERR message twice, a ServiceFault, a "Publish iteration crashed" traceback,
closing a dead session), each time the collector retries. The collector reports those
failures itself, so :func:`quiet_asyncua_logs` (installed by every collector) drops these
known records of asyncua's client loggers unless this module's logger is enabled for
DEBUG (``--log-level debug``), where they pass at DEBUG level. A record of those loggers
that is not one of them, or whose traceback is not a connection failure, passes as
it is.

Clock skew: a SourceTimestamp more than ``max_clock_skew_s`` ahead of the receive time,
or behind it in a live notification (not the first one of an item, which repeats an
old value), means the device clock is off. It is counted (``CollectorStats.clock_skew``
and per device) and logged once per episode. By default the sample keeps its quality
and source timestamp (``clock_skew_action="flag"``): the data is fine, only its time is
doubtful, and a KPI engine that sees the count can flag the window. With
``clock_skew_action="receive"`` such samples are stamped with the receive time instead
(``ts_source="receive"``), which keeps windows aligned when a controller's clock is
known to drift.

Notifications pass through a bounded queue. When it is full the newest sample is
dropped and counted per device; once the queue has drained, every node is read again
so the latest state is delivered anyway. A notification older than one already
delivered for the same signal is dropped and counted, since delivering it would move a
cumulative counter backwards.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)
from asyncua.observer import Observer, SubscriptionEvent
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from collectors import opcua_security as sec
from collectors.base import (
    Backoff,
    CollectorStats,
    DeviceHealth,
    SampleSink,
    StatsView,
    count_problem,
    now_ms,
)
from rules.errors import ConfigError, DeviceError
from rules.types import Sample

__all__ = ["Deadband", "OpcUaCollector", "OpcUaSourceSpec", "OpcUaTag", "parse_browse_path",
           "quiet_asyncua_logs"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNKNOWN_NODE = frozenset(
    {
        StatusCodes.BadNodeIdUnknown,
        StatusCodes.BadNodeIdInvalid,
        StatusCodes.BadNoMatch,
        StatusCodes.BadBrowseNameInvalid,
        StatusCodes.BadAttributeIdInvalid,
    }
)


_FILTER_REFUSED = frozenset(
    {
        StatusCodes.BadFilterNotAllowed,
        StatusCodes.BadMonitoredItemFilterUnsupported,
        StatusCodes.BadMonitoredItemFilterInvalid,
        StatusCodes.BadDeadbandFilterInvalid,
    }
)


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


def _validate(spec: OpcUaSourceSpec) -> None:
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
                _parse_node(tag.node, None)
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


def _parse_node(text: str, ns_array: list[str] | None) -> ua.NodeId:
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


def _plain(nodeid: ua.NodeId) -> ua.NodeId:
    """An ExpandedNodeId (browse results) as the plain NodeId notifications carry."""
    return ua.NodeId(nodeid.Identifier, nodeid.NamespaceIndex, nodeid.NodeIdType)


_ASYNCUA_ROUTINE: dict[str, frozenset[str]] = {
    "asyncua.uaprotocol": frozenset({"Received an error: %s", "Message %s aborted: %s"}),
    "asyncua.client.ua_client.UASocketProtocol": frozenset({
        "Received an error: %r", "Got error status from server: %s",
        "ServiceFault (%s, diagnostics: %s) from server received %s",
        "disconnect_socket was called but transport is None"}),
    "asyncua.client.ua_client.UaClient": frozenset({
        "close_secure_channel was called but connection is closed"}),
    "asyncua.client.ua_session.UaSession": frozenset({
        "Publish iteration crashed; retrying in 1s",
        "close_session was called but connection is closed",
        "close_session but connection wasn't established"}),
    "asyncua.client.client": frozenset({
        "create_session fault response: %s (%s)",
        "close_session raised during disconnect; continuing teardown",
        "close_secure_channel raised during disconnect; continuing teardown"}),
}
"""asyncua's per-failure records (logger name: message templates, as in asyncua 2.1)."""

_CONNECTION_FAILURE = (OSError, TimeoutError, UaStatusCodeError)


class _AsyncuaRoutine(logging.Filter):
    """Drops asyncua's routine failure records unless the collector's debug log is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        # asyncua also logs bare objects (some unhashable): only templates can match.
        msg = record.msg
        if not isinstance(msg, str) or msg not in _ASYNCUA_ROUTINE.get(record.name, ()):
            return True
        if record.exc_info and not isinstance(record.exc_info[1], _CONNECTION_FAILURE):
            return True  # not the routine failure: a library problem worth seeing
        if not log.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


_ASYNCUA_FILTER = _AsyncuaRoutine()


def quiet_asyncua_logs() -> None:
    """Keep asyncua's per-retry failure records out of the log (idempotent).

    A refused certificate gave two asyncua lines per retry and a server restart a
    traceback, on top of the collector's own line that already says what failed.
    """
    for name in _ASYNCUA_ROUTINE:
        logger = logging.getLogger(name)
        if _ASYNCUA_FILTER not in logger.filters:
            logger.addFilter(_ASYNCUA_FILTER)


def _quality(status: ua.StatusCode | None) -> Literal["good", "uncertain", "bad"]:
    if status is None or status.is_good():
        return "good"
    if status.is_uncertain():
        return "uncertain"
    return "bad"


def _ms(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt <= _EPOCH:  # MinDateTime (1601) means "not set"
        return None
    return (dt - _EPOCH) // _MS


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH


def _plain_value(raw: Any) -> str | int | float | None:
    """Reduce an OPC UA variant value to what a Sample carries."""
    if raw is None or isinstance(raw, str | float):
        return raw
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, Enum):
        return _plain_value(raw.value)
    if isinstance(raw, int):
        return int(raw)
    if isinstance(raw, ua.LocalizedText):
        return raw.Text
    return str(raw)


_SIMPLE = frozenset({float, int, str})
"""Value types a Sample carries as they are (bool is not one: it becomes 0/1)."""

_LIBRARY_QUEUE = 2 * 10_000
"""Two publish responses at asyncua's default MaxNotificationsPerPublish (10 000)."""


class _SampleQueue:
    """The collector's bounded queue between pump and forwarder.

    A deque and one waiter future instead of ``asyncio.Queue``: it sits on the
    per-notification path, and only one consumer ever waits, so the general queue's
    bookkeeping is pure cost here. The pump checks :meth:`full` and counts the drop.
    """

    __slots__ = ("_waiter", "items", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.items: deque[Sample] = deque()
        self.maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def full(self) -> bool:
        return len(self.items) >= self.maxsize

    def empty(self) -> bool:
        return not self.items

    def put_nowait(self, sample: Sample) -> None:
        self.items.append(sample)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> Sample:
        return self.items.popleft()

    async def get(self) -> Sample:
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.items.popleft()


class _ConnectionLost(Exception):
    """Raised inside a session's TaskGroup to end the session."""


_PROGRESS = {UaClientState.SOCKET_OPEN: 1, UaClientState.CHANNEL_OPEN: 2,
             UaClientState.CONNECTED: 4}
_STEPS: dict[int, sec.HandshakeStep] = {1: "OpenSecureChannel", 2: "CreateSession",
                                        3: "ActivateSession"}


class _Heard(Observer):  # type: ignore[misc,unused-ignore]
    """When the server last sent a publish response (notifications or a keep-alive), and
    which handshake request a failed connect was on.

    The library's ``Subscription.last_publish_at`` is also set when the library recreates
    a stale subscription, which would hide a server that accepts the new subscription
    and stays silent; so a recreate is noted here, and ``last_publish_at`` counts only
    when it is later than the last recreate. The notification hook alone would not do:
    the library skips it for a keep-alive whose NotificationData is a null array.
    """

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.recreated = -math.inf
        self._progress = 0

    def on_notification(self, subscription_id: int | None, event_count: int) -> None:
        self.last = time.monotonic()

    def on_state_change(self, state: UaClientState) -> None:
        # Only forward: a failed CreateSession closes the channel (CHANNEL_OPEN back to
        # SOCKET_OPEN), and the step that failed must stay CreateSession.
        self._progress = max(self._progress, _PROGRESS.get(state, 0))

    def on_request(self, request_type: str, duration: float, error: BaseException | None) -> None:
        if request_type == "CreateSessionRequest" and error is None:
            self._progress = max(self._progress, 3)

    @property
    def handshake_step(self) -> sec.HandshakeStep | None:
        """The handshake request under way (None before the socket opened and after the
        session is active)."""
        return _STEPS.get(self._progress)

    def on_subscription_event(self, subscription_id: int | None,
                              event: SubscriptionEvent) -> None:
        if event == SubscriptionEvent.RECREATED:
            self.recreated = time.monotonic()

    def since(self, sub: Subscription) -> float:
        """Seconds since the server was last heard on ``sub``."""
        last = self.last
        published = sub.last_publish_at
        if published is not None and published > self.recreated:
            last = max(last, published)
        return time.monotonic() - last


_NEVER = -(1 << 62)


@dataclass(slots=True)
class _Seen:
    """The duplicate filter's memory of one signal, and the health record it counts into.

    One object per signal, looked up once per monitored item rather than once per
    notification: the filter sits on the per-notification path.
    """

    health: DeviceHealth
    ts_ms: int = _NEVER
    value: object = None
    quality: str = ""


@dataclass(slots=True)
class _Session:
    client: Client
    sub: Subscription
    by_node: dict[ua.NodeId, list[OpcUaTag]] = field(default_factory=dict)
    pending: list[OpcUaTag] = field(default_factory=list)
    keepalive_s: float = 0.0
    """How long the server may stay silent (no change) before it sends a keep-alive."""


class OpcUaCollector(StatsView):
    """Collects every tag of one OPC UA server through one subscription.

    Device health: all devices of the source share the connection state; a tag whose
    node is unknown is logged once, counted as an error of its device and retried
    (with backoff) while the session lasts and again at every reconnect.
    """

    def __init__(self, spec: OpcUaSourceSpec, *, queue_maxsize: int = 10000) -> None:
        if queue_maxsize <= 0:
            raise ValueError("queue_maxsize must be > 0: the queue has to be bounded")
        _validate(spec)
        self.spec = spec
        self.name = spec.id
        self._queue_maxsize = queue_maxsize
        self._stats = CollectorStats(name=spec.id)
        for tag in spec.tags:
            self._stats.device(tag.device)
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._missing: set[tuple[str, str]] = set()
        self._unmapped: set[tuple[str, str]] = set()
        self._down_since_ms: int | None = None
        self._down_logged: set[type[DeviceError]] = set()
        self._cert: sec.CertInfo | None = None
        self._trust = sec.ServerTrust(
            trust_dir=spec.effective_trust_dir,
            thumbprints=frozenset(sec.normalize_thumbprint(t) for t in spec.server_thumbprints),
            rejected_dir=(spec.effective_trust_dir.parent / "rejected"
                          if spec.effective_trust_dir is not None else None),
        )
        self._skew_ms = int(spec.max_clock_skew_s * 1000)
        self._skewed: set[str] = set()
        self._filter_refused: set[tuple[str, str]] = set()
        asyncua_log = logging.getLogger("asyncua")
        if asyncua_log.level == logging.NOTSET:
            # Its INFO level dumps every publish result.
            asyncua_log.setLevel(logging.WARNING)
        quiet_asyncua_logs()

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, sink: SampleSink) -> None:
        """Connect, subscribe and forward until cancelled; reconnect on any loss."""
        backoff = Backoff(self.spec.reconnect_min_s, self.spec.reconnect_max_s)
        while True:
            try:
                await self._session(sink, backoff)
            except DeviceError as err:
                self._mark_down(err)
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, sink: SampleSink, backoff: Backoff) -> None:
        client = Client(self.spec.url, timeout=self.spec.timeout_s,
                        watchdog_intervall=self.spec.watchdog_s)
        client.session_timeout = int(self.spec.session_timeout_s * 1000)
        if self.spec.secure:
            await self._secure(client)
        if self.spec.username:
            client.set_user(self.spec.username)
        if self.spec.password:
            client.set_password(self.spec.password)
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            log.debug("opcua %s: connection lost: %r", self.name, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        heard = _Heard()
        client.uaclient.observer = heard
        connected = False
        try:
            try:
                # Bounds the whole set-up: each request has the client's timeout, but
                # a server that accepts the socket and never answers must not hang us.
                async with asyncio.timeout(self.spec.timeout_s * 4 + 5):
                    await client.connect()
                    connected = True
                    session, initial = await self._open(client)
            except DeviceError:
                raise
            except Exception as err:
                if not connected and self.spec.secure and self._cert is not None:
                    refused = sec.client_certificate_refusal(err, heard.handshake_step,
                                                             self._cert, self.spec.url)
                    if refused is not None:
                        raise refused from err
                raise DeviceError(f"connect to {self.spec.url}: {err!r}") from err
            self._mark_up()
            backoff.reset()
            for sample in initial:  # the library queue holds notifications meanwhile
                await self._emit(sink, sample)
            try:
                async with asyncio.TaskGroup() as tg:
                    queue = _SampleQueue(self._queue_maxsize)
                    resync = asyncio.Event()
                    tg.create_task(self._pump(session, queue, resync, sink))
                    tg.create_task(self._forward(session, queue, resync, sink))
                    tg.create_task(self._watch(lost))
                    tg.create_task(self._watch_silence(session, heard))
                    if session.pending:
                        tg.create_task(self._retry_pending(session, sink))
            except* Exception as group:
                first = group.exceptions[0]
                if not isinstance(first, _ConnectionLost | OSError | TimeoutError | UaError):
                    log.warning("opcua %s: session ended by %r", self.name, first,
                                exc_info=first)
                raise DeviceError(f"{self.spec.url}: {first}") from first
        finally:
            await self._close(client, connected)

    async def _secure(self, client: Client) -> None:
        """Set up the client certificate and the trusted server certificate.

        The endpoints are fetched over an unsecured channel (that is what GetEndpoints
        is for); the server certificate found there is checked against the trust list
        and then pinned for the secure channel, so asyncua refuses a session whose
        certificate differs from the one checked.
        """
        spec = self.spec
        if self._cert is None:
            try:
                self._cert = await asyncio.to_thread(
                    sec.ensure_client_certificate, spec.pki_dir or Path("."),
                    spec.application_uri, cert_path=spec.certificate,
                    key_path=spec.private_key)
            except ConfigError as err:
                raise DeviceError(f"client certificate: {err}") from err
        cert = self._cert
        client.application_uri = cert.application_uri
        policy = sec.policy_class(spec.security_policy)
        mode = sec.message_security_mode(spec.security_mode)
        try:
            async with asyncio.timeout(self.spec.timeout_s * 2 + 1):
                endpoints = await client.connect_and_get_server_endpoints()
        except (OSError, TimeoutError, UaError) as err:
            raise DeviceError(f"get endpoints of {spec.url}: {err!r}") from err
        matching = [ep for ep in endpoints
                    if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == mode]
        if not matching:
            offered = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}"
                              for ep in endpoints})
            raise DeviceError(f"{spec.url} offers no endpoint with {spec.security_policy}/"
                              f"{spec.security_mode}; it offers {', '.join(offered)}")
        server_der = sec.first_certificate(matching[0].ServerCertificate or b"")
        if not server_der:
            raise DeviceError(f"{spec.url}: the secure endpoint has no server certificate")
        sec.check_server_certificate(server_der, self._trust, spec.url)
        try:
            await client.set_security(policy, str(cert.cert_path), str(cert.key_path),
                                      server_certificate=server_der, mode=mode)
        except (OSError, ValueError, UaError) as err:
            raise DeviceError(f"security set-up for {spec.url}: {err!r}") from err

    async def _open(self, client: Client) -> tuple[_Session, list[Sample]]:
        ns_array = await client.get_namespace_array()
        spec = self.spec
        # A keep-alive after watchdog_s without changes (the library's default is 3/4 of
        # the session timeout), so a silent server is told from a quiet one quickly.
        keepalive_count = max(1, math.ceil(spec.watchdog_s * 1000 / spec.publishing_interval_ms))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=spec.publishing_interval_ms,
            # Part 4 5.13.2: the lifetime must be at least three keep-alives.
            RequestedLifetimeCount=max(10_000, 3 * keepalive_count),
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=10_000,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await client.create_subscription(
            params, None, queue_maxsize=_LIBRARY_QUEUE, overflow=OverflowPolicy.DISCONNECT)
        # The library's queue sits in front of ours. It receives a whole publish
        # response at once (up to MaxNotificationsPerPublish) before our pump runs, so
        # it is sized for two of them; the pump then moves each item into our bounded
        # queue without waiting. Should it still fill, count the drop (no reconnect).
        sub.set_overflow_disconnect_handler(self._library_overflow)
        session = _Session(client, sub)
        session.keepalive_s = await self._revised_keepalive_s(sub, params)
        resolved, session.pending = await self._resolve(client, ns_array, self.spec.tags)
        return session, await self._attach(session, resolved)

    async def _revised_keepalive_s(self, sub: Subscription,
                                   params: ua.CreateSubscriptionParameters) -> float:
        """The keep-alive period the server granted (servers revise both factors).

        The library keeps only what it requested, so the same values are requested once
        more with ModifySubscription, whose answer carries the revised ones.
        """
        requested = params.RequestedPublishingInterval * params.RequestedMaxKeepAliveCount
        modify = ua.ModifySubscriptionParameters(
            SubscriptionId=sub.subscription_id,
            RequestedPublishingInterval=params.RequestedPublishingInterval,
            RequestedLifetimeCount=params.RequestedLifetimeCount,
            RequestedMaxKeepAliveCount=params.RequestedMaxKeepAliveCount,
            MaxNotificationsPerPublish=params.MaxNotificationsPerPublish,
            Priority=params.Priority,
        )
        try:
            revised = await sub.update(modify)
        except (UaError, TimeoutError) as err:
            log.debug("opcua %s: ModifySubscription refused (%r); assuming the requested "
                      "keep-alive", self.name, err)
            return float(requested) / 1000
        granted = revised.RevisedPublishingInterval * revised.RevisedMaxKeepAliveCount
        return float(max(granted, requested)) / 1000

    async def _watch_silence(self, session: _Session, heard: _Heard) -> None:
        """End the session when the server has sent nothing, not even a keep-alive, for
        two keep-alive periods plus a request timeout: connected but silent."""
        spec = self.spec
        limit = 2 * session.keepalive_s + max(spec.timeout_s, spec.publishing_interval_ms / 1000)
        heard.last = time.monotonic()
        while True:
            await asyncio.sleep(min(spec.watchdog_s, limit / 4))
            quiet = heard.since(session.sub)
            if quiet > limit:
                raise _ConnectionLost(
                    f"subscription silent for {quiet:.1f} s: no notification and no keep-alive "
                    f"(expected at least every {session.keepalive_s:.1f} s)")

    async def _close(self, client: Client, connected: bool) -> None:
        """Close the session (stopping the client's own tasks) or at least the socket."""
        try:
            if connected:
                async with asyncio.timeout(self.spec.timeout_s):
                    await client.disconnect()
        except Exception as err:  # closing a dead session: nothing more to do
            log.debug("opcua %s: disconnect: %r", self.name, err)
        finally:
            client.disconnect_socket()
        self._stats.connected = False
        for health in self._stats.devices.values():
            health.connected = False

    def _mark_up(self) -> None:
        self._stats.connected = True
        self._stats.connects += 1
        if self._stats.connects > 1:
            self._stats.reconnects += 1
        if self._down_since_ms is not None and self._down_logged:
            log.info("opcua %s: connected to %s again after %.1f s", self.name, self.spec.url,
                     (now_ms() - self._down_since_ms) / 1000)
        else:
            log.info("opcua %s: connected to %s", self.name, self.spec.url)
        self._down_since_ms = None
        self._down_logged.clear()
        for health in self._stats.devices.values():
            health.connected = True
            health.failing_since_ms = None

    def _mark_down(self, err: DeviceError) -> None:
        now = now_ms()
        self._stats.connected = False
        if self._down_since_ms is None:
            self._down_since_ms = now
        # Once per streak and kind: a server that first refuses the socket (starting up)
        # and then the certificate must still get the certificate line.
        kind = type(err) if isinstance(err, sec.TrustError) else DeviceError
        if kind not in self._down_logged:
            self._down_logged.add(kind)
            if isinstance(err, sec.TrustError):
                log.warning("opcua %s: %s", self.name, err)  # it names the server and the fix
            else:
                log.warning("opcua %s: %s unavailable: %s", self.name, self.spec.url, err)
        else:
            log.debug("opcua %s: still unavailable: %s", self.name, err)
        for health in self._stats.devices.values():
            health.connected = False
            health.errors += 1
            health.last_error = str(err)
            if health.failing_since_ms is None:
                health.failing_since_ms = now

    # -- resolution and subscription ---------------------------------------------

    async def _resolve(
        self, client: Client, ns_array: list[str], tags: Iterable[OpcUaTag]
    ) -> tuple[dict[ua.NodeId, list[OpcUaTag]], list[OpcUaTag]]:
        """Map tags to NodeIds; tags that cannot be resolved now come back as pending."""
        resolved: dict[ua.NodeId, list[OpcUaTag]] = {}
        pending: list[OpcUaTag] = []
        by_path: list[tuple[OpcUaTag, ua.RelativePath]] = []
        for tag in tags:
            if tag.node is not None:
                try:
                    nodeid = _parse_node(tag.node, ns_array)
                except LookupError as err:
                    self._report_missing(tag, str(err))
                    pending.append(tag)
                    continue
                resolved.setdefault(nodeid, []).append(tag)
                continue
            assert tag.browse_path is not None
            try:
                rel = self._relative_path(tag.browse_path, ns_array)
            except LookupError as err:
                self._report_missing(tag, str(err))
                pending.append(tag)
                continue
            by_path.append((tag, rel))
        if by_path:
            results = await client.translate_browsepaths(
                ua.NodeId(ua.Int32(ObjectIds.RootFolder)), [rel for _, rel in by_path])
            for (tag, _), result in zip(by_path, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    resolved.setdefault(_plain(result.Targets[0].TargetId), []).append(tag)
                else:
                    self._report_missing(tag, f"browse path not found ({result.StatusCode.name})")
                    pending.append(tag)
        return resolved, pending

    def _relative_path(self, path: str, ns_array: list[str]) -> ua.RelativePath:
        rel = ua.RelativePath()
        for uri, name in parse_browse_path(path, self.spec.namespaces):
            if uri is None:
                index = 0
            else:
                try:
                    index = ns_array.index(uri)
                except ValueError:
                    raise LookupError(f"namespace {uri!r} is not on the server") from None
            element: Any = ua.RelativePathElement()  # its Boolean fields are not bool-typed
            element.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
            element.IsInverse = False
            element.IncludeSubtypes = True
            element.TargetName = ua.QualifiedName(name, index)
            rel.Elements.append(element)
        return rel

    async def _attach(
        self,
        session: _Session,
        resolved: dict[ua.NodeId, list[OpcUaTag]],
    ) -> list[Sample]:
        """Read each node once (a window never starts without a state), then monitor it.

        Returns the samples of the read; the caller delivers them outside any set-up
        timeout, so a slow consumer cannot make a healthy connect look failed.
        """
        samples: list[Sample] = []
        if not resolved:
            return samples
        nodeids = list(resolved)
        values = await self._read(session.client, nodeids)
        readable: list[ua.NodeId] = []
        for nodeid, dv in zip(nodeids, values, strict=True):
            status = dv.StatusCode
            if status is not None and status.value in _UNKNOWN_NODE:
                for tag in resolved[nodeid]:
                    self._report_missing(tag, f"node {nodeid.to_string()}: {status.name}")
                    session.pending.append(tag)
                continue
            readable.append(nodeid)
            received = now_ms()
            samples.extend(self._to_sample(tag, dv, received) for tag in resolved[nodeid])
        if not readable:
            return samples
        groups: dict[tuple[int, int, Deadband | None], list[ua.NodeId]] = {}
        for nodeid in readable:
            groups.setdefault(self._item_settings(resolved[nodeid][0]), []).append(nodeid)
        for (sampling, queue_size, deadband), nodeids in groups.items():
            handles = await self._monitor(session, nodeids, sampling, queue_size, deadband)
            retry: list[ua.NodeId] = []
            for nodeid, handle in zip(nodeids, handles, strict=True):
                if (isinstance(handle, ua.StatusCode) and deadband is not None
                        and handle.value in _FILTER_REFUSED):
                    self._report_filter_refused(resolved[nodeid][0], handle)
                    retry.append(nodeid)
                    continue
                self._record_item(session, resolved, nodeid, handle)
            if retry:
                handles = await self._monitor(session, retry, sampling, queue_size, None)
                for nodeid, handle in zip(retry, handles, strict=True):
                    self._record_item(session, resolved, nodeid, handle)
        return samples

    def _item_settings(self, tag: OpcUaTag) -> tuple[int, int, Deadband | None]:
        """Sampling interval, queue size and deadband of a tag's monitored item."""
        spec = self.spec
        deadband = tag.deadband
        if deadband is None and tag.value_map is None:
            deadband = spec.deadband
        if deadband is not None and deadband.value == 0 and deadband.kind == "absolute":
            deadband = None  # "any change": the default trigger, no filter needed
        sampling = (tag.sampling_interval_ms if tag.sampling_interval_ms is not None
                    else spec.sampling_interval_ms)
        queue_size = tag.queue_size if tag.queue_size is not None else spec.queue_size
        return sampling, queue_size, deadband

    async def _monitor(
        self,
        session: _Session,
        nodeids: list[ua.NodeId],
        sampling_ms: int,
        queue_size: int,
        deadband: Deadband | None,
    ) -> list[int | ua.StatusCode]:
        mfilter: ua.DataChangeFilter | None = None
        if deadband is not None:
            mfilter = ua.DataChangeFilter()
            mfilter.Trigger = ua.DataChangeTrigger.StatusValue
            mfilter.DeadbandType = ua.UInt32(ua.DeadbandType.Absolute
                                             if deadband.kind == "absolute"
                                             else ua.DeadbandType.Percent)
            mfilter.DeadbandValue = ua.Double(deadband.value)
        # The public subscribe_data_change takes no filter and deadband_monitor no
        # sampling interval; _subscribe is the one call that takes both.
        handles = await session.sub._subscribe(
            [session.client.get_node(n) for n in nodeids],
            AttributeIds.Value,
            mfilter,
            queue_size,
            ua.MonitoringMode.Reporting,
            ua.Double(sampling_ms),
        )
        assert isinstance(handles, list)
        return handles

    def _record_item(self, session: _Session, resolved: dict[ua.NodeId, list[OpcUaTag]],
                     nodeid: ua.NodeId, handle: int | ua.StatusCode) -> None:
        if isinstance(handle, ua.StatusCode):
            for tag in resolved[nodeid]:
                self._report_missing(tag, f"node {nodeid.to_string()}: {handle.name}")
                session.pending.append(tag)
            return
        session.by_node[nodeid] = resolved[nodeid]
        for tag in resolved[nodeid]:
            self._report_found(tag)

    def _report_filter_refused(self, tag: OpcUaTag, status: ua.StatusCode) -> None:
        key = (tag.device, tag.signal)
        if key not in self._filter_refused:
            self._filter_refused.add(key)
            log.warning("opcua %s: server refused the deadband of %s.%s (%s); monitoring "
                        "it without a deadband", self.name, tag.device, tag.signal, status.name)

    async def _read(self, client: Client, nodeids: list[ua.NodeId]) -> list[ua.DataValue]:
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for nodeid in nodeids:
            rv = ua.ReadValueId()
            rv.NodeId = nodeid
            rv.AttributeId = AttributeIds.Value
            params.NodesToRead.append(rv)
        result: list[ua.DataValue] = await client.uaclient.read(params)
        return result

    async def _retry_pending(self, session: _Session, sink: SampleSink) -> None:
        backoff = Backoff(self.spec.reconnect_min_s, self.spec.reconnect_max_s)
        while session.pending:
            await asyncio.sleep(backoff.next_delay())
            tags, session.pending = session.pending, []
            ns_array = await session.client.get_namespace_array()
            resolved, session.pending = await self._resolve(session.client, ns_array, tags)
            for sample in await self._attach(session, resolved):
                await self._emit(sink, sample)

    def _tag_problem(self, tag: OpcUaTag, reported: set[tuple[str, str]], detail: str) -> bool:
        return count_problem(self._stats.device(tag.device), reported, tag.device, tag.signal,
                             detail)

    def _report_missing(self, tag: OpcUaTag, reason: str) -> None:
        if self._tag_problem(tag, self._missing, reason):
            log.warning("opcua %s: %s.%s unavailable (%s); will retry",
                        self.name, tag.device, tag.signal, reason)

    def _report_found(self, tag: OpcUaTag) -> None:
        key = (tag.device, tag.signal)
        if key in self._missing:
            self._missing.discard(key)
            log.info("opcua %s: %s.%s found and subscribed", self.name, tag.device, tag.signal)

    # -- data path ----------------------------------------------------------------

    async def _watch(self, lost: asyncio.Event) -> None:
        await lost.wait()
        raise _ConnectionLost("connection lost")

    async def _pump(
        self, session: _Session, queue: _SampleQueue, resync: asyncio.Event, sink: SampleSink
    ) -> None:
        """Drain the library's queue into ours without ever awaiting the consumer."""
        # This loop runs once per notification: look-ups are hoisted out of it, and each
        # monitored item's tags are found once, keyed by the library's per-item record
        # (hashed by identity; a NodeId hashes and compares in Python code).
        by_node = session.by_node
        items: dict[object, list[tuple[OpcUaTag, _Seen]]] = {}
        to_sample, admit, seen_of = self._to_sample, self._admit, self._seen_of
        put, queued, resync_set = queue.put_nowait, queue.items, resync.is_set
        time_ns = time.time_ns
        # A sink that takes samples without waiting (asyncio.Queue: put_nowait and full)
        # gets them straight from here while nothing is queued in front of them, which
        # saves the hop through our queue and the forwarder; order is kept because
        # this path is only taken while our queue is empty.
        direct = getattr(sink, "put_nowait", None)
        sink_full = getattr(sink, "full", None)
        if not (callable(direct) and callable(sink_full)):
            direct = sink_full = None
        async for event in session.sub:
            if not isinstance(event, DataChangeEvent):
                if isinstance(event, StatusChangeEvent):
                    status = event.notification.Status
                    if status is not None and not status.is_good():
                        raise _ConnectionLost(f"subscription status {status.name}")
                continue
            data = event.data
            entries = items.get(data.subscription_data)
            # The first notification of an item repeats the current value, whose source
            # timestamp may be old; only later ones are live enough to show a skew.
            live = entries is not None
            if entries is None:
                tags = by_node.get(event.node.nodeid)
                if not tags:
                    continue  # not recorded yet (an item being attached): do not cache
                entries = [(tag, seen_of(tag.device, tag.signal)) for tag in tags]
                items[data.subscription_data] = entries
            received = time_ns() // 1_000_000
            dv = data.monitored_item.Value
            for tag, seen in entries:
                sample = to_sample(tag, dv, received, live)
                if direct is not None and not queued and not resync_set():
                    assert sink_full is not None
                    if not sink_full():
                        if admit(seen, sample):
                            direct(sample)
                        continue
                if len(queued) >= queue.maxsize:
                    self._count_overflow(tag.device)
                    resync.set()
                else:
                    put(sample)
        raise _ConnectionLost("subscription closed")

    async def _forward(
        self,
        session: _Session,
        queue: _SampleQueue,
        resync: asyncio.Event,
        sink: SampleSink,
    ) -> None:
        while True:
            if resync.is_set() and queue.empty():
                # Samples were dropped: deliver the current state of every node now.
                resync.clear()
                nodeids = list(session.by_node)
                if not nodeids:
                    continue
                values = await self._read(session.client, nodeids)
                received = now_ms()
                for nodeid, dv in zip(nodeids, values, strict=True):
                    for tag in session.by_node[nodeid]:
                        await self._emit(sink, self._to_sample(tag, dv, received))
                continue
            sample = queue.get_nowait() if not queue.empty() else await queue.get()
            await self._emit(sink, sample)

    def _count_skew(self, tag: OpcUaTag, offset_ms: int) -> None:
        self._stats.clock_skew += 1
        health = self._stats.device(tag.device)
        health.clock_skew += 1
        health.clock_offset_ms = offset_ms
        if tag.device not in self._skewed:
            self._skewed.add(tag.device)
            log.warning("opcua %s: %s clock is off by %+.1f s (source timestamp minus receive "
                        "time, threshold %.1f s); %s", self.name, tag.device, offset_ms / 1000,
                        self.spec.max_clock_skew_s,
                        "stamping its samples with the receive time"
                        if self.spec.clock_skew_action == "receive"
                        else "keeping its timestamps, counting each skewed sample")

    def _skew_cleared(self, device: str, offset_ms: int) -> None:
        self._skewed.discard(device)
        self._stats.device(device).clock_offset_ms = offset_ms
        log.info("opcua %s: %s clock is within %.1f s again", self.name, device,
                 self.spec.max_clock_skew_s)

    def _library_overflow(self) -> None:
        self._stats.overflows += 1

    def _count_overflow(self, device: str) -> None:
        self._stats.overflows += 1
        health = self._stats.device(device)
        if health.overflows == 0:
            log.warning("opcua %s: sample queue full (%d); dropping newest samples of %s "
                        "and re-reading once drained", self.name, self._queue_maxsize, device)
        health.overflows += 1

    async def _emit(self, sink: SampleSink, sample: Sample) -> None:
        if self._accept(sample):
            await sink.put(sample)

    def _accept(self, sample: Sample) -> bool:
        """Drop stale and repeated samples, count the rest; True if it is to be delivered."""
        return self._admit(self._seen_of(sample.device, sample.signal), sample)

    def _seen_of(self, device: str, signal: str) -> _Seen:
        key = (device, signal)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(self._stats.device(device))
        return seen

    def _admit(self, seen: _Seen, sample: Sample) -> bool:
        ts = sample.ts_ms
        if ts <= seen.ts_ms:
            if ts < seen.ts_ms:
                self._stats.stale_dropped += 1
                return False
            if sample.value == seen.value and sample.quality == seen.quality:
                return False  # the same value seen twice (initial read and first notification)
        seen.ts_ms, seen.value, seen.quality = ts, sample.value, sample.quality
        health = seen.health
        health.samples += 1
        health.last_sample_ms = ts
        return True

    def _to_sample(self, tag: OpcUaTag, dv: ua.DataValue, received_ms: int,
                   live: bool = False) -> Sample:
        status = dv.StatusCode
        variant = dv.Value
        source = cast(datetime | None, dv.SourceTimestamp)
        if (tag.plain and variant is not None and source is not None
                and source.tzinfo is UTC and (status is None or status.value == 0)):
            # Fast path, the common case: good status, aware source timestamp, unmapped.
            src_ms: int = (source - _EPOCH) // _MS
            if src_ms > 0:
                offset = src_ms - received_ms
                if not self._skew_ms or (-self._skew_ms <= offset <= self._skew_ms
                                         and not self._skewed):
                    raw = variant.Value
                    value = raw if type(raw) in _SIMPLE else _plain_value(raw)
                    return Sample(src_ms, tag.device, tag.signal, value, "good", "source")
        ts_source = "source"
        ts = _ms(dv.SourceTimestamp)
        if ts is None:
            ts, ts_source = _ms(dv.ServerTimestamp), "server"
        if ts is None:
            ts, ts_source = received_ms, "receive"
        elif self._skew_ms:
            offset = ts - received_ms
            if offset > self._skew_ms or (live and -offset > self._skew_ms):
                self._count_skew(tag, offset)
                if self.spec.clock_skew_action == "receive":
                    ts, ts_source = received_ms, "receive"
            elif self._skewed and tag.device in self._skewed and (live or offset > 0):
                self._skew_cleared(tag.device, offset)
        quality = _quality(dv.StatusCode)
        raw = dv.Value.Value if dv.Value is not None else None
        value = _plain_value(raw)
        if tag.value_map is not None and value is not None:
            mapped = tag.value_map.get(str(value))
            if mapped is None:
                if self._tag_problem(tag, self._unmapped,
                                     f"raw value {value!r} is not in value_map"):
                    log.warning("opcua %s: %s.%s raw value %r is not in value_map",
                                self.name, tag.device, tag.signal, value)
                return Sample(ts, tag.device, tag.signal, str(value), "bad", ts_source)
            self._unmapped.discard((tag.device, tag.signal))
            value = mapped
        elif not tag.plain and isinstance(value, int | float):
            value = value * tag.scale + tag.offset
        return Sample(ts, tag.device, tag.signal, value, quality, ts_source)

