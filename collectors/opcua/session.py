"""The OPC UA collector: one client session, one subscription, reconnects.

Subscribes (never polls) to every configured node of one server and forwards each data
change as a :class:`Sample` (converted by :mod:`collectors.opcua.convert`, filtered by
:mod:`collectors.opcua.dedup`).

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

Security is set up per connect by :func:`collectors.opcua.endpoint.secure_client`; an
untrusted server certificate is refused before the session is created, so credentials
are never sent to it. When the server refuses the agent's certificate instead, the
failed handshake (the request under way is tracked through the client's observer)
becomes one line saying so, naming the certificate file, its application URI and
thumbprints. Failures are logged once per failing streak and kind (unavailable, server
not trusted, certificate refused), the recovery once.

Notifications pass through a bounded queue. When it is full the newest sample is
dropped and counted per device; once the queue has drained, every node is read again
so the latest state is delivered anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
from asyncua.ua.uaerrors import UaError

from collectors.base import (
    SIGNAL_OK,
    SIGNAL_PENDING,
    Backoff,
    CollectorStats,
    NonBlockingSink,
    RawTap,
    SampleSink,
    SignalStatus,
    StatsView,
    count_problem,
    now_ms,
)
from collectors.opcua import security as sec
from collectors.opcua.clock import ClockSkew
from collectors.opcua.convert import SampleConverter
from collectors.opcua.dedup import Dedup, Seen
from collectors.opcua.endpoint import secure_client, server_trust
from collectors.opcua.logs import quiet_asyncua_logs
from collectors.opcua.profile import Expansion, ProfileSink, expand, relative_path
from collectors.opcua.spec import (
    Deadband,
    OpcUaSourceSpec,
    OpcUaTag,
    parse_browse_path,
    parse_node,
    validate,
)
from rules.errors import ConfigError, DeviceError
from rules.types import Sample

__all__ = ["OpcUaCollector"]

log = logging.getLogger(__name__)

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


def _plain(nodeid: ua.NodeId) -> ua.NodeId:
    """An ExpandedNodeId (browse results) as the plain NodeId notifications carry."""
    return ua.NodeId(nodeid.Identifier, nodeid.NamespaceIndex, nodeid.NodeIdType)


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


@dataclass(slots=True)
class _Session:
    client: Client
    sub: Subscription
    by_node: dict[ua.NodeId, list[OpcUaTag]] = field(default_factory=dict)
    pending: list[OpcUaTag] = field(default_factory=list)
    keepalive_s: float = 0.0
    """How long the server may stay silent (no change) before it sends a keep-alive."""
    handles: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    """Client handles of the monitored items, unique within the subscription."""
    item_ids: dict[ua.NodeId, int] = field(default_factory=dict)
    """The server's id of each node's monitored item, to delete it again."""
    profile_tags: dict[str, list[OpcUaTag]] = field(default_factory=dict)
    """Per profile machine, the tags its expansion gave in this session."""
    ns_array: list[str] = field(default_factory=list)


def _item_request(nodeid: ua.NodeId, handle: int, sampling_ms: int, queue_size: int,
                  mfilter: ua.DataChangeFilter | None) -> ua.MonitoredItemCreateRequest:
    """A monitored item on a node's value, as asyncua's subscribe calls build it: reporting,
    discarding the oldest value when the server-side queue is full."""
    params = ua.MonitoringParameters()
    params.ClientHandle = ua.UInt32(handle)
    params.SamplingInterval = ua.Double(sampling_ms)
    params.QueueSize = ua.UInt32(queue_size)
    params.DiscardOldest = True
    if mfilter is not None:
        params.Filter = mfilter
    item = ua.ReadValueId()
    item.NodeId = nodeid
    item.AttributeId = ua.UInt32(AttributeIds.Value)
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = item
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


class OpcUaCollector(StatsView):
    """Collects every tag of one OPC UA server through one subscription.

    Device health: all devices of the source share the connection state; a tag whose
    node is unknown is logged once, counted as an error of its device, ``unresolved``
    in the stats' signals, and retried (with backoff) while the session lasts and again
    at every reconnect.
    """

    def __init__(self, spec: OpcUaSourceSpec, *, queue_maxsize: int = 10000) -> None:
        if queue_maxsize <= 0:
            raise ValueError("queue_maxsize must be > 0: the queue has to be bounded")
        validate(spec)
        self.spec = spec
        self.name = spec.id
        self._queue_maxsize = queue_maxsize
        self._stats = CollectorStats(name=spec.id)
        for tag in spec.tags:
            self._stats.device(tag.device)
            self._stats.signals[(tag.device, tag.signal)] = SIGNAL_PENDING
        for prof in spec.profiles:
            self._stats.device(prof.device)
            for role in prof.roles:
                self._stats.signals[(prof.device, role)] = SIGNAL_PENDING
        # A profile machine's inputs become its state here; a job change re-expands it.
        self._profiles = ProfileSink(self._job_changed) if spec.profiles else None
        self._refollow: set[str] = set()
        self._refollow_wake: asyncio.Event | None = None
        self._dedup = Dedup(self._stats)
        self._missing: set[tuple[str, str]] = set()
        self._down_since_ms: int | None = None
        self._down_logged: set[type[DeviceError]] = set()
        self._cert: sec.CertInfo | None = None
        self._trust = server_trust(spec)
        self._convert = SampleConverter(
            self._stats, ClockSkew(spec.max_clock_skew_s, spec.clock_skew_action), self)
        self._filter_refused: set[tuple[str, str]] = set()
        asyncua_log = logging.getLogger("asyncua")
        if asyncua_log.level == logging.NOTSET:
            # Its INFO level dumps every publish result.
            asyncua_log.setLevel(logging.WARNING)
        quiet_asyncua_logs()

    @property
    def raw_tap(self) -> RawTap | None:
        """Sees each value before scale, offset and map (``edge-agent test``)."""
        return self._convert.tap

    @raw_tap.setter
    def raw_tap(self, tap: RawTap | None) -> None:
        self._convert.tap = tap

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, sink: SampleSink) -> None:
        """Connect, subscribe and forward until cancelled; reconnect on any loss."""
        backoff = Backoff(self.spec.reconnect_min_s, self.spec.reconnect_max_s)
        if self._profiles is not None:
            sink = self._profiles.wrap(sink)
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
                    if self.spec.profiles:
                        tg.create_task(self._follow_profiles(session, sink))
            except* Exception as group:
                first = group.exceptions[0]
                if not isinstance(first, _ConnectionLost | OSError | TimeoutError | UaError):
                    log.warning("opcua %s: session ended by %r", self.name, first,
                                exc_info=first)
                raise DeviceError(f"{self.spec.url}: {first}") from first
        finally:
            await self._close(client, connected)

    async def _secure(self, client: Client) -> None:
        """The client certificate (created on first use) and the trusted, pinned server
        certificate, by the one set-up ``edge-agent browse`` uses too."""
        spec = self.spec
        if self._cert is None:
            try:
                self._cert = await asyncio.to_thread(
                    sec.ensure_client_certificate, spec.pki_dir or Path("."),
                    spec.application_uri, cert_path=spec.certificate,
                    key_path=spec.private_key)
            except ConfigError as err:
                raise DeviceError(f"client certificate: {err}") from err
        await secure_client(client, spec, self._cert, self._trust)

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
        session = _Session(client, sub, ns_array=ns_array)
        session.keepalive_s = await self._revised_keepalive_s(sub, params)
        tags = list(self.spec.tags)
        for prof in self.spec.profiles:
            tags += session.profile_tags.setdefault(prof.device, await self._expand(
                session, prof.device))
        resolved, session.pending = await self._resolve(client, ns_array, tags)
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
        failing = SignalStatus("failing", str(err))
        signals = self._stats.signals
        for key, status in signals.items():
            if status.state != "unresolved":
                signals[key] = failing

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
                    nodeid = parse_node(tag.node, ns_array)
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
        return relative_path(parse_browse_path(path, self.spec.namespaces), ns_array)

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
        to_sample = self._convert.to_sample
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
            samples.extend(to_sample(tag, dv, received) for tag in resolved[nodeid])
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
        # subscribe_data_change takes no filter and deadband_monitor no sampling
        # interval; create_monitored_items, asyncua's public low-level call, takes
        # requests with both (and keeps them for its own recreate of the subscription).
        return await session.sub.create_monitored_items(
            _item_request(nodeid, next(session.handles), sampling_ms, queue_size, mfilter)
            for nodeid in nodeids)

    def _record_item(self, session: _Session, resolved: dict[ua.NodeId, list[OpcUaTag]],
                     nodeid: ua.NodeId, handle: int | ua.StatusCode) -> None:
        if isinstance(handle, ua.StatusCode):
            for tag in resolved[nodeid]:
                self._report_missing(tag, f"node {nodeid.to_string()}: {handle.name}")
                session.pending.append(tag)
            return
        session.by_node[nodeid] = resolved[nodeid]
        session.item_ids[nodeid] = handle
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

    # -- profiles -----------------------------------------------------------------

    def _job_changed(self, device: str) -> None:
        self._refollow.add(device)
        if self._refollow_wake is not None:
            self._refollow_wake.set()

    async def _expand(self, session: _Session, device: str) -> list[OpcUaTag]:
        """The tags of a profile machine now; what the server lacks is reported (once per
        episode) and left for :meth:`_follow_profiles` to look for again."""
        prof = next(p for p in self.spec.profiles if p.device == device)
        try:
            exp = await expand(session.client, session.ns_array, prof, self.spec.namespaces)
        except LookupError as err:
            exp = Expansion(device, missing=dict.fromkeys(prof.roles, str(err)), settled=False)
        assert self._profiles is not None
        self._profiles.configure(exp)
        for role in sorted(prof.roles):
            reason = exp.missing.get(role)
            if reason is not None:
                self._stats.set_signal(device, role, SignalStatus(
                    "unresolved", f"profile {prof.profile}: {reason}"))
                if count_problem(self._stats.device(device), self._missing, device, role,
                                 f"profile {prof.profile}: {reason}"):
                    log.warning("opcua %s: %s.%s unavailable (profile %s: %s); will retry",
                                self.name, device, role, prof.profile, reason)
                continue
            if role == "state":  # its inputs are subscribed with the other tags
                self._stats.set_signal(device, role, SIGNAL_OK)
            if (device, role) in self._missing:
                self._missing.discard((device, role))
                log.info("opcua %s: %s.%s found (profile %s)", self.name, device, role,
                         prof.profile)
        if exp.missing or not exp.settled:
            self._refollow.add(device)
        return exp.tags

    async def _follow_profiles(self, session: _Session, sink: SampleSink) -> None:
        """Expand a profile machine again when its active job changed, and retry (with
        backoff) one whose roles or job were not found; only its changed tags move."""
        wake = self._refollow_wake = asyncio.Event()
        backoff = Backoff(self.spec.reconnect_min_s, self.spec.reconnect_max_s)
        try:
            while True:
                if self._refollow:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff.next_delay()):
                            await wake.wait()
                else:
                    backoff.reset()
                    await wake.wait()
                wake.clear()
                devices, self._refollow = self._refollow, set()
                for device in sorted(devices):
                    await self._swap(session, sink, device, await self._expand(session, device))
        finally:
            self._refollow_wake = None

    async def _swap(self, session: _Session, sink: SampleSink, device: str,
                    tags: list[OpcUaTag]) -> None:
        old = session.profile_tags.get(device, [])
        session.profile_tags[device] = tags
        gone = [t for t in old if t not in tags]
        added = [t for t in tags if t not in old]
        session.pending = [t for t in session.pending if t not in gone]
        for nodeid, listed in list(session.by_node.items()):
            kept = [t for t in listed if t not in gone]
            if len(kept) == len(listed):
                continue
            if kept:
                session.by_node[nodeid] = kept
                continue
            del session.by_node[nodeid]
            item = session.item_ids.pop(nodeid, None)
            if item is not None:
                try:
                    await session.sub.unsubscribe(item)
                except UaError as err:
                    log.debug("opcua %s: delete monitored item: %r", self.name, err)
        resolved, pending = await self._resolve(session.client, session.ns_array, added)
        session.pending += pending
        for sample in await self._attach(session, resolved):
            await self._emit(sink, sample)

    def _tag_problem(self, tag: OpcUaTag, reported: set[tuple[str, str]], detail: str) -> bool:
        return count_problem(self._stats.device(tag.device), reported, tag.device, tag.signal,
                             detail)

    def _report_missing(self, tag: OpcUaTag, reason: str) -> None:
        self._stats.set_signal(tag.device, tag.signal, SignalStatus("unresolved", reason))
        if self._tag_problem(tag, self._missing, reason):
            log.warning("opcua %s: %s.%s unavailable (%s); will retry",
                        self.name, tag.device, tag.signal, reason)

    def _report_found(self, tag: OpcUaTag) -> None:
        key = (tag.device, tag.signal)
        if key not in self._convert.bad:  # a bad first value keeps it failing
            self._stats.signals[key] = SIGNAL_OK
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
        items: dict[object, list[tuple[OpcUaTag, Seen]]] = {}
        to_sample = self._convert.to_sample
        admit, seen_of = self._dedup.admit, self._dedup.seen_of
        put, queued, resync_set = queue.put_nowait, queue.items, resync.is_set
        time_ns = time.time_ns
        # A sink that takes samples without waiting (an asyncio.Queue) gets them
        # straight from here while nothing is queued in front of them, which saves the
        # hop through our queue and the forwarder; order is kept because this path is
        # only taken while our queue is empty.
        direct: Callable[[Sample], None] | None = None
        sink_full: Callable[[], bool] | None = None
        if isinstance(sink, NonBlockingSink):
            direct, sink_full = sink.put_nowait, sink.full
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
                        await self._emit(sink, self._convert.to_sample(tag, dv, received))
                continue
            sample = queue.get_nowait() if not queue.empty() else await queue.get()
            await self._emit(sink, sample)

    # -- what the converter reports (ConversionLog) -------------------------------

    def clock_skewed(self, device: str, offset_ms: int) -> None:
        """Log the start of a clock-skew episode of ``device``."""
        log.warning("opcua %s: %s clock is off by %+.1f s (source timestamp minus receive "
                    "time, threshold %.1f s); %s", self.name, device, offset_ms / 1000,
                    self.spec.max_clock_skew_s,
                    "stamping its samples with the receive time"
                    if self.spec.clock_skew_action == "receive"
                    else "keeping its timestamps, counting each skewed sample")

    def clock_ok(self, device: str) -> None:
        """Log the end of a clock-skew episode of ``device``."""
        log.info("opcua %s: %s clock is within %.1f s again", self.name, device,
                 self.spec.max_clock_skew_s)

    def unmapped(self, tag: OpcUaTag, value: object) -> None:
        """Log a raw value missing from ``tag``'s value map (once per episode)."""
        log.warning("opcua %s: %s.%s raw value %r is not in value_map",
                    self.name, tag.device, tag.signal, value)

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
        if self._dedup.accept(sample):
            await sink.put(sample)
