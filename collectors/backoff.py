"""The one reconnect backoff of the project: exponential, with jitter, bounded.

Every reconnect uses it: the OPC UA and Modbus collectors, the MQTT publisher and the
ingest's MQTT client, and the ingest's InfluxDB retries. One formula everywhere means one
behaviour to explain to an operator and one place to get right.

The delay before attempt ``n`` (0 = the first retry after a loss) is drawn uniformly from
``[min_s, cap]`` with ``cap = min(max_s, min_s * 2**(n + 1))``. The cap grows
exponentially, the delay never leaves ``[min_s, max_s]``, and even the very first retry is
spread over ``[min_s, 2 * min_s]``: after a broker or server restart a whole fleet of
clients would otherwise come back in the same instant, and again at each doubling.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]

# 2**62 * min_s overflows nothing and is far beyond any max_s; stop doubling there.
_MAX_DOUBLINGS = 62


def backoff_delay(attempt: int, min_s: float, max_s: float,
                  rng: random.Random | None = None) -> float:
    """Delay in seconds before retry ``attempt`` (0 = the first retry after a failure)."""
    cap = min(max_s, min_s * 2.0 ** min(attempt + 1, _MAX_DOUBLINGS))
    return (rng or random).uniform(min_s, max(min_s, cap))


class Backoff:
    """Stateful :func:`backoff_delay`: counts failed attempts until :meth:`reset`.

    One instance per connection (a device, a broker link); it is not thread-safe, so it
    belongs to the task or thread that reconnects.
    """

    def __init__(self, min_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s}, {max_s}")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failed attempt."""
        delay = backoff_delay(self.attempts, self.min_s, self.max_s, self._rng)
        self.attempts += 1
        return delay

    def peek_delay(self) -> float:
        """A delay drawn as :meth:`next_delay` would draw it, without counting an attempt:
        for a client that must be given a retry delay before anything has failed."""
        return backoff_delay(self.attempts, self.min_s, self.max_s, self._rng)

    def reset(self) -> None:
        """Forget past failures: the next delay is short again."""
        self.attempts = 0
