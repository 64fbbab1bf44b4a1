"""What both engines' producers share: the source read, the window, the append loop."""

from __future__ import annotations

from icefloe.backplane.limits import MAX_BATCH, STALE_MS
from icefloe.backplane.producing import batch_room, fresh, pump, ready_chunks
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, StreamError, WouldBlock


class Source:
    """A ChunkSource double: what it holds now, then its end (or nothing more yet)."""

    def __init__(self, *batches: list[StreamChunk | BaseException]) -> None:
        self._batches = list(batches)
        self._now: list[StreamChunk | BaseException] = self._batches.pop(0) if batches else []
        self.closed = False
        self.waits = 0

    def receive_nowait(self) -> StreamChunk:
        if not self._now:
            raise WouldBlock
        item = self._now[0]
        if isinstance(item, BaseException):
            raise item
        self._now.pop(0)
        return item

    async def wait(self) -> None:
        self.waits += 1
        self._now = self._batches.pop(0)

    def close(self) -> None:
        self.closed = True


def chunk(seq: int, *, done: bool = False) -> StreamChunk:
    return StreamChunk("s", seq, f"t{seq}", done=done)


def seqs(ready: tuple[list[StreamChunk], BaseException | None]) -> tuple[list[int], object]:
    return [c.seq for c in ready[0]], ready[1]


def test_ready_chunks_takes_what_is_there_up_to_the_limit() -> None:
    source = Source([chunk(0), chunk(1), chunk(2)])
    assert seqs(ready_chunks(source, 2)) == ([0, 1], None)
    assert seqs(ready_chunks(source, 5)) == ([2], None)


def test_ready_chunks_stops_at_the_end() -> None:
    end = EndOfStream("done")
    assert seqs(ready_chunks(Source([chunk(0), end]), 5)) == ([0], end)


def test_fresh_is_within_the_staleness() -> None:
    assert fresh(1000, 1000 + STALE_MS)
    assert not fresh(1000, 1001 + STALE_MS)


def test_batch_room_is_the_window_past_the_slowest_reader() -> None:
    assert batch_room(None, 0, 4) == MAX_BATCH  # no reader elsewhere
    assert batch_room(10, 12, 4) == 2
    assert batch_room(10, 14, 4) == 0  # wait for the readers
    assert batch_room(10, 20, 4) == 0
    assert batch_room(10_000, 0, 10_000) == MAX_BATCH


async def test_pump_appends_in_batches_then_closes_the_source() -> None:
    source = Source([chunk(0), chunk(1), chunk(2)], [chunk(3, done=True), EndOfStream("done")])
    asked: list[int] = []
    appended: list[list[int]] = []

    async def room(next_seq: int) -> int:
        asked.append(next_seq)
        return 2

    async def append(chunks: list[StreamChunk]) -> None:
        appended.append([c.seq for c in chunks])

    async def fail(error: StreamError, next_seq: int) -> None:
        raise AssertionError("not an abnormal end")

    await pump(source, room, append, fail)
    assert appended == [[0, 1], [2], [3]]
    assert asked == [0, 2, 3, 3]  # nothing ready at 3: the source was waited on
    assert source.waits == 1
    assert source.closed


async def test_pump_writes_an_abnormal_end_after_the_last_chunk() -> None:
    error = StreamError(ErrorCode.CANCELLED, "stop", "s")
    source = Source([chunk(0), chunk(1), error])
    ended: list[tuple[ErrorCode, int]] = []

    async def room(next_seq: int) -> int:
        return 8

    async def append(chunks: list[StreamChunk]) -> None:
        pass

    async def fail(err: StreamError, next_seq: int) -> None:
        ended.append((err.code, next_seq))

    await pump(source, room, append, fail)
    assert ended == [(ErrorCode.CANCELLED, 2)]
    assert source.closed
