"""Where the ingest's points go: a small seam, the replacement rules, and InfluxDB.

The service only knows :class:`PointSink`; unit tests plug in a fake, production uses
:class:`InfluxSink`, which wraps influxdb-client's SYNCHRONOUS write API. The background
batching write API is deliberately not used: it loses buffered points on a crash and drops
a batch after its own retries, while the ingest must hold the MQTT acknowledgements until
InfluxDB has accepted the data and decides itself how long to retry.

Whole-record replacement
------------------------
A KPI record written again under the same key (tags + window end) must leave exactly the
newer record stored. InfluxDB does not do that by itself: it merges the fields of two
points with the same key, and a null field is simply absent from a point, so a rewrite in
which ``oee`` became null would keep the older ``oee``. So before writing a batch, the
ingest (see :func:`plan_writes`):

1. reads the stored points of the batch's ``kpi`` keys, in one InfluxQL request per
   batch (one ``SELECT`` per distinct window end, as InfluxQL cannot OR time conditions);
2. refuses a record that observed less of its window (``observed_s``) than the stored
   one, by more than a millisecond: it is dead-lettered as ``less_complete_than_stored``
   (an agent that lost its checkpoint, or a second agent started later, must not replace
   a more complete record). A tie or more replaces. ``observed_s`` unknown (a record or
   point of an agent from before the field) counts as 0 s: such a record never replaces
   one that reports its observed time, and among themselves the newer wins, as before.
   At the same ``observed_s``, a copy still flagged ``energy_pending`` never replaces a
   stored ``revised`` copy of its window (the revision arrived first, e.g. a re-published
   dead letter): it is refused the same way;
3. deletes every stored point that has a field the new record lacks, then writes. A
   stored point whose fields the new record all has is simply overwritten.

Within one batch the same rules apply in arrival order; a record superseded by a later
one of the same batch is not written at all (it counts as written).

How the delete is done depends on the server (its ``X-Influxdb-Version``): InfluxDB 1.x
takes an InfluxQL ``DELETE FROM kpi WHERE <tags> AND time = <t>`` (1.8 has no
``/api/v2/delete``); note that a 1.x ``DELETE`` acts on every retention policy of the
database. InfluxDB 2.x takes ``/api/v2/delete`` with a tag predicate and a one-millisecond
range, one request per point. Either matches by tags, so a series another writer added to
``kpi`` with the same tags plus others would go too: the measurement is the ingest's own.
InfluxDB 3 has no way to delete one point, so there a record that would need it is
dead-lettered as ``cannot_replace_stored`` instead of being merged.
The read uses InfluxQL's ``/query``, which 1.8 serves natively, 2.x through its v1
compatibility API (the bucket's DBRP mapping: ``db/rp`` buckets, or a bucket's name with
its default policy) and 3.x natively. The token therefore needs read as well as write
access to the bucket (deletes count as writes).

Cost: one extra query per batch (cheap: it touches only the batch's series at the batch's
window ends), and a delete only for the rare rewrite with fewer fields; a plain replay of
the same record needs none.

Race: the read, the delete and the write are three requests, not a transaction. Two
ingests writing the same key at the same moment (a shared subscription group that hands
two versions of one record to two processes within a few milliseconds) can still merge
fields or let the less complete one win. The two versions of a record normally arrive
minutes apart (an agent restart), which makes this unlikely; where it matters, run one
ingest per site or use a broker whose shared subscriptions hash by topic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from agent.config.common import InfluxSettings
from agent.ingest.deadletter import CANNOT_REPLACE, LESS_COMPLETE
from agent.ingest.points import KPI_MEASUREMENT, FieldValue, InfluxPoint, PointKey
from agent.ingest.schema import OBSERVED_FIELD
from rules.errors import DeliveryError
from rules.revisions import ENERGY_PENDING, REVISED
from rules.types import ms_to_rfc3339

__all__ = [
    "BAD_DATA_STATUSES",
    "CONFIG_STATUSES",
    "DOWNGRADE_SLACK_S",
    "DeleteUnsupported",
    "InfluxSink",
    "PointSink",
    "StoredFields",
    "WriteError",
    "WritePlan",
    "classify_status",
    "describe_key",
    "flavour_of",
    "influxql_delete",
    "influxql_select",
    "plan_writes",
    "v2_delete_predicate",
]

log = logging.getLogger("agent.ingest")

BAD_DATA_STATUSES = frozenset({400, 413, 422})
"""Answers that blame the data: the batch is split to find (and dead-letter) the culprits."""

CONFIG_STATUSES = frozenset({401, 403, 404})
"""Answers that blame the setup (token, permissions, missing bucket or database), not the
data: every point would be refused alike, so the ingest holds its acks and retries until an
operator fixes it, instead of emptying the stream into the dead-letter file."""

DOWNGRADE_SLACK_S: Final = 0.001
"""A record is less complete than the stored one only if it observed this much less:
two computations of the same window may differ in the last float digit."""

FLAGS_FIELD: Final = "flags"
"""The field holding a record's flags, comma-separated (see :mod:`agent.ingest.points`)."""

