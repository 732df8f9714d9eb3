"""An embedded MQTT broker for the demo when Mosquitto is not installed.

amqtt speaks MQTT 3.1.1 only and keeps everything in memory: fine on loopback for a
first run, not for production (use Mosquitto or a broker cluster there).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from agent.services import free_port
from rules.errors import ServiceError

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt on ``127.0.0.1:port``, anonymous, in this process's event loop."""

    protocol = "3.1.1"

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._broker: Any = None

    async def __aenter__(self) -> Self:
        try:
            from amqtt.broker import Broker
        except ImportError as err:
            raise ServiceError("amqtt is not installed") from err
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        try:
            self._broker = Broker(config)
            await self._broker.start()
        except Exception as err:
            raise ServiceError(f"embedded broker did not start: {err}") from err
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._broker is not None:
            try:
                await self._broker.shutdown()
            except Exception as err:  # shutting down; nothing else to do with it
                log.debug("embedded broker shutdown: %s", err)
