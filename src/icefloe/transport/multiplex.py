"""Several readers on one SSE response: the body of ``GET /v1/events``.

:class:`MergedReader` is a :class:`~icefloe.transport.streaming.PumpReader`
over stream :class:`~icefloe.runtime.subscription.Subscription` s and hub
subscriptions, so the edge's one :class:`~icefloe.transport.streaming.StreamPump`
writes them (heartbeats, send timeout, bytes/s cap, gzip, disconnect watch
unchanged); :meth:`MergedReader.take` is the pump's ``take``.

Each event's SSE ``id`` is a :class:`Cursor`: a checksum of the connection's
source list and, per source in query order, the next position to send. A
browser's ``Last-Event-ID`` therefore resumes every stream exactly where the
tab left it. Entries: digits (next seq or offset), empty (a stream from seq
0, a topic from the live head), ``x`` (the source ended; do not follow again).

Fairness and bounds: sources are served round robin, each taking at most the
write budget left; nothing is buffered here beyond what the readers hold
(a stream reader is lag-limited, a hub subscription has its own buffer).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from icefloe.backplane.reader import RemoteReader
from icefloe.core.codec import Format
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, IcefloeError, StreamError
from icefloe.hub import HubSubscription
from icefloe.runtime.subscription import Subscription
from icefloe.transport.shared import Taken

__all__ = ["DONE", "MAX_SOURCES", "Cursor", "MergedReader", "Source", "StreamReader"]

#: a stream's reader: in process, or (issue 12) from the backplane
StreamReader = Subscription | RemoteReader

#: streams and topic patterns one connection may follow at most
MAX_SOURCES: Final = 32
#: a cursor entry: the source ended and is not followed again
DONE: Final = "x"

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Source:
    """One thing a connection follows: ``kind`` is ``"stream"`` or ``"topic"``.

    ``exact``: a topic name without wildcards, which resumes by offset (a
    pattern resumes at the live head).
    """

    kind: str
    name: str
    exact: bool = False


class Cursor:
    """The positions of a connection's sources, written as its SSE ``id``.

    ``<crc32 of the source list, 8 hex>:<entry>,<entry>,...`` in query
    order; at most ``9 + MAX_SOURCES * 20`` characters.
    """

    __slots__ = ("entries", "tag")

    def __init__(self, sources: Sequence[Source], entries: list[str] | None = None) -> None:
        self.tag = checksum(sources)
        self.entries = entries if entries is not None else [""] * len(sources)

    @classmethod
    def parse(cls, sources: Sequence[Source], text: str) -> Cursor:
        """The cursor a client sent back.

        :raises ValueError: not a cursor of exactly this source list.
        """
        tag, sep, rest = text.strip().partition(":")
        if not sep or tag != checksum(sources):
            raise ValueError("Last-Event-ID is not a cursor of this stream/topic list")
        entries = rest.split(",")
        if len(entries) != len(sources):
            raise ValueError("Last-Event-ID has the wrong number of positions")
        for entry in entries:
            if entry not in ("", DONE) and not (
                entry.isascii() and entry.isdigit() and len(entry) <= 19
            ):
                raise ValueError(f"Last-Event-ID has a bad position {entry[:20]!r}")
        return cls(sources, entries)

    def position(self, index: int) -> int | None:
        """Source ``index``'s next seq/offset (None: its default start)."""
        entry = self.entries[index]
        return int(entry) if entry and entry != DONE else None

    def done(self, index: int) -> bool:
        return self.entries[index] == DONE

    def encode(self) -> bytes:
        return f"{self.tag}:{','.join(self.entries)}".encode()


def checksum(sources: Sequence[Source]) -> str:
    """Binds a cursor to its source list, so a changed query cannot misread it."""
    text = "\n".join(f"{s.kind}:{s.name}" for s in sources)
    return f"{zlib.crc32(text.encode()):08x}"


class _Feed:
    """One source's reader inside a merge; ``reader`` None once it ended."""

    __slots__ = ("index", "reader", "source")

    def __init__(self, index: int, source: Source, reader: StreamReader | HubSubscription) -> None:
        self.index = index
        self.source = source
        self.reader: StreamReader | HubSubscription | None = reader


