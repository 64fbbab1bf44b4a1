"""Topics numbered by a log (:mod:`icefloe.hub.sequence`, ``Hub.publish_at``,
``Hub.restore``): a resume never jumps a gap or crosses an epoch."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.exceptions import StreamError
from icefloe.hub import Hub, HubEvent
from icefloe.hub.limits import HubLimits
from icefloe.hub.sequence import Step, align

EPOCHS = st.sampled_from(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])


@given(EPOCHS, st.integers(0, 50), EPOCHS, st.integers(0, 50))
def test_align_is_the_documented_table(epoch: str, nxt: int, got: str, offset: int) -> None:
    step = align(epoch, nxt, got, offset)
    if got != epoch:
        assert step is Step.RESET
    elif offset == nxt:
        assert step is Step.APPEND
    elif offset > nxt:
        assert step is Step.GAP
    else:
        assert step is Step.STALE


@settings(max_examples=200, deadline=None)  # an event loop per example: slow on a busy machine
@given(st.lists(st.tuples(EPOCHS, st.integers(0, 30)), max_size=40), st.integers(0, 30))
def test_a_replay_is_exactly_the_log_events_after_the_offset(
    log: list[tuple[str, int]], resume: int
) -> None:
    """Whatever a log hands the hub (gaps, repeats, new epochs), a resume from
    (offset, epoch) replays a contiguous run of events ending at the newest,
    of that epoch, or is history_gone."""

    async def run() -> None:
        async with Hub(HubLimits(history_per_topic=8)) as hub:
            delivered: list[tuple[str, int]] = []
            for epoch, offset in log:
                event = await hub.publish_at("t", offset, tenant="x", offset=offset, epoch=epoch)
                if event is not None:
                    delivered.append((epoch, offset))
            if not delivered:
                return
            epoch = delivered[-1][0]
            try:
                sub = hub.subscribe("t", tenant="x", from_offset=resume, epoch=epoch)
            except StreamError as exc:
                gone = exc.code
                assert gone == "history_gone"
                return
            got = [sub.receive_nowait() for _ in range(sub.held())]
            offsets = [e.offset for e in got]
            assert all(e.epoch == epoch for e in got)
            if got:
                assert offsets == list(range(resume, delivered[-1][1] + 1))
                # every one of them was handed over in this epoch, in this order
                assert [(epoch, o) for o in offsets] == delivered[-len(got) :]

    asyncio.run(run())


async def test_publish_at_takes_the_log_numbering() -> None:
    async with Hub() as hub:
        first = await hub.publish_at("t", "a", tenant="x", offset=7, epoch="e1e1e1e1e1e1")
        assert first is not None
        assert (first.offset, first.epoch) == (7, "e1e1e1e1e1e1")
        assert await hub.publish_at("t", "a", tenant="x", offset=7, epoch="e1e1e1e1e1e1") is None
        await hub.publish_at("t", "b", tenant="x", offset=8, epoch="e1e1e1e1e1e1")
        sub = hub.subscribe("t", tenant="x", from_offset=7, epoch="e1e1e1e1e1e1")
        assert [e.data for e in (sub.receive_nowait(), sub.receive_nowait())] == ["a", "b"]
        # A gap: offsets 9..11 were never handed over, so nobody resumes across them.
        await hub.publish_at("t", "c", tenant="x", offset=12, epoch="e1e1e1e1e1e1")
        with pytest.raises(StreamError, match="no longer retained"):
            hub.subscribe("t", tenant="x", from_offset=8, epoch="e1e1e1e1e1e1")
        assert hub.position("t", tenant="x") == ("e1e1e1e1e1e1", 13)


async def test_restore_refills_history_and_numbers_on() -> None:
    events = [HubEvent("t", n, "x", {"n": n}, {}, n, epoch="abcabcabcabc") for n in (3, 4, 5, 7)]
    async with Hub() as hub:
        hub.restore(events)
        assert hub.position("t", tenant="x") == ("abcabcabcabc", 8)
        # 6 is missing (a corrupt record): no resume crosses it.
        with pytest.raises(StreamError):
            hub.subscribe("t", tenant="x", from_offset=4, epoch="abcabcabcabc")
        sub = hub.subscribe("t", tenant="x", from_offset=7, epoch="abcabcabcabc")
        assert sub.receive_nowait().data == {"n": 7}
