"""Credit-based flow control, like Reactive Streams ``request(n)``.

The consumer grants credit; the producer consumes one credit per chunk and
sends nothing while none is available. :class:`CreditWindow` is the
bookkeeping for one stream; waiting for credit is the caller's job: each
stream a WebSocket connection follows has one
(:class:`~icefloe.transport.ws_pump.WsStreams`: ``welcome.window`` initial
credit, ``credit {n}`` grants capped at ``MAX_CREDIT``, one consumed per
chunk sent).
"""

from __future__ import annotations

from typing import NamedTuple

from icefloe.core.checks import check_int
from icefloe.exceptions import CreditOverrun

__all__ = ["CreditWindow", "CreditWindowStatistics"]


class CreditWindowStatistics(NamedTuple):
    """A snapshot of a :class:`CreditWindow`."""

    #: credit that may be consumed now
    available: int
    #: the cap on ``available`` (``None``: uncapped)
    ceiling: int | None
    #: credit added since construction, ``initial`` included, after capping
    granted_total: int
    #: credit consumed since construction
    consumed_total: int
    #: credit granted but discarded because it would have passed ``ceiling``
    clipped_total: int


class CreditWindow:
    """How many chunks a producer may still send on one stream.

    Invariant: ``available == granted_total - consumed_total`` and
    ``0 <= available <= ceiling``.

    :param initial: credit available from the start, in chunks; default 0.
    :param ceiling: the most credit that can be available at once, in chunks;
        grants beyond it are discarded (counted in ``clipped_total``), so a
        consumer cannot make the producer run arbitrarily far ahead. ``None``
        (the default) means uncapped.
    :raises ValueError: if ``initial`` is not an int >= 0, ``ceiling`` is not
        an int >= 1, or ``initial > ceiling``.
    """

    __slots__ = ("_available", "_ceiling", "_clipped", "_consumed", "_granted")

    def __init__(self, initial: int = 0, ceiling: int | None = None) -> None:
        check_int("initial", initial, 0)
        if ceiling is not None:
            check_int("ceiling", ceiling, 0)
            if ceiling < 1:
                raise ValueError(f"ceiling must be >= 1 or None, got {ceiling}")
            if initial > ceiling:
                raise ValueError(f"initial ({initial}) must not exceed ceiling ({ceiling})")
        self._ceiling = ceiling
        self._available = initial
        self._granted = initial
        self._consumed = 0
        self._clipped = 0

    def __repr__(self) -> str:
        return f"CreditWindow(available={self._available}, ceiling={self._ceiling})"

    @property
    def available(self) -> int:
        """Credit that may be consumed now; never negative."""
        return self._available

    @property
    def ceiling(self) -> int | None:
        """The cap on :attr:`available`, or ``None``."""
        return self._ceiling

    @property
    def granted_total(self) -> int:
        """Credit added since construction (``initial`` included, after capping)."""
        return self._granted

    @property
    def consumed_total(self) -> int:
        """Credit consumed since construction."""
        return self._consumed

    def grant(self, n: int) -> int:
        """Add ``n`` credits, capped at ``ceiling``; return how many were added.

        :raises ValueError: if ``n`` is not an int >= 0.
        """
        check_int("n", n, 0)
        added = n
        ceiling = self._ceiling
        if ceiling is not None:
            added = min(n, ceiling - self._available)
            self._clipped += n - added
        self._available += added
        self._granted += added
        return added

    def consume(self, n: int = 1) -> None:
        """Use ``n`` credits.

        :raises CreditOverrun: if fewer than ``n`` are available; nothing changes.
        :raises ValueError: if ``n`` is negative.
        """
        if not 0 <= n <= self._available:
            if n < 0:
                raise ValueError(f"n must be >= 0, got {n}")
            raise CreditOverrun(f"cannot consume {n} credits: {self._available} available")
        self._available -= n
        self._consumed += n

    def try_consume(self, n: int = 1) -> bool:
        """Use ``n`` credits if available; return whether it did.

        :raises ValueError: if ``n`` is negative.
        """
        if 0 <= n <= self._available:
            self._available -= n
            self._consumed += n
            return True
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return False

    def statistics(self) -> CreditWindowStatistics:
        """A snapshot of the window's credit and counters."""
        return CreditWindowStatistics(
            available=self._available,
            ceiling=self._ceiling,
            granted_total=self._granted,
            consumed_total=self._consumed,
            clipped_total=self._clipped,
        )
