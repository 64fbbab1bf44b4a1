"""A sans-I/O parser for Server-Sent Events (WHATWG), for clients of the edge.

Feed it bytes as they arrive (``feed_data``) and take the complete events
(``events_received``, which drains). Lines end with LF, CR or CRLF; a CR at
the end of one feed and an LF at the start of the next form one line end.
Comments (``: ping``) are counted, not returned. ``max_event`` bounds the
bytes one event may buffer.
"""

from __future__ import annotations

from typing import NamedTuple

from icefloe.exceptions import FrameTooLarge

__all__ = ["SseEvent", "SseParser"]


class SseEvent(NamedTuple):
    """One dispatched event."""

    #: the ``event`` field, ``message`` by default
    event: str
    #: the ``data`` lines joined with LF
    data: str
    #: the ``id`` field of this event, or None when it had none
    id: str | None


class SseParser:
    """Incremental SSE parser (one per connection)."""

    def __init__(self, max_event: int = 1024 * 1024) -> None:
        if max_event < 1:
            raise ValueError("max_event must be >= 1")
        self._max = max_event
        self._buf = bytearray()
        self._skip_lf = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._size = 0
        self._events: list[SseEvent] = []
        #: the last ``id`` seen (what a client sends as Last-Event-ID)
        self.last_event_id: str | None = None
        #: the last ``retry`` hint, milliseconds
        self.retry_ms: int | None = None
        #: comment lines seen (heartbeats)
        self.comments = 0

    def feed_data(self, data: bytes) -> None:
        """Take bytes; complete lines are parsed now.

        :raises FrameTooLarge: one event grows beyond ``max_event`` bytes.
        """
        buf = self._buf
        buf += data
        start = 0
        while True:
            if self._skip_lf and start < len(buf):
                if buf[start] == 0x0A:
                    start += 1
                self._skip_lf = False
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            self._line(bytes(buf[start:end]).decode("utf-8", "replace"))
            if buf[end] == 0x0D:
                if end + 1 < len(buf):
                    start = end + (2 if buf[end + 1] == 0x0A else 1)
                else:
                    start = end + 1
                    self._skip_lf = True
            else:
                start = end + 1
        del buf[:start]
        if len(buf) + self._size > self._max:
            raise FrameTooLarge(len(buf) + self._size, self._max)

    def events_received(self) -> list[SseEvent]:
        events, self._events = self._events, []
        return events

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._size += len(line)
        if self._size > self._max:
            raise FrameTooLarge(self._size, self._max)
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self) -> None:
        if self._data:
            self._events.append(SseEvent(self._event or "message", "\n".join(self._data), self._id))
        self._event = ""
        self._data = []
        self._id = None
        self._size = 0
