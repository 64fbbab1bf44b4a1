"""The connector-position checks of the store conformance suite (storecheck.py runs them).

Each check takes the suite's ``Backend`` (``make`` an opened empty store;
``reopen`` one, or ``None`` for memory) and closes every store it made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from icefloe.store import Store
from icefloe.store.positions import MAX_KEY, MAX_NAMESPACE, MAX_POSITION_BYTES

__all__ = ["POSITION_CHECKS"]

Check = Callable[[Any], Awaitable[None]]
POSITION_CHECKS: list[Check] = []


def _check(fn: Callable[[Any, list[Store]], Awaitable[None]]) -> Check:
    async def check(backend: Any) -> None:
        made: list[Store] = []
        try:
            await fn(backend, made)
        finally:
            for store in made:
                await store.close()

    check.__name__ = fn.__name__
    check.__doc__ = fn.__doc__
    POSITION_CHECKS.append(check)
    return check


async def _make(backend: Any, made: list[Store]) -> Store:
    store: Store = await backend.make()
    made.append(store)
    return store


@_check
async def positions_are_stored_replaced_and_listed(backend: Any, made: list[Store]) -> None:
    """put_position replaces; get_position and positions read it; namespaces stay apart."""
    store = await _make(backend, made)
    assert await store.get_position("kinesis/s/app", "shard-0") is None
    assert await store.positions("kinesis/s/app") == {}
    await store.put_position("kinesis/s/app", "shard-0", b"100")
    await store.put_position("kinesis/s/app", "shard-1", b"\x00\xff")
    await store.put_position("kinesis/s/app", "shard-0", b"250")
    await store.put_position("kinesis/s/other", "shard-0", b"7")
    assert await store.get_position("kinesis/s/app", "shard-0") == b"250"
    assert await store.positions("kinesis/s/app") == {"shard-0": b"250", "shard-1": b"\x00\xff"}
    assert await store.positions("kinesis/s/other") == {"shard-0": b"7"}
    assert await store.positions("kinesis/s") == {}


@_check
async def positions_out_of_limits_are_refused(backend: Any, made: list[Store]) -> None:
    """Empty or over-long names and over-large values are ValueErrors; nothing is written."""
    store = await _make(backend, made)
    with pytest.raises(ValueError, match="namespace"):
        await store.put_position("", "k", b"v")
    with pytest.raises(ValueError, match="namespace"):
        await store.put_position("n" * (MAX_NAMESPACE + 1), "k", b"v")
    with pytest.raises(ValueError, match="key"):
        await store.put_position("ns", "k" * (MAX_KEY + 1), b"v")
    with pytest.raises(ValueError, match="bytes"):
        await store.put_position("ns", "k", b"v" * (MAX_POSITION_BYTES + 1))
    await store.put_position("n" * MAX_NAMESPACE, "k" * MAX_KEY, b"v" * MAX_POSITION_BYTES)
    assert await store.positions("ns") == {}
    assert await store.get_position("n" * MAX_NAMESPACE, "k" * MAX_KEY) == b"v" * (
        MAX_POSITION_BYTES
    )


@_check
async def positions_survive_a_reopen(backend: Any, made: list[Store]) -> None:
    """A durable backend keeps every position across a restart."""
    if backend.reopen is None:
        return  # memory: nothing to keep
    store = await _make(backend, made)
    await store.put_position("kinesis/s/app", "shard-0", b"42")
    await store.put_position("kinesis/s/app", "shard-1", b"SHARD_END")
    store = await backend.reopen(store)
    made.append(store)
    assert await store.positions("kinesis/s/app") == {"shard-0": b"42", "shard-1": b"SHARD_END"}
