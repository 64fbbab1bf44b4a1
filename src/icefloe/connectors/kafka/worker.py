"""The one thread a Kafka client's blocking calls run on (see the package docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

__all__ = ["FLUSH_TIMEOUT_S", "Worker"]

T = TypeVar("T")

#: how long a blocking broker call (flush, transaction steps, commits) may take, in seconds
FLUSH_TIMEOUT_S: Final = 30.0


class Worker:
    """One thread that runs a client's blocking calls, one at a time."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
