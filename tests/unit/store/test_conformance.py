"""Every rule of icefloe.store.protocol, checked on the memory and SQLite backends."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from icefloe.store import MemoryStore, Store
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


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _memory() if request.param == "memory" else _sqlite(tmp_path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_conformance(backend: Backend, check: object) -> None:
    assert callable(check)
    await asyncio.wait_for(check(backend), 30)
