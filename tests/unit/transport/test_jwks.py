"""JwksKeys: when an identity provider's key set is fetched, against a real local endpoint.

Rotation (an unknown ``kid`` refetches), the cooldown between fetches, the
lifespan of the set, failures (unreachable, not JSON, slow past the timeout)
and that a fetch never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from icefloe.transport.auth import AuthError, JwksKeys
from idp import JwksServer, SigningKey, jwks_server


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def old() -> SigningKey:
    return SigningKey("old")


@pytest.fixture(scope="module")
def new() -> SigningKey:
    return SigningKey("new")


@pytest.fixture
def idp(old: SigningKey) -> Iterator[JwksServer]:
    with jwks_server(old) as server:
        yield server


def refusal(keys: JwksKeys, kid: object) -> str:
    with pytest.raises(AuthError) as info:
        keys.key(kid)
    assert info.value.status == 401
    return str(info.value)


async def test_first_load_fetches_and_keys_are_then_read_without_io(
    idp: JwksServer, old: SigningKey
) -> None:
    keys = JwksKeys(idp.url)
    assert refusal(keys, "old") == "token signing keys are not loaded yet"
    await keys.load("old")
    assert keys.key("old").key_id == "old"
    await keys.load("old")
    assert idp.fetches == 1  # cached


async def test_a_new_kid_refetches_the_rotated_set(
    idp: JwksServer, old: SigningKey, new: SigningKey
) -> None:
    keys = JwksKeys(idp.url, refresh_cooldown_s=0)
    await keys.load("old")
    idp.keys = [old, new]  # the provider rotates
    assert keys.fetch_due("new")
    await keys.load("new")
    assert keys.key("new").key_id == "new"
    assert idp.fetches == 2
    idp.keys = [new]  # and retires the old key; the next fetch drops it
    await keys.load("newer")
    assert keys.kids == {"new"}
    assert refusal(keys, "old") == "token signing key is not known"


async def test_unknown_kids_refetch_at_most_once_per_cooldown(idp: JwksServer) -> None:
    clock = Clock()
    keys = JwksKeys(idp.url, refresh_cooldown_s=30, clock=clock)
    await keys.load("old")
    for n in range(20):  # made-up kids, as a guessing client would send
        await keys.load(f"made-up-{n}")
    assert idp.fetches == 1
    assert refusal(keys, "made-up-0") == "token signing key is not known"
    clock.now += 30
    await keys.load("made-up-20")
    assert idp.fetches == 2


async def test_the_set_is_refetched_after_its_lifespan(idp: JwksServer, new: SigningKey) -> None:
    clock = Clock()
    keys = JwksKeys(idp.url, lifespan_s=300, refresh_cooldown_s=30, clock=clock)
    await keys.load("old")
    idp.keys = [new]
    clock.now += 299
    await keys.load("old")
    assert idp.fetches == 1
    clock.now += 1
    await keys.load("old")
    assert idp.fetches == 2
    assert keys.kids == {"new"}


async def test_an_unreachable_endpoint_is_a_401_with_the_reason() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    keys = JwksKeys(f"http://127.0.0.1:{port}/jwks.json", timeout_s=2)
    await keys.load("old")  # never raises
    assert refusal(keys, "old") == (
        "token signing key unavailable: the identity provider's JWKS endpoint could not be reached"
    )


async def test_an_error_page_keeps_the_last_good_keys(idp: JwksServer) -> None:
    clock = Clock()
    keys = JwksKeys(idp.url, refresh_cooldown_s=0, clock=clock)
    await keys.load("old")
    idp.status = 502
    await keys.load("rotated")
    assert keys.key("old").key_id == "old"  # an outage does not log everyone out
    assert "could not be reached" in refusal(keys, "rotated")
    idp.status = 200
    clock.now += 1
    await keys.load("rotated")
    assert refusal(keys, "rotated") == "token signing key is not known"


async def test_a_set_that_is_not_a_key_set_gives_no_keys() -> None:
    with jwks_server() as server:  # publishes {"keys": []}
        keys = JwksKeys(server.url)
        await keys.load("old")
    assert "returned no usable keys" in refusal(keys, "old")


async def test_a_slow_endpoint_is_cut_at_the_timeout(idp: JwksServer) -> None:
    idp.hold = threading.Event()  # never set until teardown
    keys = JwksKeys(idp.url, timeout_s=0.3)
    async with asyncio.timeout(5):
        await keys.load("old")
    assert "could not be reached" in refusal(keys, "old")


async def test_the_fetch_runs_off_the_event_loop(idp: JwksServer, old: SigningKey) -> None:
    idp.hold = threading.Event()
    keys = JwksKeys(idp.url, timeout_s=5)
    async with asyncio.timeout(10):
        loading = asyncio.create_task(keys.load("old"))
        # The endpoint has the request and holds its answer; a fetch on the
        # loop would block this coroutine until the answer came.
        assert await asyncio.to_thread(idp.requested.wait, 5)
        assert not loading.done()
        second = asyncio.create_task(keys.load("old"))  # waits for the first: one fetch
        await asyncio.sleep(0)
        idp.hold.set()
        await asyncio.gather(loading, second)
    assert keys.key("old").key_id == "old"
    assert idp.fetches == 1


def test_at_most_max_keys_are_kept_and_limits_are_checked() -> None:
    for kwargs in (
        {"timeout_s": 0},
        {"lifespan_s": float("inf")},
        {"refresh_cooldown_s": -1},
        {"max_keys": 0},
    ):
        with pytest.raises(ValueError):
            JwksKeys("https://idp.example/jwks.json", **kwargs)  # type: ignore[arg-type]


async def test_max_keys_bounds_what_is_held() -> None:
    keys_published = [SigningKey(f"k{n}", bits=2048) for n in range(3)]
    with jwks_server(*keys_published) as server:
        keys = JwksKeys(server.url, max_keys=2)
        await keys.load(None)
    assert keys.kids == {"k0", "k1"}


@pytest.mark.parametrize("kid", [None, "", 7])
def test_a_missing_or_odd_kid_is_refused(kid: object) -> None:
    keys = JwksKeys("https://idp.example/jwks.json")
    assert refusal(keys, kid) == "token header lacks a 'kid'"
