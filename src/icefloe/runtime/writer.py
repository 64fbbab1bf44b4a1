"""Producing a stream from code outside any node: ``flow.open_stream``.

A webhook handler, a test or a bridge writes chunks with the same seq,
backpressure and clean-up rules as a node::

    async with flow.open_stream(Headers(tenant="acme")) as writer:
        await writer.emit("Hel")
        await writer.emit("lo")
    # leaving the block sends the done chunk; an exception aborts with "failed"
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from icefloe.core.messages import NO_META, StreamChunk
from icefloe.exceptions import ErrorCode, StreamClosedError, WouldBlock
from icefloe.runtime.stream import StreamState, StreamStatistics
from icefloe.runtime.stream_types import chunk_size

if TYPE_CHECKING:
    from icefloe.runtime.budgets import Gate

__all__ = ["StreamWriter"]


class StreamWriter:
    """The producing end of one stream. Not safe to share between tasks."""

    __slots__ = ("_closed", "_gate", "_state")

    def __init__(self, state: StreamState, gate: Gate | None = None) -> None:
        self._state = state
        #: the stream's byte budgets (None: the flow has none)
        self._gate = gate
        self._closed = False

    @property
    def stream_id(self) -> str:
        return self._state.stream_id

    @property
    def next_seq(self) -> int:
        return self._state.next_seq

    @property
    def closed(self) -> bool:
        """Whether this writer finished (close or abort) or the stream ended."""
        return self._closed or bool(self._state.phase)

    def statistics(self) -> StreamStatistics:
        return self._state.statistics()

    def emit_nowait(
        self, text: str, *, meta: dict[str, Any] | None = None, data: Any = None, done: bool = False
    ) -> StreamChunk:
        """Release the next chunk now.

        :raises StreamClosedError: the writer or the stream already ended.
        :raises WouldBlock: the slowest reader is a full buffer behind, or a
            byte budget (bytes/s, in-flight bytes) has no room now.
        """
        state = self._check_open()
        if not state.has_room():
            raise WouldBlock(f"stream {state.stream_id!r} is full")
        gate = self._gate
        if gate is not None and not gate.try_acquire(_size(text, data)):
            raise WouldBlock(f"stream {state.stream_id!r} is over a byte budget")
        return self._release(text, meta, data, done)

    async def emit(
        self, text: str, *, meta: dict[str, Any] | None = None, data: Any = None, done: bool = False
    ) -> StreamChunk:
        """Release the next chunk, waiting while the slowest reader is full or a
        byte budget (bytes/s, in-flight bytes) has no room.

        :raises StreamClosedError: the writer or the stream already ended,
            including while waiting (a reader cancelled it, its deadline passed).
        """
        state = self._check_open()
        gate = self._gate
        if gate is not None:
            await gate.acquire(_size(text, data))
            state = self._check_open()
        if not state.has_room():
            await state.wait_room()
            state = self._check_open()
        return self._release(text, meta, data, done)

    def _check_open(self) -> StreamState:
        state = self._state
        if self._closed or state.phase:
            raise StreamClosedError(state.stream_id, state.code)
        return state

    def _release(
        self, text: str, meta: dict[str, Any] | None, data: Any, done: bool
    ) -> StreamChunk:
        state = self._state
        chunk = StreamChunk(
            state.stream_id, state.next_seq, text, done, NO_META if meta is None else meta, data
        )
        state.publish(chunk)
        if done:
            self._closed = True
        return chunk

    async def close(self, text: str = "", *, meta: dict[str, Any] | None = None) -> None:
        """Send the ``done`` chunk. Idempotent; a no-op if the stream already ended."""
        if self.closed:
            self._closed = True
            return
        await self.emit(text, meta=meta, done=True)

    def abort(self, code: ErrorCode | str = ErrorCode.FAILED, message: str = "") -> None:
        """End the stream abnormally; readers get ``code``. Idempotent."""
        code = ErrorCode(code)  # a bad code raises before anything changes
        self._closed = True
        if code is ErrorCode.CANCELLED or code is ErrorCode.TIMEOUT:
            self._state.cancel(code, message)
        else:
            self._state.fail(code, message)

    async def __aenter__(self) -> StreamWriter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            self.abort(ErrorCode.FAILED, f"writer raised {exc_type.__name__}")

    def __del__(self) -> None:
        if not self._closed and not self._state.phase:
            warnings.warn(
                f"StreamWriter for {self._state.stream_id!r} was never closed; aborting it",
                ResourceWarning,
                stacklevel=1,
            )
            try:
                self.abort(ErrorCode.FAILED, "writer was garbage-collected")
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


def _size(text: str, data: Any) -> int:
    # What the chunk will count against byte budgets (see chunk_size).
    return len(text) if data is None else chunk_size(StreamChunk("", 0, text, False, NO_META, data))
