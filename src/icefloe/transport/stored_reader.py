"""Reading a stream from the store: after a restart, or past the memory's history.

A client resuming with ``Last-Event-ID`` (or ``from_seq``, or a long-poll
``after_seq``) may ask for a stream this process does not hold (it started
before a restart) or for seqs its log no longer holds. When the flow has a
store, a :class:`StoredReader` answers: it reads the stored chunks in pages
of :data:`PAGE` from the resume point, then either the stored terminal or,
when the run is live here (resumed after the restart), the live stream from
the seq after the last stored one. It has the reader interface of the
stream pumps and of the long-poll (``held``, ``wait``, ``receive_nowait``,
``end_reason``, ``interrupt``, ``close``), and holds one page at most.

A run the store knows but nobody produces yet (an idempotent start that
another request is admitting, a restart still recovering) is polled every
:data:`POLL_S` seconds while the reader waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import (
    DecodeError,
    EndOfStream,
    IcefloeError,
    StreamError,
    StreamNotFound,
    WouldBlock,
)
from icefloe.runtime.flow import Flow
from icefloe.runtime.subscription import Subscription
from icefloe.store.protocol import Store, StoreUnavailable
from icefloe.store.records import decode_chunk
from icefloe.store.types import Terminal
from icefloe.transport.errors import HttpError
from icefloe.transport.shared import Taken

__all__ = [
    "PAGE",
    "POLL_S",
    "StoredReader",
    "open_for_subscriber",
    "open_stored_reader",
    "stored_take",
    "terminal_error",
]

log = logging.getLogger("icefloe.store")

#: stored chunks read (and held) at once
PAGE = 256
#: seconds between looks at a stored run nobody produces here yet
POLL_S = 0.1


def terminal_error(sid: str, terminal: Terminal) -> IcefloeError:
    """What a reader raises at a stored terminal."""
    if terminal.code is None:
        return EndOfStream()
    try:
        code = ErrorCode(terminal.code)
    except ValueError:
        code = ErrorCode.FAILED
    return StreamError(code, terminal.message or code.value, sid)


class StoredReader:
    """The stored chunks of one stream from a seq, then its terminal or live log."""

    def __init__(
        self, flow: Flow, store: Store, stream_id: str, from_seq: int, lag_limit: int | None
    ) -> None:
        self._flow = flow
        self._store = store
        self.stream_id = stream_id
        self._next = from_seq
        self._lag_limit = lag_limit
        self._buffer: deque[StreamChunk] = deque()
        self._live: Subscription | None = None
        self._end: IcefloeError | None = None
        self._poke = asyncio.Event()
        self._closed = False

    @property
    def next_seq(self) -> int:
        """The seq this reader returns next."""
        return self._next if self._live is None else self._live.next_seq

    def held(self) -> int:
        if self._live is not None:
            return self._live.held()
        return len(self._buffer)

    def receive_nowait(self) -> StreamChunk:
        """The next chunk if one is held.

        :raises WouldBlock: none yet; await :meth:`wait`.
        :raises EndOfStream: after the ``done`` chunk.
        :raises StreamError: the stream's abnormal terminal (or ``corrupt``).
        """
        if self._live is not None:
            chunk = self._live.receive_nowait()
        elif self._buffer:
            chunk = self._buffer.popleft()
            if chunk.done:
                self._end = EndOfStream()
        elif self._end is not None:
            raise self._end
        else:
            raise WouldBlock(f"no stored chunk of {self.stream_id!r} yet")
        self._next = chunk.seq + 1
        return chunk

    def peek(self, offset: int = 0) -> StreamChunk:
        """The held chunk ``offset`` places ahead, without taking it (WebSocket pump)."""
        if self._live is not None:
            return self._live.peek(offset)
        return self._buffer[offset]

    def skip(self, count: int) -> None:
        """Take ``count`` held chunks (WebSocket pump)."""
        if self._live is not None:
            self._live.skip(count)
            return
        for _ in range(count):
            self.receive_nowait()

    async def wait_changed(self) -> None:
        """Wait for news even while chunks are held (WebSocket pump held back for
        credit): the live stream's next change, or :meth:`interrupt`."""
        if self._live is not None:
            await self._live.wait_changed()
            return
        self._poke.clear()
        await self._poke.wait()

    def end_reason(self) -> IcefloeError | None:
        if self._live is not None:
            return self._live.end_reason()
        return None if self._buffer else self._end

    async def wait(self) -> None:
        """Until a chunk is held or the end is known (or :meth:`interrupt`)."""
        if self._live is not None:
            await self._live.wait()
        elif not self._buffer and self._end is None and not self._closed:
            await self._fetch_or_end()

    async def prime(self) -> None:
        """Read the first page (or the end) without waiting for a producer."""
        if not self._buffer and self._end is None and self._live is None:
            await self._fetch_or_end(poll=False)

    def interrupt(self) -> None:
        if self._live is not None:
            self._live.interrupt()
        self._poke.set()

    def close(self) -> None:
        self._closed = True
        if self._live is not None:
            self._live.close()

    async def _fetch_or_end(self, *, poll: bool = True) -> None:
        try:
            await self._fetch(poll=poll)
        except StoreUnavailable as exc:
            # The reader ends with a code the client can retry on, never a 500.
            log.warning("stream %s: the store failed a read: %s", self.stream_id, exc)
            self._end = StreamError(
                ErrorCode.UNAVAILABLE, "the stream store is unavailable", self.stream_id
            )

    async def _fetch(self, *, poll: bool = True) -> None:
        store, sid = self._store, self.stream_id
        while True:
            stored = await store.read(sid, self.next_seq, PAGE)
            if stored:
                self._fill(stored[0].seq, [s.record for s in stored])
                if len(stored) < PAGE and self._end is None:
                    await self._peek_terminal(stored[-1].seq)
                return
            if self._follow_live():
                return
            run = await store.get_run(sid)
            if run is None:
                self._end = StreamError(ErrorCode.NOT_FOUND, "no such stream", sid)
                return
            if run.last_seq >= self.next_seq:
                if await store.read(sid, self.next_seq, 1):
                    continue  # stored meanwhile
                # Stored once, absent now (retention): never loop on it.
                self._end = StreamError(
                    ErrorCode.HISTORY_GONE, f"seq {self.next_seq} is no longer stored", sid
                )
                return
            if run.terminal is not None:
                self._end = terminal_error(sid, run.terminal)
                return
            if not poll:
                return
            self._poke.clear()
            try:
                async with asyncio.timeout(POLL_S):
                    await self._poke.wait()
            except TimeoutError:
                pass
            if self._poke.is_set():
                return  # interrupted: the caller writes a heartbeat and waits again

    async def _peek_terminal(self, last: int) -> None:
        """Known now, the terminal after ``last`` goes out in the same write."""
        run = await self._store.get_run(self.stream_id)
        if run is not None and run.terminal is not None and run.last_seq <= last:
            self._end = terminal_error(self.stream_id, run.terminal)

    def _fill(self, first: int, records: list[bytes]) -> None:
        if first != self.next_seq:
            self._end = StreamError(
                ErrorCode.HISTORY_GONE,
                f"seq {self.next_seq} is no longer stored; oldest is {first}",
                self.stream_id,
            )
            return
        for seq, record in enumerate(records, first):
            try:
                self._buffer.append(decode_chunk(record, stream_id=self.stream_id, seq=seq))
            except DecodeError as exc:
                # Never delivered: the reader gets what preceded it, then ``corrupt``.
                log.error("stream %s: stored seq %d is corrupt: %s", self.stream_id, seq, exc)
                self._end = StreamError(
                    ErrorCode.CORRUPT, f"stored seq {seq} failed its check", self.stream_id
                )
                return

    def _follow_live(self) -> bool:
        """Go on with the live stream when this process produces it from our seq."""
        if self._flow.brief(self.stream_id) is None:
            return False
        try:
            self._live = self._flow.subscribe(
                self.stream_id, self.next_seq, lag_limit=self._lag_limit
            )
        except (StreamError, ValueError, StreamNotFound):
            return False
        return True