StoredFields = Mapping[str, FieldValue]
"""The fields of one stored point (InfluxDB has no nulls: absent means not stored)."""

Flavour = Literal["influxql", "v2", "none"]


class WriteError(DeliveryError):
    """A failed write: ``retryable`` says whether trying the same batch again can succeed.

    ``status`` is the HTTP status when the database answered (None for connection errors);
    ``bad_data`` marks answers that blame the points themselves (400, 413, 422), which the
    service bisects to find the bad points, as opposed to 401/403/404 (``config_problem``)
    that blame the configuration and reject every point alike: those are an outage to
    wait out, not bad data.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status

    @property
    def bad_data(self) -> bool:
        """True when the database rejected the content of the batch."""
        return self.status in BAD_DATA_STATUSES

    @property
    def config_problem(self) -> bool:
        """True when the database refused because of the setup (auth, missing database)."""
        return self.status in CONFIG_STATUSES


class DeleteUnsupported(WriteError):
    """The database cannot delete a single point (InfluxDB 3): whole-record replacement
    is impossible there, so the records that need it are dead-lettered."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def classify_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying with the same batch.

    429 and 5xx are transient; 401/403/404 last until the configuration or the database is
    fixed, which is an outage too. Other 4xx (400, 413, 422 ...) blame the request itself.
    """
    return status == 429 or status >= 500 or status in CONFIG_STATUSES


class PointSink(Protocol):
    """Stores points; the calls are the steps of a whole-record replacement.

    Every method raises :class:`DeliveryError` (normally :class:`WriteError`) when it did
    not complete; each may be repeated, as points are keyed and overwrite. Called from a
    worker thread, one call at a time.
    """

    def read_stored(self, keys: Sequence[PointKey]) -> dict[PointKey, StoredFields]:
        """The stored fields of those ``keys`` (all ``kpi``) that have a point."""

    def delete(self, keys: Sequence[PointKey]) -> None:
        """Delete the stored points of ``keys``; :class:`DeleteUnsupported` if impossible."""

    def write(self, points: Sequence[InfluxPoint]) -> None:
        """Store ``points`` or raise :class:`DeliveryError`."""

    def close(self) -> None:
        """Release connections."""


# ------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class WritePlan:
    """What to do with one batch of points, by index into the batch.

    ``write`` in arrival order; ``delete`` the stored points to remove first; ``refused``
    index -> (dead-letter code, reason); ``superseded`` points replaced by a later point
    of the same batch before ever being written.
    """

    write: tuple[int, ...]
    delete: tuple[PointKey, ...] = ()
    refused: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    superseded: tuple[int, ...] = ()
    needs_delete: Mapping[PointKey, int] = field(default_factory=dict)
    """For each key in ``delete``, the index of the point that replaces it."""

    def without_deletes(self, reason: str) -> WritePlan:
        """The plan when deleting is impossible: the replacing points are refused."""
        blocked = set(self.needs_delete.values())
        refused = dict(self.refused)
        for index in blocked:
            refused[index] = (CANNOT_REPLACE, reason)
        return WritePlan(write=tuple(i for i in self.write if i not in blocked),
                         refused=refused, superseded=self.superseded)


def _observed(fields: StoredFields | None) -> float:
    value = None if fields is None else fields.get(OBSERVED_FIELD)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value)


def _flagged(fields: StoredFields, flag: str) -> bool:
    value = fields.get(FLAGS_FIELD)
    return isinstance(value, str) and flag in value.split(",")


def describe_key(key: PointKey) -> str:
    """``site/line/machine window ending T`` for log lines and dead-letter reasons."""
    _, tags, time_ms = key
    t = dict(tags)
    ids = "/".join(t.get(k, "?") for k in ("site", "line", "machine"))
    return f"{ids} {t.get('window', '?')} window ending {ms_to_rfc3339(time_ms)}"


def plan_writes(points: Sequence[InfluxPoint],
                stored: Mapping[PointKey, StoredFields]) -> WritePlan:
    """Decide which points to write, which stored ones to delete first, which to refuse.

    Pure: ``stored`` is what :meth:`PointSink.read_stored` returned for the batch's
    ``kpi`` keys. Points of other measurements are written as they are.
    """
    by_key: dict[PointKey, list[int]] = {}
    passthrough: list[int] = []
    for i, point in enumerate(points):
        if point.measurement == KPI_MEASUREMENT:
            by_key.setdefault(point.key, []).append(i)
        else:
            passthrough.append(i)
    write = list(passthrough)
    delete: list[PointKey] = []
    needs_delete: dict[PointKey, int] = {}
    refused: dict[int, tuple[str, str]] = {}
    superseded: list[int] = []
    for key, indices in by_key.items():
        old = stored.get(key)
        current: StoredFields | None = old
        winner: int | None = None
        for i in indices:
            new_obs, have_obs = _observed(points[i].fields), _observed(current)
            where = "stored" if winner is None else "received earlier"
            if current is not None and new_obs < have_obs - DOWNGRADE_SLACK_S:
                refused[i] = (LESS_COMPLETE, (
                    f"KPI record {describe_key(key)} observed {new_obs:g} s of its window, "
                    f"the one {where} {have_obs:g} s: a less complete record never "
                    "replaces a more complete one"))
                continue
            if (current is not None and new_obs <= have_obs + DOWNGRADE_SLACK_S
                    and _flagged(points[i].fields, ENERGY_PENDING)
                    and _flagged(current, REVISED)):
                refused[i] = (LESS_COMPLETE, (
                    f"KPI record {describe_key(key)} still waits for its closing meter "
                    f"reading ({ENERGY_PENDING}), the one {where} is already {REVISED} "
                    "with it: an earlier copy never replaces its revision"))
                continue
            if winner is not None:
                superseded.append(winner)
            winner, current = i, points[i].fields
        if winner is None:
            continue
        write.append(winner)
        if old is not None and set(old) - set(points[winner].fields):
            delete.append(key)
            needs_delete[key] = winner
    return WritePlan(write=tuple(sorted(write)), delete=tuple(delete), refused=refused,
                     superseded=tuple(superseded), needs_delete=needs_delete)


# ------------------------------------------------------------------ query builders


def _ql_string(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ql_tags(tags: Sequence[tuple[str, str]]) -> str:
    return " AND ".join(f"{_ql_ident(k)} = {_ql_string(v)}" for k, v in tags)


def influxql_select(keys: Sequence[PointKey]) -> str:
    """One ``SELECT`` per distinct time (InfluxQL cannot OR time conditions), ``;``-joined.

    ``GROUP BY *`` returns tags apart from fields, so a series with an extra tag is told
    apart from the key's own.
    """
    by_time: dict[tuple[str, int], list[tuple[tuple[str, str], ...]]] = {}
    for measurement, tags, time_ms in keys:
        by_time.setdefault((measurement, time_ms), []).append(tags)
    statements = []
    for (measurement, time_ms), tag_sets in by_time.items():
        series = " OR ".join(f"({_ql_tags(t)})" for t in dict.fromkeys(tag_sets))
        statements.append(f"SELECT * FROM {_ql_ident(measurement)} WHERE time = {time_ms}ms "
                          f"AND ({series}) GROUP BY *")
    return "; ".join(statements)


def influxql_delete(keys: Sequence[PointKey]) -> str:
    """``DELETE`` statements (InfluxDB 1.x), one per key, ``;``-joined."""
    return "; ".join(
        f"DELETE FROM {_ql_ident(measurement)} WHERE {_ql_tags(tags)} AND time = {time_ms}ms"
        for measurement, tags, time_ms in keys)


def _predicate_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def v2_delete_predicate(key: PointKey) -> tuple[str, str, str]:
    """``(start, stop, predicate)`` of the ``/api/v2/delete`` request for one point.

    Points are written with millisecond precision, so the range [t, t + 999 999 ns]
    holds the point and nothing else, whether the server takes ``stop`` as inclusive or
    not.
    """
    measurement, tags, time_ms = key
    predicate = " AND ".join([f"_measurement={_predicate_string(measurement)}",
                              *(f"{k}={_predicate_string(v)}" for k, v in tags)])
    start = ms_to_rfc3339(time_ms).removesuffix("Z") + "000000Z"
    stop = ms_to_rfc3339(time_ms).removesuffix("Z") + "999999Z"
    return start, stop, predicate


def flavour_of(version: str) -> Flavour:
    """How to delete a point on a server reporting ``version`` (``X-Influxdb-Version``).

    1.x, and "unknown" (what a 1.x built from source reports), take InfluxQL; 2.x the
    v2 delete API; 3.x cannot delete single points.
    """
    text = version.strip().lower().removeprefix("v")
    major = text.split(".", 1)[0]
    if major == "2":
        return "v2"
    if major.isdigit() and int(major) >= 3:
        return "none"
    return "influxql"


# ------------------------------------------------------------------- InfluxDB


class InfluxSink:
    """InfluxDB through influxdb-client: v2 write API (2.x, 3.x, 1.8+), InfluxQL reads,
    and the server's own way of deleting a point (see the module docstring)."""

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.settings = settings
        # retries=False: urllib3 must not retry behind our back; the service owns retry.
        self._client: Any = InfluxDBClient(
            url=settings.url, token=settings.token_value(), org=settings.org,
            timeout=int(settings.timeout_s * 1000), retries=False,
        )
        self._write_api: Any = self._client.write_api(write_options=SYNCHRONOUS)
        self._flavour: Flavour | None = None
        database, _, policy = settings.bucket.partition("/")
        self._db_params = [("db", database)] + ([("rp", policy)] if policy else [])

    def write(self, points: Sequence[InfluxPoint]) -> None:
        """One HTTP write of all ``points`` (ms precision); errors become :class:`WriteError`."""
        if not points:
            return
        from influxdb_client.domain.write_precision import WritePrecision

        body = [p.to_line_protocol() for p in points]
        with _translated(self.settings.url, "the write"):
            self._write_api.write(
                bucket=self.settings.bucket, org=self.settings.org, record=body,
                write_precision=WritePrecision.MS,
            )

    def read_stored(self, keys: Sequence[PointKey]) -> dict[PointKey, StoredFields]:
        """The stored fields of ``keys``, by one InfluxQL ``/query`` request."""
        if not keys:
            return {}
        wanted = set(keys)
        results = self._influxql(influxql_select(keys), "the read before writing")
        found: dict[PointKey, StoredFields] = {}
        for result in results:
            for series in result.get("series", []):
                measurement = str(series.get("name", ""))
                tags = tuple(sorted((str(k), str(v)) for k, v in
                                    (series.get("tags") or {}).items() if v != ""))
                columns = series.get("columns", [])
                for values in series.get("values", []):
                    row = dict(zip(columns, values, strict=False))
                    time_ms = row.pop("time", None)
                    if not isinstance(time_ms, int):
                        continue
                    key = (measurement, tags, time_ms)
                    if key in wanted:
                        found[key] = {k: v for k, v in row.items() if v is not None}
        return found

    def delete(self, keys: Sequence[PointKey]) -> None:
        """Delete the stored points of ``keys`` the way this server allows."""
        if not keys:
            return
        flavour = self._server_flavour()
        if flavour == "influxql":
            self._influxql(influxql_delete(keys), "the delete before a replacing write")
        elif flavour == "v2":
            api = self._client.delete_api()
            for key in keys:
                start, stop, predicate = v2_delete_predicate(key)
                with _translated(self.settings.url, "the delete before a replacing write"):
                    api.delete(start, stop, predicate, bucket=self.settings.bucket,
                               org=self.settings.org)
        else:
            raise DeleteUnsupported(
                f"InfluxDB at {self.settings.url} cannot delete a single point (InfluxDB 3), "
                "so the stored version cannot be replaced whole")

    def close(self) -> None:
        """Close the write API and the HTTP client."""
        try:
            self._write_api.close()
        finally:
            self._client.close()

    def _server_flavour(self) -> Flavour:
        if self._flavour is None:
            with _translated(self.settings.url, "the version check"):
                version = str(self._client.version())
            self._flavour = flavour_of(version)
            log.info("InfluxDB at %s reports version %s: replacing points with %s",
                     self.settings.url, version, {
                         "influxql": "InfluxQL DELETE", "v2": "/api/v2/delete",
                         "none": "nothing (InfluxDB 3 cannot delete single points)",
                     }[self._flavour])
        return self._flavour

    def _influxql(self, statement: str, what: str) -> list[dict[str, Any]]:
        """POST ``/query``; every statement's error becomes a :class:`WriteError`."""
        with _translated(self.settings.url, what):
            response = self._client.api_client.call_api(
                "/query", "POST", query_params=[*self._db_params, ("epoch", "ms")],
                header_params={"Content-Type": "application/x-www-form-urlencoded",
                               "Accept": "application/json"},
                post_params=[("q", statement)], response_type=None, auth_settings=[],
                _return_http_data_only=True, _preload_content=False,
            )
            raw = response.data
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise WriteError(f"InfluxDB answered {what} with no JSON: {raw[:200]!r}",
                             retryable=True, status=502) from err
        if "error" in body:
            raise _statement_error(what, str(body["error"]))
        results: list[dict[str, Any]] = body.get("results") or []
        for result in results:
            if "error" in result:
                raise _statement_error(what, str(result["error"]))
        return results


