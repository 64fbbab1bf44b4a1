"""The in-process examples run to completion (the WebSocket one needs a server: see test_ws.py),
and their flows behave as they say, checked in memory with icefloe.testing (docs/testing.md)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

import icefloe.testing
from icefloe import ErrorCode, Headers, Node, NodePolicy, create
from icefloe.testing import FakeClock

EXAMPLES = Path(__file__).parents[2] / "examples"


def load_example(script: str) -> ModuleType:
    """An example as a module (its ``__main__`` block does not run)."""
    name = f"{script.removesuffix('.py')}_example"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / script)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("llm_tokens.py", "stream complete"),
        ("hub_chat.py", ""),
        ("qos.py", "high priority behind 10 queued low ones"),
        ("durable_flow.py", "stored seqs 0..40, each once: True"),  # issue 11
        ("topic_resume.py", "resumed offsets [2, 3, 4] under the same epoch: True"),  # issue 11
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_run_it_with_names_the_command_that_runs_the_example(script: str) -> None:
    # "Run it with ``make demo``" once said of llm_tokens.py, which make demo never runs.
    doc = ast.get_docstring(ast.parse((EXAMPLES / script).read_text(encoding="utf-8")))
    assert doc is not None
    claimed = re.search(r"Run it with ``([^`]+)``", doc)
    if claimed is not None:
        assert claimed.group(1) == f"python examples/{script}"


def test_hub_chat_late_joiner_works_when_another_topic_publishes_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The lobby's first offset is then not 0: the late joiner must not assume it is.
    example = load_example("hub_chat.py")
    replies = dict(reversed(list(example.REPLIES.items())))
    assert next(iter(replies)) == "support"  # its assistant publishes first
    monkeypatch.setattr(example, "REPLIES", replies)
    asyncio.run(example.main())
    lines = capsys.readouterr().out.splitlines()
    lobby = [line.split(":", 1)[1] for line in lines if line.strip().startswith("lobby:")]
    late = [line.split(":", 1)[1] for line in lines if line.strip().startswith("late:")]
    assert len(lobby) == 1
    assert "@0," not in lobby[0]  # the case this test is about
    assert late == lobby  # the late joiner replayed all the watcher saw


# -- the examples' flows, in memory (icefloe.testing) ----------------------------


def test_llm_tokens_streams_every_word_in_order_after_its_time_to_first_token() -> None:
    example = load_example("llm_tokens.py")
    clock = FakeClock()

    async def main() -> tuple[float, str]:
        async with icefloe.testing.open(create(Node(example.llm, name="llm").to())) as t:
            run = await t.start(example.TEXT, headers=Headers(tenant="demo"))
            await run.wait_for(1)
            first_at = asyncio.get_running_loop().time()
            text = await run.text()
            run.assert_in_order()
            return first_at, text

    started = time.perf_counter()
    first_at, text = clock.run(main())
    assert first_at == pytest.approx(0.2)  # the example's time to first token, virtually
    assert text == " ".join(example.TEXT.split(" ")) + " "
    words = len(example.TEXT.split(" "))
    assert clock.monotonic() == pytest.approx(0.2 + 0.03 * words)
    assert time.perf_counter() - started < 5  # the paced example takes ~1 s of real time


def test_llm_tokens_cancelled_after_five_chunks_frees_its_stream() -> None:
    example = load_example("llm_tokens.py")

    async def main() -> None:
        async with icefloe.testing.open(create(Node(example.llm, name="llm").to())) as t:
            run = await t.start(example.TEXT)
            await run.wait_for(5)
            assert run.cancel()
            assert await run.wait() == ErrorCode.CANCELLED
            run.assert_in_order()
            assert len(run.received) < len(example.TEXT.split(" "))
            stats = t.flow.stats().streams
            assert stats.active == 0

    FakeClock().run(main())


def test_llm_tokens_over_sse_arrive_word_by_word() -> None:
    # The same node behind the HTTP edge, read as a browser would, in memory.
    example = load_example("llm_tokens.py")

    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        flow = create(Node(example.llm, name="llm").to())
        async with icefloe.testing.open(flow) as t, t.client() as http:
            body = {"payload": example.TEXT, "headers": {"tenant": "demo"}}
            sid = (await http.post("/v1/streams", json=body)).json()["stream_id"]
            sse = {"accept": "text/event-stream"}
            async with http.stream("GET", f"/v1/streams/{sid}", headers=sse) as resp:
                return [
                    (loop.time(), json.loads(line[5:])["text"])
                    async for line in resp.aiter_lines()
                    if line.startswith("data:")
                ]

    seen = FakeClock().run(main())
    assert "".join(text for _, text in seen) == " ".join(example.TEXT.split(" ")) + " "
    times = [at for at, _ in seen]
    assert times[0] == pytest.approx(0.2)  # each event as it was sent, not all at the end
    assert times[1] - times[0] == pytest.approx(0.03)


def test_qos_high_priority_run_is_served_next_behind_queued_low_ones() -> None:
    example = load_example("qos.py")

    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        node = Node(example.slow, name="slow", policy=NodePolicy(max_concurrency=1))
        async with icefloe.testing.open(create(node.to())) as t:
            lows = [await t.start(None, headers=Headers(tenant="t")) for _ in range(10)]
            high = await t.start(None, headers=Headers(tenant="t", priority=5))

            async def ended(run: icefloe.testing.Run) -> float:
                assert await run.text() == str(run.received[0].text)
                return loop.time()

            high_at = await ended(high)
            assert await high.text() == "5"
            return high_at, [await ended(run) for run in lows]

    high_at, low_at = FakeClock().run(main())
    # One worker, 50 ms a run: the first low one was already running; the
    # high one is next, ahead of the nine still queued.
    assert high_at == pytest.approx(0.10)
    assert sorted(low_at)[1:] == pytest.approx([0.05 * k for k in range(3, 12)])
