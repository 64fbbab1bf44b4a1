"""The cursor of ``GET /v1/events`` and the merge of its readers (icefloe.transport.multiplex)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefloe import Context, Flow, Headers, Message, Node, create
from icefloe.hub import Hub
from icefloe.transport.multiplex import DONE, MAX_SOURCES, Cursor, MergedReader, Source

H = Headers(tenant="t")

entries = st.one_of(st.just(""), st.just(DONE), st.integers(0, 2**63 - 1).map(str))
source_lists = st.lists(
    st.builds(Source, st.sampled_from(["stream", "topic"]), st.text("abc.*>", min_size=1)),
    min_size=1,
    max_size=MAX_SOURCES,
    unique=True,
)


@given(source_lists, st.data())
def test_a_cursor_reads_back_what_it_wrote(sources: list[Source], data: st.DataObject) -> None:
    written = data.draw(st.lists(entries, min_size=len(sources), max_size=len(sources)))
    text = Cursor(sources, written).encode().decode()
    assert len(text) <= 9 + MAX_SOURCES * 20
    assert Cursor.parse(sources, text).entries == written


@given(source_lists, source_lists)
def test_a_cursor_of_another_source_list_is_refused(a: list[Source], b: list[Source]) -> None:
    text = Cursor(a).encode().decode()
    if a != b:
        with pytest.raises(ValueError, match="Last-Event-ID"):
            Cursor.parse(b, text)


@pytest.mark.parametrize("rest", ["1", "1,2,3", "-1,2", "1,y", "1," + "9" * 20, "٣,1"])
def test_bad_positions_are_refused(rest: str) -> None:
    sources = [Source("stream", "a"), Source("topic", "b")]
    tag = Cursor(sources).tag
    with pytest.raises(ValueError, match="Last-Event-ID"):
        Cursor.parse(sources, f"{tag}:{rest}")


@pytest.fixture
async def flow() -> AsyncIterator[Flow]:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    f = create(Node(idle, name="idle").to())
    f.run()
    yield f
    async with asyncio.timeout(10):
        await f.stop()


async def test_sources_share_a_write_round_robin(flow: Flow) -> None:
    writers = [flow.open_stream(H) for _ in range(2)]
    sources = [Source("stream", w.stream_id) for w in writers]
    merged = MergedReader(Cursor(sources))
    for i, (w, s) in enumerate(zip(writers, sources, strict=True)):
        merged.add(i, s, flow.subscribe(w.stream_id))
        for n in range(50):
            w.emit_nowait(f"{n}")
    # A budget that fits a few events: the first source may not take it all.
    first = merged.take(None, 1)
    second = merged.take(None, 1)
    assert first is not None
    assert second is not None
    assert writers[0].stream_id.encode() in first.data
    assert writers[1].stream_id.encode() in second.data
    merged.close()
    for w in writers:
        await w.close()


async def test_ends_and_topic_events_are_tagged_and_wait_wakes_on_either(flow: Flow) -> None:
    writer = flow.open_stream(H)
    hub = Hub()
    sources = [Source("stream", writer.stream_id), Source("topic", "news", exact=True)]
    merged = MergedReader(Cursor(sources))
    merged.add(0, sources[0], flow.subscribe(writer.stream_id))
    merged.add(1, sources[1], hub.subscribe("news", tenant="t"))
    async with asyncio.timeout(10):
        waiting = asyncio.ensure_future(merged.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        await hub.publish("news", {"n": 1}, tenant="t")
        await waiting
        taken = merged.take(None, 65536)
        assert taken is not None
        assert b"event: event\n" in taken.data
        assert merged.cursor.entries == ["", "1"]
        writer.emit_nowait("a")
        writer.emit_nowait("", done=True)
        await merged.wait()
        taken = merged.take(None, 65536)
        assert taken is not None
        assert taken.data.count(b"event: chunk\n") == 1
        assert taken.data.count(b"event: end\n") == 1
        assert merged.cursor.entries == [DONE, "1"]
        assert merged.end_reason() is None  # the topic goes on
        waiting = asyncio.ensure_future(merged.wait())
        await asyncio.sleep(0)
        merged.interrupt()
        await waiting
    merged.close()
    hub.close()
