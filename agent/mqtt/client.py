"""The one place a paho client is made: the agent's publisher, the ingest and the demo.

Every client of the project connects the same way, so a setting means the same thing
wherever it is read:

- MQTT 5 with ``clean_start=False`` and a Session Expiry Interval, or 3.1.1 with
  ``clean_session=False``: the broker keeps the session across short outages.
- TLS from :class:`~agent.config.common.TlsSettings` through :func:`tls_context`, so a
  bad file is a :class:`~rules.errors.ConfigError` naming the setting, and
  ``check-config`` loads exactly the context the client will use.
- Credentials from :class:`~agent.config.common.MqttSettings` (the password possibly from
  the environment).
- Reconnect delays from a :class:`~agent.mqtt.reconnect.ReconnectPacer` (our jittered
  backoff), never paho's own doubling; the caller's paho callbacks report to it.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.common import MqttSettings, TlsSettings
from agent.mqtt.reconnect import ReconnectPacer
from agent.mqtt.transport import WillMessage
from rules.errors import ConfigError, DeliveryError

__all__ = ["new_client", "start_client", "tls_context"]


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """An SSL context from the settings; ConfigError naming the setting if a file is bad."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
        if tls.cert_file is not None:
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
            )
    except (OSError, ssl.SSLError) as err:
        raise ConfigError([("mqtt.tls", f"cannot load TLS files: {err}")]) from err
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def new_client(
    settings: MqttSettings,
    *,
    client_id: str,
    pacer: ReconnectPacer,
    manual_ack: bool = False,
    will: WillMessage | None = None,
) -> mqtt.Client:
    """A paho client with a persistent session, TLS, credentials and ``pacer`` attached.

    Not connected yet: set the callbacks, then :func:`start_client`. Raises ConfigError
    for an unset password variable or unusable TLS files.
    """
    if settings.protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=False,
                             manual_ack=manual_ack)
    # No enable_logger(): paho logs an ERROR on every failed reconnect attempt, and our
    # callers log a lost connection once and its recovery once. Belt and braces: every
    # caller's callbacks already catch everything.
    client.suppress_exceptions = True
    pacer.attach(client)
    if settings.username is not None:
        try:
            password = settings.password_value()
        except ValueError as err:
            raise ConfigError([("mqtt.password_env", str(err))]) from err
        client.username_pw_set(settings.username, password)
    if settings.tls is not None and settings.tls.enabled:
        client.tls_set_context(tls_context(settings.tls))
        if settings.tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client


def start_client(client: mqtt.Client, settings: MqttSettings, *,
                 receive_maximum: int | None = None) -> None:
    """Connect in the background and start paho's network thread; returns at once.

    paho keeps reconnecting, at the delays the client's pacer sets. ``receive_maximum``
    (MQTT 5) bounds how many unacknowledged messages the broker sends us.
    """
    try:
        if settings.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = settings.session_expiry_s
            if receive_maximum is not None:
                props.ReceiveMaximum = receive_maximum
            client.connect_async(settings.host, settings.port, settings.keepalive_s,
                                 clean_start=False, properties=props)
        else:
            client.connect_async(settings.host, settings.port, settings.keepalive_s)
        client.loop_start()
    except (OSError, ValueError) as err:
        raise DeliveryError(f"cannot start MQTT client for {settings.host}:{settings.port}: "
                            f"{err}") from err
