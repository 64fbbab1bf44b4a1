"""When to give up on a connection that keeps sending bad messages.

A malformed or unknown WebSocket message is answered with ``error
bad_request`` and the connection stays open: one mistake should not cost a
client its streams. A *flood* of them is abuse (or a broken client stuck in
a loop), and each answer costs the server work, so past a limit the
connection is closed with 1008 (policy violation) and the reason "too many
malformed messages": ``close_frame(CloseReason.BAD_MESSAGE_FLOOD)`` of
:mod:`icefloe.core.wire_errors`, where every close the server sends is mapped.

:class:`BadMessageMeter` is that limit for one connection: a token bucket
(:class:`~icefloe.core.token_bucket.TokenBucket`) of ``burst`` tokens
refilled at ``rate`` per second; each bad message takes a token, and the one
that finds none trips the meter. With the defaults a client may send 10 bad
messages at once, and one per second for ever after; the 11th in a burst
closes the connection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, NamedTuple

from icefloe.core.token_bucket import TokenBucket
from icefloe.core.wire_errors import CloseReason, close_frame

__all__ = ["CLOSE_CODE", "CLOSE_REASON", "BadMessageMeter", "BadMessageMeterStatistics"]

_FLOOD_CLOSE: Final = close_frame(CloseReason.BAD_MESSAGE_FLOOD)
#: the WebSocket close code for a flood of bad messages (policy violation, 1008)
CLOSE_CODE: Final = _FLOOD_CLOSE[0]
#: the close reason sent with it
CLOSE_REASON: Final = _FLOOD_CLOSE[1]


class BadMessageMeterStatistics(NamedTuple):
    """A snapshot of a :class:`BadMessageMeter`."""

    #: bad messages recorded, the one that tripped the meter included
    bad_total: int
    #: whether the connection must be closed
    tripped: bool
    #: bad messages that could be absorbed right now before tripping
    allowance: float
    #: the largest burst of bad messages tolerated, in messages
    burst: int
    #: bad messages tolerated per second in the long run
    rate: float


class BadMessageMeter:
    """Counts one connection's bad messages and says when to close it.

    :param clock: returns monotonic seconds, e.g. ``time.monotonic``.
    :param burst: bad messages tolerated at once, in messages; an int >= 1.
    :param rate: bad messages tolerated per second in the long run; finite
        and > 0.
    :raises ValueError: if ``burst`` or ``rate`` is out of range.
    """

    __slots__ = ("_bad", "_bucket", "_burst", "_tripped")

    def __init__(self, clock: Callable[[], float], *, burst: int = 10, rate: float = 1.0) -> None:
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {burst!r}")
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        self._bucket = TokenBucket(rate, burst, clock)
        self._burst = burst
        self._bad = 0
        self._tripped = False

    def __repr__(self) -> str:
        return f"BadMessageMeter(bad_total={self._bad}, tripped={self._tripped})"

    @property
    def tripped(self) -> bool:
        """Whether the connection must be closed with :data:`CLOSE_CODE`; once set, it stays."""
        return self._tripped

    def record(self) -> bool:
        """Count one bad message; return ``True`` if the connection must now be closed.

        Answer the message with ``error bad_request`` while this returns
        ``False``; close with :data:`CLOSE_CODE` when it returns ``True``.
        After tripping, it keeps returning ``True``.
        """
        self._bad += 1
        if not self._tripped and not self._bucket.try_take(1):
            self._tripped = True
        return self._tripped

    def statistics(self) -> BadMessageMeterStatistics:
        """A snapshot of the meter."""
        bucket = self._bucket
        return BadMessageMeterStatistics(
            bad_total=self._bad,
            tripped=self._tripped,
            allowance=0.0 if self._tripped else bucket.tokens,
            burst=self._burst,
            rate=bucket.rate,
        )
