"""The limits of a :class:`~icefloe.core.streamlog.StreamLog`, checked once.

At a limit the log never blocks and never drops an unread chunk: its room
check says no and the producer waits (``window``, ``max_bytes``), or an
append raises :class:`~icefloe.exceptions.ReorderOverflow` and changes
nothing (``reorder_limit``). None of them takes None: every log is bounded.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LogLimits"]


class LogLimits(NamedTuple):
    """A log's configuration; :meth:`checked` rejects a value out of range."""

    #: the first seq (>= 0)
    start_seq: int
    #: the most chunks the pace may be behind the head (>= 1); the adaptive
    #: window moves within ``[1, window_limit]``
    window_limit: int
    #: the most bytes held (as counted by ``chunk_size``) before the producer waits (>= 1)
    max_bytes: int
    #: consumed chunks kept for late readers and resumption (>= 0)
    history: int
    #: chunks held out of order (>= 0; 0: strict order)
    reorder_limit: int

    def checked(self) -> LogLimits:
        """``self``, once every limit is in range.

        :raises ValueError: a limit is out of range (the first one, by name).
        """
        for name, low in (
            ("start_seq", 0),
            ("window_limit", 1),
            ("max_bytes", 1),
            ("history", 0),
            ("reorder_limit", 0),
        ):
            value = getattr(self, name)
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value!r}")
        return self
