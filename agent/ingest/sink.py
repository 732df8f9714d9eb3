"""Where the ingest's points go: a one-method seam, and the real InfluxDB implementation.

The service only knows :class:`PointSink`; unit tests plug in a fake, production uses
:class:`InfluxSink`, which wraps influxdb-client's SYNCHRONOUS write API. The background
batching write API is deliberately not used: it loses buffered points on a crash and drops
a batch after its own retries, while the ingest must hold the MQTT acknowledgements until
InfluxDB has accepted the data and decides itself how long to retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from agent.config.common import InfluxSettings
from agent.ingest.points import InfluxPoint
from rules.errors import DeliveryError

__all__ = [
    "BAD_DATA_STATUSES",
    "CONFIG_STATUSES",
    "InfluxSink",
    "PointSink",
    "WriteError",
    "classify_status",
]

BAD_DATA_STATUSES = frozenset({400, 413, 422})
"""Answers that blame the data: the batch is split to find (and dead-letter) the culprits."""

CONFIG_STATUSES = frozenset({401, 403, 404})
"""Answers that blame the setup (token, permissions, missing bucket or database), not the
data: every point would be refused alike, so the ingest holds its acks and retries until an
operator fixes it, instead of emptying the stream into the dead-letter file."""


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


def classify_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying with the same batch.

    429 and 5xx are transient; 401/403/404 last until the configuration or the database is
    fixed, which is an outage too. Other 4xx (400, 413, 422 ...) blame the request itself.
    """
    return status == 429 or status >= 500 or status in CONFIG_STATUSES


class PointSink(Protocol):
    """Stores a batch of points, all or nothing from the caller's point of view.

    ``write`` raises :class:`DeliveryError` (normally :class:`WriteError`) when the batch
    was not stored; a write may be repeated, as points are keyed and overwrite.
    Called from a worker thread, one call at a time.
    """

    def write(self, points: Sequence[InfluxPoint]) -> None:
        """Store ``points`` or raise :class:`DeliveryError`."""

    def close(self) -> None:
        """Release connections."""


class InfluxSink:
    """InfluxDB through influxdb-client's synchronous v2 write API (2.x, 3.x, 1.8+)."""

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

    def write(self, points: Sequence[InfluxPoint]) -> None:
        """One HTTP write of all ``points`` (ms precision); errors become :class:`WriteError`."""
        if not points:
            return
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        body = [p.to_line_protocol() for p in points]
        try:
            self._write_api.write(
                bucket=self.settings.bucket, org=self.settings.org, record=body,
                write_precision=WritePrecision.MS,
            )
        except ApiException as err:
            status = int(err.status) if err.status is not None else 0
            detail = _api_message(err)
            raise WriteError(
                f"InfluxDB refused the write: HTTP {status}: {detail}",
                retryable=classify_status(status), status=status,
            ) from err
        except (Urllib3Error, OSError) as err:
            raise WriteError(f"InfluxDB unreachable at {self.settings.url}: {err}",
                             retryable=True) from err

    def close(self) -> None:
        """Close the write API and the HTTP client."""
        try:
            self._write_api.close()
        finally:
            self._client.close()


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