class MergedReader:
    """Round robin over several readers, each event tagged and given the cursor id.

    ``pending`` holds terminals decided before the pump starts (a stream
    whose history is gone at connect), written first.
    """

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self._feeds: list[_Feed] = []
        self._pending: list[bytes] = []
        self._turn = 0
        self._wake: asyncio.Future[None] | None = None

    def add(self, index: int, source: Source, reader: StreamReader | HubSubscription) -> None:
        self._feeds.append(_Feed(index, source, reader))

    def fail(self, index: int, source: Source, exc: IcefloeError) -> None:
        """Report source ``index`` ended with ``exc`` (an in-band ``error`` event)."""
        self.cursor.entries[index] = DONE
        self._pending.append(self._error(source, exc))

    @property
    def stream_ids(self) -> list[str]:
        return [f.source.name for f in self._feeds if f.source.kind == "stream"]

    # -- PumpReader ----------------------------------------------------------------

    def held(self) -> int:
        count = len(self._pending)
        for feed in self._feeds:
            reader = feed.reader
            if reader is not None:
                # An ended reader counts one: its terminal is still to be written.
                count += reader.held() or (reader.end_reason() is not None)
        return count

    async def wait(self) -> None:
        if self.held():
            return
        live = [f.reader for f in self._feeds if f.reader is not None]
        if not live:
            return
        wake = self._wake = asyncio.get_running_loop().create_future()
        waits = [asyncio.ensure_future(reader.wait()) for reader in live]
        try:
            await asyncio.wait([wake, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake = None
            for task in waits:
                task.cancel()
            # Each reader's wait cleans up its own waiter before the next wait.
            await asyncio.gather(*waits, return_exceptions=True)

    def interrupt(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def end_reason(self) -> IcefloeError | None:
        if self._pending or any(f.reader is not None for f in self._feeds):
            return None
        return EndOfStream("every stream and topic of this connection ended")

    def close(self) -> None:
        for feed in self._feeds:
            if feed.reader is not None:
                feed.reader.close()
                feed.reader = None

    # -- the pump's take -----------------------------------------------------------

    def take(self, _: object, max_bytes: int) -> Taken | None:
        """What the readers hold, round robin, up to ``max_bytes`` (at least one event)."""
        parts = self._pending
        self._pending = []
        size = sum(len(p) for p in parts)
        count = len(parts)
        feeds = self._feeds
        n = len(feeds)
        for step in range(n):
            if count and size >= max_bytes:
                break
            feed = feeds[(self._turn + step) % n]
            if feed.reader is None:
                continue
            for data in self._drain(feed, max_bytes - size if count else max_bytes):
                parts.append(data)
                size += len(data)
                count += 1
        self._turn = (self._turn + 1) % max(n, 1)
        if not count:
            return None
        return Taken(b"".join(parts), count, None)

    def _drain(self, feed: _Feed, budget: int) -> list[bytes]:
        reader = feed.reader
        assert reader is not None
        out: list[bytes] = []
        size = 0
        try:
            while reader.held() and (not out or size < budget):
                if isinstance(reader, HubSubscription):
                    data = self._event(feed, reader)
                else:
                    data = self._chunk(feed, reader)
                out.append(data)
                size += len(data)
            if feed.reader is not None and not reader.held():
                end = reader.end_reason()
                if end is not None:
                    self._end(feed, end, out)
        except StreamError as exc:
            self._end(feed, exc, out)
        return out

    def _chunk(self, feed: _Feed, reader: StreamReader) -> bytes:
        chunk = reader.peek(0)
        reader.skip(1)
        if chunk.done:
            self._finish(feed)
        else:
            self.cursor.entries[feed.index] = str(chunk.seq + 1)
        event = b"end" if chunk.done else b"chunk"
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (self.cursor.encode(), event, _encode(chunk))

    def _event(self, feed: _Feed, reader: HubSubscription) -> bytes:
        event = reader.receive_nowait()
        if feed.source.exact:
            self.cursor.entries[feed.index] = str(event.offset + 1)
        return b"id: %s\nevent: event\ndata: %s\n\n" % (
            self.cursor.encode(),
            event.encoded(Format.JSON),
        )

    def _end(self, feed: _Feed, end: IcefloeError, out: list[bytes]) -> None:
        self._finish(feed)
        if not isinstance(end, EndOfStream):  # else its ``end`` chunk said it all
            out.append(self._error(feed.source, end))

    def _finish(self, feed: _Feed) -> None:
        self.cursor.entries[feed.index] = DONE
        reader = feed.reader
        feed.reader = None
        if reader is not None:
            reader.close()

    def _error(self, source: Source, exc: IcefloeError) -> bytes:
        if isinstance(exc, StreamError):
            code, message = exc.code, exc.message
        else:  # the hub closed under the subscription
            code, message = ErrorCode.CANCELLED, "the hub closed"
        key = "stream_id" if source.kind == "stream" else "topic"
        body = {"code": code.value, "message": message, key: source.name}
        return b"id: %s\nevent: error\ndata: %s\n\n" % (self.cursor.encode(), _encode(body))
