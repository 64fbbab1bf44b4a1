"""Every rule of icefloe.store.protocol, on memory, SQLite, and SQLite behind both wrappers."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from icefloe.store import MemoryStore, Store
from icefloe.store.faults import FaultyStore
from icefloe.store.resilient import ResilientStore
from icefloe.store.sqlite import SqliteStore
from storecheck import CHECKS, Backend


def _memory() -> Backend:
    async def make() -> Store:
        store = MemoryStore()
        await store.open()
        return store

    return Backend(make)


def _sqlite(tmp_path: Path) -> Backend:
    counter = itertools.count()

    async def make() -> Store:
        store = SqliteStore(str(tmp_path / f"store-{next(counter)}.db"))
        await store.open()
        return store

    async def reopen(store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        await store.close()
        fresh = SqliteStore.from_url(store.name)
        await fresh.open()
        return fresh

    return Backend(make, reopen)


def _wrapped(tmp_path: Path) -> Backend:
    # The wrappers keep every rule: faults unarmed, retries and breaker idle.
    inner = _sqlite(tmp_path)

    async def make() -> Store:
        return ResilientStore(FaultyStore(await inner.make()))

    return Backend(make)


@pytest.fixture(params=["memory", "sqlite", "resilient-faulty-sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return _memory()
    return _sqlite(tmp_path) if request.param == "sqlite" else _wrapped(tmp_path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_conformance(backend: Backend, check: object) -> None:
    assert callable(check)
    await asyncio.wait_for(check(backend), 30)
