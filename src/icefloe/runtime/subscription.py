"""A reader of one stream: an async iterator over its chunks, in seq order.

It holds a :class:`~icefloe.core.cursor.Cursor` into the stream's log
(:class:`~icefloe.core.streamlog.StreamLog`) and reads through it: one
:meth:`Cursor.take` per chunk, or, for the only reader of a stream without
history (``flow.stream``), the log's solo fast path (``Cursor.solo_queue``),
which needs no call per chunk.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeAlias

from icefloe.core.messages import Message, StreamChunk
from icefloe.core.streamlog import Cursor
from icefloe.exceptions import (
    ClosedResourceError,
    EndOfStream,
    ErrorCode,
    InvalidState,
    StreamError,
    WouldBlock,
)
from icefloe.runtime.stream_types import StreamPhase

if TYPE_CHECKING:
    from icefloe.runtime.channel import Channel
    from icefloe.runtime.stream import StreamState

#: the inboxes and the message that start a run, sent on its reader's first wait
Kickoff: TypeAlias = "tuple[tuple[Channel[Message], ...], Message]"

__all__ = ["Kickoff", "Subscription"]


class Subscription:
    """An async iterator over one stream's chunks, in seq order.

    It ends after the ``done`` chunk, or raises :class:`StreamError` with the
    stream's terminal code. Leaving early (``break``, :meth:`aclose`, task
    cancellation, or dropping the last reference) detaches it; if it is the
    *owner* (the reader ``flow.stream`` made for the run it started) the
    stream is cancelled too, so its producers stop and its memory is freed.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_cursor",
        "_delivered",
        "_log",
        "_next_seq",
        "_owner",
        "_pending",
        "_state",
        "_waiter",
    )

    def __init__(
        self, state: StreamState, cursor: Cursor, owner: bool, kickoff: Kickoff | None = None
    ) -> None:
        self._state = state
        self._log = state.log
        self._cursor = cursor
        # The message that starts the run, sent on the first wait: where to.
        self._pending = kickoff
        self._owner = owner
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._delivered = 0  # once closed
        self._next_seq = 0  # once closed

    @property
    def stream_id(self) -> str:
        return self._state.stream_id

    @property
    def trace_id(self) -> str:
        return self._state.trace_id

    @property
    def owner(self) -> bool:
        """Whether this reader owns the run (leaving early cancels it)."""
        return self._owner

    @property
    def next_seq(self) -> int:
        """The seq this reader returns next (where it stopped, once closed)."""
        return self._next_seq if self._closed else self._cursor.pos

    @property
    def delivered(self) -> int:
        """Chunks this reader has returned."""
        if self._closed:
            return self._delivered
        cursor = self._cursor
        return cursor.pos - cursor.start

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StreamChunk:
        cursor = self._cursor
        chunk: StreamChunk | None
        while True:
            queue = cursor.solo_queue
            if queue:
                # StreamLog's solo fast path (see Cursor.solo_queue): the only
                # reader pops the log's queue itself. This is the per-token
                # path of every in-process reader; a call to Cursor.take
                # here costs ~5% of a one-hop stream (bench/run.py one_hop).
                # Caught up (an empty queue), it has nothing to take and,
                # blocking, cannot have been overrun: straight to waiting.
                chunk = queue.popleft()
                cursor.pos += 1
                if self._log.room_wanted:
                    self._log.popped()
                if chunk.done:
                    self._state.terminal_seen = True
                    self._release(cancel=False)
                return chunk
            if queue is None:
                chunk = cursor.take()
                if chunk is not None:
                    if chunk.done:
                        self._state.terminal_seen = True
                        self._release(cancel=False)
                    return chunk
                if not self._closed and cursor.lost():
                    raise self._overrun()
            ended = self._ended()
            if ended is not None:
                raise StopAsyncIteration if isinstance(ended, EndOfStream) else ended
            if self._pending is not None:
                await self._start_run()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            self._state.park_reader(waiter)
            try:
                await waiter
            except BaseException:
                self._waiter = None
                self._release(cancel=True)
                raise
            self._waiter = None

    def receive_nowait(self) -> StreamChunk:
        """The next chunk if one is held now.

        The same sequence as iterating, for edges that batch what is
        buffered into one write.

        :raises WouldBlock: nothing yet; await :meth:`wait`.
        :raises EndOfStream: the ``done`` chunk was already returned (or closed).
        :raises StreamError: the stream ended abnormally.
        """
        chunk = self._cursor.take()
        if chunk is not None:
            if chunk.done:
                self._state.terminal_seen = True
                self._release(cancel=False)
            return chunk
        if not self._closed and self._cursor.lost():
            raise self._overrun()
        ended = self._ended()
        if ended is not None:
            raise ended
        raise WouldBlock(f"no chunk of {self._state.stream_id!r} yet")

    def held(self) -> int:
        """How many chunks :meth:`receive_nowait` would return now without waiting.

        For edges that write a run of chunks at once (with :meth:`peek` and
        :meth:`skip`); 0 when closed. A lag-tolerant reader that was overrun
        still counts what it missed: its next :meth:`peek`, :meth:`skip` or
        :meth:`receive_nowait` raises ``StreamError("history_gone")``.
        """
        return self._cursor.available()

    def peek(self, offset: int = 0) -> StreamChunk:
        """The held chunk ``offset`` places ahead, without moving the cursor.

        :raises IndexError: ``offset`` is not below :meth:`held`.
        :raises StreamError: ``history_gone``: this lag-tolerant reader was overrun.
        """
        # Once per chunk on the edges' write path (a WebSocket run, an SSE
        # batch): the cursor checks bounds and overrun in one call, and the
        # errors are renamed only when raised. Three separate checks here
        # cost about 160 ns more per chunk (measured against this version).
        try:
            return self._cursor.peek(offset)
        except IndexError:
            raise IndexError(f"peek offset {offset} is not below held()") from None
        except InvalidState:
            raise self._overrun() from None

    def skip(self, count: int) -> None:
        """Move past ``count`` held chunks, exactly as ``count`` reads would.

        The floor is moved once for the whole run, so an edge that writes
        many chunks at once pays the per-read bookkeeping once.

        :raises ValueError: ``count`` is negative or more than :meth:`held`.
        :raises StreamError: ``history_gone``: this lag-tolerant reader was overrun.
        """
        cursor = self._cursor
        if not 0 <= count <= cursor.available():
            raise ValueError(f"cannot skip {count} chunks; {self.held()} held")
        if count == 0:
            return
        if cursor.lost():
            raise self._overrun()
        last = cursor.skip(count)
        if last.done:
            self._state.terminal_seen = True
            self._release(cancel=False)

    def _ended(self) -> EndOfStream | StreamError | None:
        """Why nothing more will come (None: more may come); detaches on the end."""
        state = self._state
        if self._closed:
            return EndOfStream(f"reader of {state.stream_id!r} is closed")
        if not state.phase:
            return None
        state.terminal_seen = True
        self._release(cancel=False)
        if state.phase is StreamPhase.DONE:
            return EndOfStream(f"stream {state.stream_id!r} is done")
        assert state.code is not None
        return StreamError(state.code, state.message, state.stream_id)

    async def wait(self) -> None:
        """Wait until :meth:`receive_nowait` has something to say (a chunk or an end).

        Cancelling the wait (a timeout, for heartbeats) keeps the reader attached.
        """
        if self._cursor.available() or self._closed or self._state.phase:
            return
        if self._pending is not None:
            await self._start_run()
            return
        await self._park(register=True)

    async def wait_changed(self) -> None:
        """Wait for the stream's next publish or end (or :meth:`interrupt`), even
        while chunks are held: for an edge that holds back for credit but must
        still notice the end of the stream."""
        if self._closed:
            return
        # An ended stream changes no more: only interrupt() wakes it then.
        await self._park(register=not self._state.phase)

    async def _park(self, *, register: bool) -> None:
        """Wait on a future that interrupt() (and, registered, the stream) resolves."""
        waiter = asyncio.get_running_loop().create_future()
        if register:
            self._state.park_reader(waiter)
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
            if not waiter.done():
                waiter.cancel()

    def interrupt(self) -> None:
        """End a pending :meth:`wait` early, as if something had arrived.

        For edges that must act on a clock while waiting (heartbeats)
        without a timeout per wait; the reader stays attached.
        """
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end_reason(self) -> EndOfStream | StreamError | None:
        """Why nothing more will come, once nothing is :meth:`held`; None: more may.

        An end detaches the reader, as reading it would.
        """
        if not self._closed and self._cursor.available():
            return None
        return self._ended()

    def _overrun(self) -> StreamError:
        # A lag-tolerant reader fell behind what the log holds: it is cut.
        lag_limit = self._cursor.lag_limit
        self._release(cancel=False)
        return StreamError(
            ErrorCode.HISTORY_GONE,
            f"the reader fell more than {lag_limit} chunks behind",
            self._state.stream_id,
        )

    async def _start_run(self) -> None:
        assert self._pending is not None
        targets, message = self._pending
        self._pending = None
        try:
            for inbox in targets:
                await inbox.send(message)
        except ClosedResourceError:
            self._state.cancel(ErrorCode.CANCELLED, "the flow stopped")
        except BaseException:
            self._release(cancel=True)
            raise

    def _release(self, *, cancel: bool) -> None:
        if self._closed:
            return
        self._closed = True
        cursor = self._cursor
        self._delivered = cursor.pos - cursor.start
        self._next_seq = cursor.pos
        # The log parks the detached cursor past any seq, so the hot path in
        # __anext__ falls through to the closed check.
        self._state.detach(cursor, abandon=cancel and self._owner)

    async def aclose(self) -> None:
        """Stop reading. Idempotent; an owner that leaves early cancels the stream."""
        self._release(cancel=True)

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        self._release(cancel=True)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release(cancel=True)

    def __del__(self) -> None:
        # ``break`` out of ``async for`` drops the last reference without
        # calling aclose: clean up here, as async generators' finalizers do.
        if not self._closed:
            try:
                self._release(cancel=True)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass
