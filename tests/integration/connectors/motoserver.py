"""A ``moto_server`` (PyPI ``moto[server]``) on a free loopback port, for the Kinesis tests.

:func:`moto_server` starts it as a subprocess of this interpreter
(``python -m moto.server``), waits until it answers HTTP, yields its URL, and
kills it at the end. Every test should use its own stream names: one server
serves a whole test module.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ports import free_port

HOST = "127.0.0.1"
#: credentials moto accepts; nothing is checked
CREDENTIALS = ("testing", "testing")
REGION = "us-east-1"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def kinesis_client(url: str) -> AsyncIterator[Any]:
    """An aiobotocore Kinesis client of the moto server at ``url``."""
    from aiobotocore.session import get_session

    key, secret = CREDENTIALS
    async with get_session().create_client(
        "kinesis",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    ) as kinesis:
        yield kinesis


@contextlib.contextmanager
def moto_server(start_timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``moto_server`` on ``127.0.0.1:<free port>``; yields ``http://127.0.0.1:<port>``."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _answers(url):
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {process.returncode} at start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on {url} in {start_timeout_s} s")
            time.sleep(0.05)
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)
