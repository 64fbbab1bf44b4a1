"""The README's first app, tried as a new user would, on a fresh copy of the repo.

``pip install .`` into a new venv (``icefloe serve`` then names the extra to
install), then ``pip install '.[server]'`` (no dev dependencies, no
PYTHONPATH), the README's ``myflow.py``, ``icefloe serve myflow:flow`` from
that venv, the README's ``curl`` calls, and its EventSource snippet in
Chromium. Each block is taken from README.md by its marker (docblocks.py),
so this test follows the README. The one change made to them: the port
(8765 in the README) is a free one, so that a running ``make demo`` does not
collide with the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from docblocks import ROOT, block
from playwright.async_api import ConsoleMessage, Page

from ports import free_port

README = ROOT / "README.md"
README_PORT = "8765"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _user_env(venv: Path) -> dict[str, str]:
    """The environment of a user with the venv activated: none of the test's own paths."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _fresh_copy(dest: Path) -> None:
    """The repository's files as a clone has them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with ``pip install '.[server]'`` from a fresh copy of the repo."""
    base = tmp_path_factory.mktemp("new-user")
    repo, venv = base / "repo", base / "venv"
    _fresh_copy(repo)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _user_env(venv)

    def pip_install(target: str) -> None:
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", target],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]

    # First without the extra, as the README warns: `icefloe serve` names it.
    pip_install(".")
    bare = subprocess.run(
        [str(venv / "bin" / "icefloe"), "serve", "myflow:flow"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bare.returncode == 1
    assert bare.stderr.count("\n") == 1, bare.stderr
    assert "pip install 'icefloe[server]'" in bare.stderr
    assert "Traceback" not in bare.stderr
    pip_install(".[server]")
    return venv


async def _wait_ready(url: str, server: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30), httpx.AsyncClient() as client:
        while True:
            assert server.returncode is None, "icefloe serve exited"
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # polling a subprocess's socket: nothing to await


async def test_the_readme_first_app_works_as_written(
    venv: Path, tmp_path: Path, page: Page, page_errors: list[str]
) -> None:
    env = _user_env(venv)
    app = tmp_path / "app"
    app.mkdir()
    (app / "myflow.py").write_text(block(README, "myflow.py").code, encoding="utf-8")
    port = str(free_port())
    serve = block(README, "serve").code.strip()
    assert serve == "icefloe serve myflow:flow"
    log = (tmp_path / "serve.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f"exec {serve} --port {port}",
        cwd=app,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, server)

        # The curl calls: POST, then GET of the Location, to the end event.
        curl = block(README, "curl").code
        assert f"127.0.0.1:{README_PORT}" in curl
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-e", "-c", curl.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        events = [e for e in done.stdout.split("\n\n") if e.strip()]
        names = [line[7:] for e in events for line in e.splitlines() if line.startswith("event: ")]
        assert names == ["chunk"] * 4 + ["end"], done.stdout
        texts = [
            json.loads(line[6:])["text"]
            for e in events
            if "event: chunk" in e
            for line in e.splitlines()
            if line.startswith("data: ")
        ]
        assert "".join(texts) == "you said: hello world "

        # The EventSource snippet, in the browser console of the served page.
        logged: list[str] = []
        page.on("console", lambda m: logged.append(m.text))
        await page.goto(f"{url}/")
        snippet = block(README, "eventsource")
        assert snippet.lang == "js"
        assert "addEventListener('chunk'" in snippet.code
        assert "onmessage" not in snippet.code.replace("onmessage never fires", "")

        def finished(m: ConsoleMessage) -> bool:
            return m.text in {"[done]", "[failed]"} or m.text.startswith("[failed]")

        async with page.expect_console_message(finished, timeout=15_000) as last:
            await page.evaluate(f"async () => {{\n{snippet.code}\n}}")
        assert (await last.value).text == "[done]"
        assert "".join(logged[: logged.index("[done]")]).endswith("you said: hello browser ")
        assert page_errors == []
    finally:
        if server.returncode is None:
            server.terminate()
        try:
            async with asyncio.timeout(15):
                await server.wait()
        finally:
            log.close()