StoredTake = Callable[[StoredReader, int], Taken | None]


def stored_take(encode: Callable[[StreamChunk], bytes]) -> StoredTake:
    """The pump's ``take`` for a :class:`StoredReader` (it encodes its own events)."""

    def take(reader: StoredReader, max_bytes: int) -> Taken | None:
        parts: list[bytes] = []
        size = 0
        first: StreamChunk | None = None
        while reader.held() and (first is None or size < max_bytes):
            try:
                chunk = reader.receive_nowait()
            except StreamError:
                if first is None:
                    raise
                break
            except (EndOfStream, WouldBlock):
                break
            first = first or chunk
            data = encode(chunk)
            parts.append(data)
            size += len(data)
        if first is None:
            return None
        return Taken(b"".join(parts), len(parts), first)

    return take


async def open_stored_reader(
    flow: Flow,
    can_access: Callable[[str], bool],
    stream_id: str,
    from_seq: int,
    lag_limit: int | None,
) -> StoredReader | None:
    """A reader of ``stream_id`` from the flow's store at ``from_seq``; None when
    the stored run ended before ``from_seq`` (everything was read).

    :raises LookupError: no store, no such stored run, another tenant's, or a
        run recorded for its idempotency key only (its chunks were never stored).
    :raises StoreUnavailable: the store did not answer.
    """
    store = flow.store
    if store is None:
        raise LookupError(stream_id)
    run = await store.get_run(stream_id)
    if run is None or not can_access(run.run.tenant) or run.run.reliability.rank == 0:
        raise LookupError(stream_id)
    if run.terminal is not None and from_seq > run.last_seq:
        return None
    return StoredReader(flow, store, stream_id, from_seq, lag_limit)


async def open_for_subscriber(
    flow: Flow,
    can_access: Callable[[str], bool],
    stream_id: str,
    from_seq: int | None,
    lag_limit: int | None,
) -> StoredReader | None:
    """A stored reader for a WebSocket ``subscribe`` (or session resume) at
    ``from_seq`` that this process's memory cannot serve; None when memory
    serves it, or when the store cannot either (the caller answers as without
    a store).

    :raises HttpError: ``unavailable``: the store did not answer.
    """
    if flow.store is None or from_seq is None:
        return None
    held = flow.held_from(stream_id)
    if held is not None and from_seq >= held:
        return None
    gone = flow.finished(stream_id) if held is None else None
    if gone is not None and from_seq >= gone.next_seq:
        return None  # everything was read: the caller says so
    try:
        return await open_stored_reader(flow, can_access, stream_id, from_seq, lag_limit)
    except LookupError:
        return None
    except StoreUnavailable:
        raise HttpError(
            ErrorCode.UNAVAILABLE, "the stream store is unavailable", {"Retry-After": "1"}
        ) from None
