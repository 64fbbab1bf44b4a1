"""Tests for icefloe.hub.event: the shared event value and its encode-once bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hubkit import drain

from icefloe.core.codec import Format
from icefloe.exceptions import EncodeError
from icefloe.hub import Hub, HubEvent
from icefloe.hub import event as event_module
from icefloe.hub.event import SCALAR_SIZE, event_size


def make(data: Any = None, headers: dict[str, Any] | None = None) -> HubEvent:
    return HubEvent("chat.a", 7, "acme", data, headers or {}, 123, epoch="e1")


def test_json_wire_form() -> None:
    event = make({"text": "hi"}, {"lang": "en"})
    assert json.loads(event.encoded(Format.JSON)) == {
        "op": "event",
        "topic": "chat.a",
        "offset": 7,
        "epoch": "e1",
        "data": {"text": "hi"},
        "headers": {"lang": "en"},
        "ts": 123,
    }
    assert b"\n" not in make("a\nb").encoded(Format.JSON)


def test_msgpack_wire_form() -> None:
    event = make([1, 2])
    assert msgspec.msgpack.decode(event.encoded(Format.MSGPACK)) == {
        "op": "event",
        "topic": "chat.a",
        "offset": 7,
        "epoch": "e1",
        "data": [1, 2],
        "headers": {},
        "ts": 123,
    }


def test_encoded_bytes_are_cached_per_format() -> None:
    event = make("x")
    first = event.encoded(Format.JSON)
    assert event.encoded(Format.JSON) is first
    assert event.encoded(Format.MSGPACK) is event.encoded(Format.MSGPACK)
    assert event.encoded(Format.MSGPACK) != first


def test_the_event_stays_frozen_and_comparable() -> None:
    event = make("x")
    event.encoded(Format.JSON)
    with pytest.raises(AttributeError):
        event.offset = 8  # type: ignore[misc]
    assert event == make("x")


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown format 9"):
        make().encoded(9)  # type: ignore[arg-type]


def test_unencodable_data_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="cannot be encoded as JSON"):
        make({1: object()}).encoded(Format.JSON)
    with pytest.raises(EncodeError, match="cannot be encoded as MSGPACK"):
        make(2**70).encoded(Format.MSGPACK)


def test_event_size() -> None:
    assert event_size("abc", "hello", {}) == 3 + 5
    assert event_size("abc", b"\x00" * 10, {}) == 13
    assert event_size("abc", None, {"k": 1}) == 3 + SCALAR_SIZE + 1 + SCALAR_SIZE
    assert event_size("abc", {"a": [1, 2]}, {}) == 3 + len(msgspec.msgpack.encode({"a": [1, 2]}))
    with pytest.raises(EncodeError, match="cannot be encoded"):
        event_size("abc", [object()], {})


async def test_many_subscribers_share_one_encoding(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Format] = []
    originals = dict(event_module._ENCODERS)

    def counting(fmt: Format) -> Callable[[Any], bytes]:
        def encode(value: Any) -> bytes:
            calls.append(fmt)
            return originals[fmt](value)

        return encode

    for fmt in Format:
        monkeypatch.setitem(event_module._ENCODERS, fmt, counting(fmt))
    subs = [hub.subscribe("chat.>", tenant="acme") for _ in range(50)]
    await hub.publish("chat.room1", {"text": "hi"}, tenant="acme")
    received = [drain(sub) for sub in subs]
    assert all(len(events) == 1 for events in received)
    first = received[0][0]
    assert all(events[0] is first for events in received)
    jsons = {id(events[0].encoded(Format.JSON)) for events in received}
    packs = {id(events[0].encoded(Format.MSGPACK)) for events in received}
    assert len(jsons) == len(packs) == 1
    assert calls == [Format.JSON, Format.MSGPACK]
