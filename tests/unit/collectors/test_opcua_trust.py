"""What the OPC UA collector says when trust fails, and what it keeps out of the log.

A refused client certificate is told from other connect failures by the status code the
server answered or, when asyncua lost it, by the handshake step the connection closed
in; it is logged once per failing streak, and asyncua's own per-retry records stay out
of the log unless debug is on. Real exceptions, certificates and log records; no server.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from asyncua.client.ua_client import UaClientState
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from collectors.opcua import OpcUaCollector, OpcUaSourceSpec, OpcUaTag, _Heard, quiet_asyncua_logs
from collectors.opcua.security import (
    CertInfo,
    ClientCertificateRefusedError,
    UntrustedServerError,
    client_certificate_refusal,
    ensure_client_certificate,
)
from rules.errors import DeviceError

URL = "opc.tcp://plc:4840"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> CertInfo:
    return ensure_client_certificate(tmp_path_factory.mktemp("pki"), "urn:host:agent",
                                     hostname="host")


def _colons(hexdigest: str) -> str:
    return ":".join(hexdigest[i:i + 2] for i in range(0, len(hexdigest), 2)).upper()


def _status(code: int) -> UaStatusCodeError:
    return UaStatusCodeError(code)  # type: ignore[no-untyped-call]


def test_a_certificate_status_is_a_certain_refusal_naming_what_to_trust(cert: CertInfo) -> None:
    refused = client_certificate_refusal(_status(StatusCodes.BadCertificateUntrusted),
                                         "CreateSession", cert, URL)
    assert isinstance(refused, ClientCertificateRefusedError)
    assert refused.certain and refused.status == "BadCertificateUntrusted"
    text = str(refused)
    assert text.startswith(f"{URL} did not accept the agent's certificate (it answered "
                           "BadCertificateUntrusted to CreateSession)")
    for part in (str(cert.cert_path), cert.application_uri, _colons(cert.sha256),
                 _colons(cert.sha1), "rejected/", "trusted/"):
        assert part in text
    assert "\n" not in text and "validity" not in text


def test_a_generic_security_status_or_a_closed_handshake_is_a_probable_refusal(
    cert: CertInfo,
) -> None:
    checks = client_certificate_refusal(_status(StatusCodes.BadSecurityChecksFailed),
                                        "OpenSecureChannel", cert, URL)
    assert checks is not None and not checks.certain
    assert "probably did not accept" in str(checks)
    assert "it answered BadSecurityChecksFailed to OpenSecureChannel" in str(checks)
    # node-opcua: the status is lost, asyncua reports the socket closing.
    for step in ("OpenSecureChannel", "CreateSession"):
        closed = client_certificate_refusal(ConnectionError("connection lost"), step, cert, URL)
        assert closed is not None and not closed.certain and closed.status is None
        assert f"it closed the connection during {step}" in str(closed)


def test_other_failures_are_not_called_a_refusal(cert: CertInfo) -> None:
    lost = ConnectionError("connection lost")
    assert client_certificate_refusal(lost, None, cert, URL) is None  # never connected
    assert client_certificate_refusal(lost, "ActivateSession", cert, URL) is None  # a login?
    assert client_certificate_refusal(_status(StatusCodes.BadUserAccessDenied),
                                      "ActivateSession", cert, URL) is None
    assert client_certificate_refusal(_status(StatusCodes.BadTcpEndpointUrlInvalid),
                                      "OpenSecureChannel", cert, URL) is None
    assert client_certificate_refusal(TimeoutError(), "OpenSecureChannel", cert, URL) is None


def test_the_status_is_found_inside_wrapping_errors(cert: CertInfo) -> None:
    try:
        try:
            raise _status(StatusCodes.BadCertificateUriInvalid)
        except UaStatusCodeError as err:
            raise RuntimeError("connect failed") from err
    except RuntimeError as err:
        wrapped: BaseException = ExceptionGroup("session", [err])
    refused = client_certificate_refusal(wrapped, "CreateSession", cert, URL)
    assert refused is not None and refused.status == "BadCertificateUriInvalid"


def test_an_expired_certificate_is_said_to_need_renewal(cert: CertInfo) -> None:
    old = replace(cert, not_after=datetime.now(UTC) - timedelta(days=1))
    refused = client_certificate_refusal(_status(StatusCodes.BadCertificateTimeInvalid),
                                         "OpenSecureChannel", old, URL)
    assert refused is not None and "outside its validity period" in str(refused)


def test_the_handshake_step_only_moves_forward() -> None:
    heard = _Heard()
    assert heard.handshake_step is None
    heard.on_state_change(UaClientState.CONNECTING)
    assert heard.handshake_step is None  # the socket is not open yet
    heard.on_state_change(UaClientState.SOCKET_OPEN)
    assert heard.handshake_step == "OpenSecureChannel"
    heard.on_state_change(UaClientState.CHANNEL_OPEN)
    heard.on_request("CreateSessionRequest", 0.01, ConnectionError())
    assert heard.handshake_step == "CreateSession"
    heard.on_state_change(UaClientState.SOCKET_OPEN)  # the failed session closes the channel
    heard.on_state_change(UaClientState.DISCONNECTED)
    assert heard.handshake_step == "CreateSession"
    heard.on_request("CreateSessionRequest", 0.01, None)
    assert heard.handshake_step == "ActivateSession"
    heard.on_state_change(UaClientState.CONNECTED)
    assert heard.handshake_step is None


PUBLISH = "asyncua.client.ua_session.UaSession"


def _publish_crash(exc: BaseException) -> None:
    logging.getLogger(PUBLISH).error("Publish iteration crashed; retrying in 1s", exc_info=exc)


def test_asyncua_routine_records_are_dropped_unless_debug(caplog: pytest.LogCaptureFixture) -> None:
    quiet_asyncua_logs()
    quiet_asyncua_logs()  # idempotent
    assert len(logging.getLogger(PUBLISH).filters) == 1
    caplog.set_level(logging.INFO)
    _publish_crash(ConnectionError("Connection is closed"))
    logging.getLogger("asyncua.uaprotocol").warning("Received an error: %s", "ErrorMessage()")
    logging.getLogger("asyncua.client.ua_client.UASocketProtocol").critical(
        "Received an error: %r", "ErrorMessage()")
    assert caplog.records == []
    caplog.set_level(logging.DEBUG, logger="collectors.opcua")
    _publish_crash(ConnectionError("Connection is closed"))
    [shown] = caplog.records
    assert (shown.name, shown.levelno, shown.levelname) == (PUBLISH, logging.DEBUG, "DEBUG")


def test_other_asyncua_records_still_pass(caplog: pytest.LogCaptureFixture) -> None:
    quiet_asyncua_logs()
    caplog.set_level(logging.INFO)
    _publish_crash(ValueError("a library bug, not a lost connection"))
    logging.getLogger(PUBLISH).warning("Received data for unknown subscription %s active are %s",
                                       7, [1])
    logging.getLogger("asyncua.client.ua_client.UaClient").warning(
        ua.GetEndpointsResponse())  # asyncua logs bare (unhashable) objects too
    assert [(r.levelno, r.exc_info is not None) for r in caplog.records] == [
        (logging.ERROR, True), (logging.WARNING, False), (logging.WARNING, False)]


def test_failures_are_logged_once_per_streak_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="collectors.opcua")
    collector = OpcUaCollector(OpcUaSourceSpec(
        id="plc", url=URL, tags=(OpcUaTag("m1", "parts_total", node="ns=2;s=x"),)))
    refused = ClientCertificateRefusedError(f"{URL} did not accept the agent's certificate",
                                            certain=True, status="BadCertificateUntrusted")
    for err in (DeviceError("connection refused"), refused, DeviceError("again"), refused,
                UntrustedServerError(f"{URL}: server certificate is not trusted")):
        collector._mark_down(err)
    collector._mark_up()
    collector._mark_down(refused)
    said = [r.getMessage().split(" again after ")[0] for r in caplog.records]
    assert said == [
        f"opcua plc: {URL} unavailable: connection refused",
        f"opcua plc: {URL} did not accept the agent's certificate",
        f"opcua plc: {URL}: server certificate is not trusted",
        f"opcua plc: connected to {URL}",
        f"opcua plc: {URL} did not accept the agent's certificate",
    ]
    assert collector.health["m1"].last_error == str(refused)

