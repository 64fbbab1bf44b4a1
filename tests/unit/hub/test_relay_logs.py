"""A relay the hub refuses logs two lines at most, not one per chunk (issue 15, finding 6)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from icefloe import Context, Headers, Message, Node, create
from icefloe.hub import Hub, HubLimits, relay_stream

CHUNKS = 200


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def hub_log() -> Iterator[list[logging.LogRecord]]:
    logger = logging.getLogger("icefloe.hub")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    keep = _Keep()
    logger.addHandler(keep)
    try:
        yield keep.records
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)


async def relay_of(text: str, hub: Hub) -> tuple[int, int]:
    """Relay a run of CHUNKS chunks of ``text`` (and the done chunk) to ``runs.t``."""

    async def emit(msg: Message, ctx: Context) -> None:
        for _ in range(CHUNKS):
            await ctx.emit_chunk(parent=msg, text=text)
        await ctx.emit_chunk(parent=msg, text="", done=True)

    flow = create(Node(emit, name="emit").to())
    async with asyncio.timeout(30):
        flow.run()
        try:
            message = Message(payload=None, headers=Headers(tenant="acme"))
            sid = await flow.start(message, history=CHUNKS + 1)
            relayed, skipped = await relay_stream(flow, hub, sid, "runs.t", tenant="acme")
        finally:
            await hub.aclose()
            await flow.stop()
    return relayed, skipped


async def test_chunks_too_big_for_the_hub_cost_two_warnings(
    hub_log: list[logging.LogRecord],
) -> None:
    result = await relay_of("x" * 4096, Hub(HubLimits(max_event_bytes=1024)))
    assert result == (1, CHUNKS)  # only the done chunk fits
    assert [r.levelno for r in hub_log] == [logging.WARNING, logging.WARNING]
    first, summary = (r.getMessage() for r in hub_log)
    assert first.startswith("relay to 'runs.t': event skipped: ")
    assert summary.startswith(f"relay to 'runs.t': {CHUNKS} events skipped (last: ")


async def test_a_relay_that_fits_logs_nothing(hub_log: list[logging.LogRecord]) -> None:
    assert await relay_of("small", Hub()) == (CHUNKS + 1, 0)
    assert hub_log == []
