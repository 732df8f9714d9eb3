"""Keeping asyncua's per-retry failure records out of the agent's log.

asyncua logs its side of every failed connect and of every server restart (the
received ERR message twice, a ServiceFault, a "Publish iteration crashed" traceback,
closing a dead session), each time the collector retries. The collector reports those
failures itself, so :func:`quiet_asyncua_logs` (installed by every collector) drops these
known records of asyncua's client loggers unless the ``collectors.opcua`` logger is
enabled for DEBUG (``--log-level debug``), where they pass at DEBUG level. A record of
those loggers that is not one of them, or whose traceback is not a connection failure,
passes as it is.
"""

from __future__ import annotations

import logging

from asyncua.ua.uaerrors import UaStatusCodeError

__all__ = ["quiet_asyncua_logs"]

log = logging.getLogger("collectors.opcua")
"""The package's logger: its DEBUG level is what lets asyncua's records through."""


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
