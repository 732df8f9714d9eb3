"""Telling a device whose clock is off from one whose data is merely old (pure).

A SourceTimestamp more than the threshold ahead of the receive time, or behind it in a
live notification (not the first one of an item, which repeats an old value), means
the device clock is off. The verdict is per sample; an episode (the device's clock is
off) starts with the first skewed sample and ends with the first one within the
threshold again, so a caller logs once per episode and counts every sample.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

__all__ = ["ClockSkew", "Skew"]


class Skew(Enum):
    """What one sample's timestamp says about its device's clock."""

    FINE = "fine"
    STARTED = "started"
    """Skewed, and the first of an episode."""
    ONGOING = "ongoing"
    """Skewed, in an episode already reported."""
    CLEARED = "cleared"
    """Within the threshold again after an episode."""


class ClockSkew:
    """The skew rule of one source and which of its devices are in an episode.

    ``threshold_ms`` 0 turns the check off. ``restamp`` is ``clock_skew_action ==
    "receive"``: a skewed sample is then stamped with the receive time instead of
    keeping its source timestamp, which keeps windows aligned when a controller's clock
    is known to drift.
    """

    __slots__ = ("restamp", "skewed", "threshold_ms")

    def __init__(self, max_skew_s: float, action: Literal["flag", "receive"] = "flag") -> None:
        self.threshold_ms = int(max_skew_s * 1000)
        self.restamp = action == "receive"
        self.skewed: set[str] = set()

    def judge(self, device: str, offset_ms: int, live: bool) -> Skew:
        """The verdict on one sample of ``device`` whose source timestamp is
        ``offset_ms`` from its receive time (source minus receive).

        An old timestamp only counts in a ``live`` notification, and only a live one or
        a timestamp ahead of the receive time ends an episode: the first notification
        of an item repeats a value that may be as old as the last change.
        """
        limit = self.threshold_ms
        if not limit:
            return Skew.FINE
        if offset_ms > limit or (live and -offset_ms > limit):
            if device in self.skewed:
                return Skew.ONGOING
            self.skewed.add(device)
            return Skew.STARTED
        if device in self.skewed and (live or offset_ms > 0):
            self.skewed.discard(device)
            return Skew.CLEARED
        return Skew.FINE
