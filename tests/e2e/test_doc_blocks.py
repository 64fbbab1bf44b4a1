"""Every code block of README.md and docs/*.md marked runnable runs as written,
and docs/embedding.md's example app serves as the doc says.

See docblocks.py for the markers. A python block runs as a script in a fresh
interpreter (this one, so it imports the icefloe under test), in an empty
directory, and must exit 0 within the timeout.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from docblocks import ROOT, Block, block, blocks, doc_files

from ports import free_port

RUNNABLE = [b for path in doc_files() for b in blocks(path) if b.runnable]


def test_the_readme_opens_with_a_runnable_snippet() -> None:
    readme = ROOT / "README.md"
    first = next(b for b in blocks(readme) if b.lang == "python")
    assert first.runnable, "the README's first python block must be marked runnable"
    text = readme.read_text(encoding="utf-8")
    assert text.index(first.code) < text.index("```sh"), "the first block of the README"


def test_every_doc_file_parses_and_markers_name_a_supported_language() -> None:
    for path in doc_files():
        for b in blocks(path):
            if b.runnable:
                assert b.lang == "python", f"{b.where}: only python blocks are runnable"


@pytest.mark.parametrize("b", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_runnable_block_runs(b: Block, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(b.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{b.where} failed:\n{done.stderr}"


def test_a_block_with_top_level_await_fails_here(tmp_path: Path) -> None:
    # The runner is a real interpreter: a snippet with a top-level `async with`
    # (the README's first snippet before) cannot pass.
    script = tmp_path / "block.py"
    script.write_text("async with open('x') as f:\n    pass\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0


async def test_the_embedding_example_serves_as_documented(tmp_path: Path) -> None:
    # docs/embedding.md's app.py under `uvicorn app:app`, as the doc says to run it.
    app = block(ROOT / "docs" / "embedding.md", "app.py")
    (tmp_path / "app.py").write_text(app.code, encoding="utf-8")
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--port",
        str(port),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            async with asyncio.timeout(30):
                while True:
                    assert server.returncode is None, "uvicorn exited"
                    try:
                        await client.get("/icefloe/healthz")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)  # a subprocess's socket: nothing to await
            r = await client.get("/chat", params={"q": "hello there"})
            assert r.headers["content-type"].startswith("text/event-stream")
            assert _texts(r.text) == ["you ", "said: ", "hello ", "there "]
            assert "event: end" in r.text

            r = await client.post(
                "/icefloe/v1/streams", json={"payload": "a b", "headers": {"tenant": "acme"}}
            )
            assert r.status_code == 201, r.text
            location = r.headers["location"]
            assert location == f"/icefloe/v1/streams/{r.json()['stream_id']}"
            assert _texts((await client.get(location)).text) == ["you ", "said: ", "a ", "b "]
            resumed = await client.get(
                f"/chat/{r.json()['stream_id']}", headers={"Last-Event-ID": "1"}
            )
            assert _texts(resumed.text) == ["a ", "b "]
    finally:
        if server.returncode is None:
            server.terminate()
        async with asyncio.timeout(15):
            await server.wait()


def _texts(sse: str) -> list[str]:
    return [
        json.loads(line[6:])["text"]
        for event in sse.split("\n\n")
        if "event: chunk" in event
        for line in event.splitlines()
        if line.startswith("data: ")
    ]


async def test_the_inputs_example_survives_the_end_of_the_inputs() -> None:
    # docs/python-api.md's agent, run on a stream that ends while it polls:
    # get_nowait() raises StopAsyncIteration then, which the example must catch.
    example = next(b for b in blocks(ROOT / "docs" / "python-api.md") if "get_nowait()" in b.code)
    namespace: dict[str, object] = {"__name__": "doc_example"}
    exec(compile(example.code.replace("asyncio.run(main())", ""), example.where, "exec"), namespace)
    agent = namespace["agent"]
    ended = asyncio.Event()

    class EndedInputs:
        def get_nowait(self) -> object:
            raise StopAsyncIteration

    class Ctx:
        """The two context calls the example makes; the inputs have ended."""

        def __init__(self) -> None:
            self.texts: list[str] = []

        def inputs(self, *, parent: object) -> EndedInputs:
            return EndedInputs()

        async def emit_chunk(self, *, parent: object, text: str, done: bool = False) -> None:
            self.texts.append(text)
            if done:
                ended.set()

    ctx = Ctx()
    async with asyncio.timeout(10):
        await agent(None, ctx)  # type: ignore[operator]
    assert ended.is_set()
    assert ctx.texts == ["token0 ", ""]
