"""The streams one ``/v1/ws`` connection follows, each with its credit and pump.

Each followed stream has a pump task that moves its chunks from the stream
(a *blocking* reader: :class:`~icefloe.runtime.subscription.Subscription`)
to the connection's :class:`~icefloe.transport.ws_sender.WsSender`, as its
credit (a :class:`~icefloe.core.credit.CreditWindow`) and its queue's room
allow:

* every chunk taken consumes one credit; at 0 the pump stops reading, and
  the producer's ``emit_chunk`` waits once the stream's buffer is full, so
  memory stays flat: the stream holds at most its buffer, the pump nothing;
* ``credit {n}`` grants ``n`` more, capped at :data:`MAX_CREDIT` (a client
  granting more is capped, not refused);
* ``pause`` stops the pump as credit 0 does, ``resume`` continues; nothing
  is lost either way, and an end (a ``cancel``) still gets through;
* ``unsubscribe`` stops the pump at its next turn and drops the stream's
  queued chunks unsent.

Ops about a stream that just ended here (or was unsubscribed) are no-ops, as
Reactive Streams' ``request(n)`` after the end: :class:`WsStreams` remembers
the last :data:`MAX_ENDED` such streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from icefloe.backplane.reader import RemoteReader  # issue 12: a stream of another gateway
from icefloe.core.codec import Format
from icefloe.core.credit import CreditWindow
from icefloe.core.ops import Error, encode_chunk, encode_server
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError
from icefloe.runtime.subscription import Subscription
from icefloe.transport.errors import HttpError
from icefloe.transport.stored_reader import StoredReader  # issue 11: read from the store
from icefloe.transport.ws_sender import WsSender
from icefloe.transport.ws_session import WsSession
from icefloe.transport.ws_settings import MAX_CREDIT

__all__ = ["MAX_ENDED", "WsReader", "WsStreams"]

#: what a followed stream is read through: in memory, from the store, or
#: from the backplane (a stream another gateway produces)
WsReader = Subscription | StoredReader | RemoteReader

#: ended streams a connection remembers, so that ops crossing their end are no-ops
MAX_ENDED = 1024


class _Follow:
    """One stream followed on one connection: its reader, credit and pump task.

    Its chunks wait in the connection's :class:`WsSender` under its stream id.
    """

    __slots__ = ("credit", "paused", "reader", "stopped", "stream_id", "task")

    def __init__(self, reader: WsReader, window: int) -> None:
        self.reader = reader
        self.stream_id = reader.stream_id
        self.credit = CreditWindow(window, MAX_CREDIT)
        self.paused = False
        #: unsubscribed: the pump stops at its next turn
        self.stopped = False
        self.task: asyncio.Task[None] | None = None


class WsStreams:
    """The streams one connection follows (see the module docstring).

    :param sender: the connection's send path; each stream queues there.
    :param fmt: the connection's format.
    :param session: the connection's session: a stream that ends abnormally
        leaves it, and the seq of an ``end`` sent is recorded there.
    :param window: the initial credit of every stream.
    """

    def __init__(self, sender: WsSender, fmt: Format, session: WsSession, window: int) -> None:
        self._sender = sender
        self._fmt = fmt
        self._session = session
        self._window = window
        self._follows: dict[str, _Follow] = {}
        # Streams that ended on this connection lately: ops crossing the end are no-ops.
        self._ended: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        """Streams followed now."""
        return len(self._follows)

    def __contains__(self, stream_id: object) -> bool:
        """Whether the connection follows ``stream_id`` now."""
        return stream_id in self._follows

    def ended_here(self, stream_id: str) -> bool:
        """Whether ``stream_id`` ended (or was unsubscribed) on this connection lately."""
        return stream_id in self._ended

    def follow(self, reader: WsReader, priority: int) -> None:
        """Follow ``reader``'s stream with ``window`` credit: start its pump."""
        follow = _Follow(reader, self._window)
        self._follows[follow.stream_id] = follow
        self._sender.add_stream(follow.stream_id, priority)
        follow.task = asyncio.ensure_future(self._pump(follow))

    # -- credit and pause ------------------------------------------------------------

    def grant(self, stream_id: str, n: int) -> None:
        """``n`` more chunks may flow on the stream (capped at :data:`MAX_CREDIT`).

        :raises HttpError: ``not_found`` if the connection does not follow it.
        """
        follow = self._followed(stream_id)
        if follow is not None:
            follow.credit.grant(n)
            follow.reader.interrupt()

    def pause(self, stream_id: str) -> None:
        """No chunk flows on the stream until :meth:`resume`.

        :raises HttpError: ``not_found`` if the connection does not follow it.
        """
        follow = self._followed(stream_id)
        if follow is not None:
            follow.paused = True

    def resume(self, stream_id: str) -> None:
        """Chunks flow again on the stream, within its credit.

        :raises HttpError: ``not_found`` if the connection does not follow it.
        """
        follow = self._followed(stream_id)
        if follow is not None:
            follow.paused = False
            follow.reader.interrupt()

    def _followed(self, stream_id: str) -> _Follow | None:
        """The stream's follow; None if it just ended here (an op crossing the end
        on the wire is a no-op, as Reactive Streams' request(n) after the end)."""
        follow = self._follows.get(stream_id)
        if follow is None and stream_id not in self._ended:
            raise HttpError(ErrorCode.NOT_FOUND, "this connection does not follow that stream")
        return follow

    # -- the end of one stream, or of all ------------------------------------------------

    async def stop(self, stream_id: str) -> None:
        """Stop following ``stream_id`` here and in the session; the run goes on.

        The pump stops at its next turn (it may finish a write in progress)
        and the stream's queued chunks are dropped unsent. A stream that just
        ended here is stopped all the same (nothing to do).

        :raises HttpError: ``not_found`` if the connection does not follow it.
        """
        follow = self._followed(stream_id)
        if follow is not None:
            follow.stopped = True
            self._sender.discard(stream_id)
            follow.reader.interrupt()
            if follow.task is not None:
                await asyncio.wait([follow.task])  # its finally marks the stream ended
            follow.reader.close()
            if self._follows.get(stream_id) is follow:
                del self._follows[stream_id]
        self._session.forget(stream_id)

    async def aclose(self) -> None:
        """Stop every pump and close every reader (the connection is ending)."""
        tasks = [f.task for f in self._follows.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for follow in list(self._follows.values()):
            follow.reader.close()
        self._follows.clear()

    # -- one stream's pump -----------------------------------------------------------

    async def _pump(self, follow: _Follow) -> None:
        """Queue the stream's chunks on the send path as credit and room allow;
        then its terminal. Each chunk taken consumes one credit."""
        reader = follow.reader
        credit = follow.credit
        sender = self._sender
        key = follow.stream_id
        try:
            while not follow.stopped:
                if not reader.held():
                    end = reader.end_reason()
                    if isinstance(end, StreamError):
                        # An abnormal end has no seq to ack: the session lets go now.
                        self._session.forget(key)
                        self._push_error(key, end)
                        return
                    if end is not None:
                        return
                available = credit.available
                if follow.paused or not available:
                    # Held back, but an end (a cancel) must still get through.
                    await reader.wait_changed()
                    continue
                room = sender.room(key)
                if room <= 0:
                    await sender.wait_room(key)
                    continue
                n = min(available, reader.held())
                if not n:
                    await reader.wait()
                    continue
                frames = self._encode_run(reader, n, room)
                n = len(frames)
                last = reader.peek(n - 1)
                if last.done:
                    self._session.end_sent(key, last.seq)
                reader.skip(n)
                credit.consume(n)  # n <= available: no await since it was read
                if sender.push_chunks(key, frames):
                    await sender.drain()  # an idle connection: no hand-over
        except StreamError as exc:  # overrun: not for blocking readers, but be exact
            with contextlib.suppress(OSError):
                self._push_error(key, exc)
        except (TimeoutError, OSError):
            pass  # the send path failed (and cut the connection), or it is ending
        finally:
            reader.close()
            sender.forget(key)
            if self._follows.get(key) is follow:
                del self._follows[key]
                self._ended[key] = None
                if len(self._ended) > MAX_ENDED:
                    self._ended.popitem(last=False)

    def _encode_run(self, reader: WsReader, n: int, room: int) -> list[bytes | str]:
        """Up to ``n`` held chunks, encoded, stopping once ``room`` bytes are used."""
        frames: list[bytes | str] = []
        used = 0
        fmt = self._fmt
        for i in range(n):
            frame = encode_chunk(reader.peek(i), fmt)
            frames.append(frame)
            used += len(frame)
            if used >= room:
                break
        return frames

    def _push_error(self, stream_id: str, exc: StreamError) -> None:
        """The stream's terminal ``error``, queued behind its chunks."""
        error = Error(code=exc.code, message=exc.message, stream_id=stream_id)
        self._sender.push_tail(stream_id, encode_server(error, self._fmt))