def _statement_error(what: str, error: str) -> WriteError:
    """A statement's error as a status: missing database or policy is setup, not data."""
    lowered = error.lower()
    if "not found" in lowered:
        status = 404
    elif "authoriz" in lowered or "permission" in lowered:
        status = 403
    else:
        status = 400
    return WriteError(f"InfluxDB refused {what}: {error}", retryable=classify_status(status),
                      status=status)


@contextlib.contextmanager
def _translated(url: str, what: str) -> Iterator[None]:
    """Turn influxdb-client and urllib3 errors inside the block into :class:`WriteError`."""
    from influxdb_client.rest import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    try:
        yield
    except WriteError:
        raise
    except ApiException as err:
        status = int(err.status) if err.status is not None else 0
        raise WriteError(f"InfluxDB refused {what}: HTTP {status}: {_api_message(err)}",
                         retryable=classify_status(status), status=status) from err
    except (Urllib3Error, OSError) as err:
        raise WriteError(f"InfluxDB unreachable at {url}: {err}", retryable=True) from err


def _api_message(err: Any) -> str:
    message = getattr(err, "message", None)
    if message:
        return str(message)
    body = getattr(err, "body", None)
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace").strip()[:500]
    if body:
        return str(body).strip()[:500]
    return str(getattr(err, "reason", "")) or "no detail"
