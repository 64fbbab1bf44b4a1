"""The value the hub delivers, and its wire bytes, encoded once per format.

Every subscriber of a topic receives the *same* :class:`HubEvent` object.
:meth:`HubEvent.encoded` serializes it the first time a format is asked for
and keeps the bytes on the event, so a thousand SSE or WebSocket subscribers
cost one JSON encode, not a thousand.

The wire form is one object (JSON or msgpack) ready to be sent as a
WebSocket message or an SSE ``data:`` line::

    {"op": "event", "topic": "chat.room1.tokens", "offset": 17, "epoch": "9f2c41d07ab3",
     "data": ..., "headers": {...}, "ts": 1718000000000000000}

``tenant`` is left out: a subscriber only ever sees its own tenant's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from icefloe.core.codec import Format
from icefloe.core.reliability import Reliability
from icefloe.exceptions import EncodeError

__all__ = ["ENCODE_FAILURES", "HubEvent", "event_size", "pack"]

#: what a None, bool or number counts against byte limits
SCALAR_SIZE: Final = 8


class HubEvent(msgspec.Struct, frozen=True, dict=True):
    """One published event, shared (read-only) by every subscriber that gets it.

    ``offset`` is its position in its topic: consecutive integers per topic
    and tenant from 0, strictly increasing, and independent of every other
    topic; ``epoch`` names the topic's numbering: a topic evicted and
    created again starts from 0 under a new epoch, so an offset means
    something only with its epoch (resume with both); ``ts`` is the publish time in unix
    nanoseconds; ``reliability`` is what its publisher asked for (an
    ``at_least_once`` or ``exactly_once`` event is never dropped by the
    hub). ``data`` and ``headers`` must not be changed in place: other
    subscribers hold the same objects.

    (``dict=True`` gives the frozen struct a ``__dict__``, which is where the
    encoded bytes are cached without making the event mutable.)
    """

    topic: str
    offset: int
    tenant: str
    data: Any = None
    headers: dict[str, Any] = {}
    ts: int = 0
    reliability: Reliability = Reliability.AT_MOST_ONCE
    epoch: str = ""

    def encoded(self, fmt: Format) -> bytes:
        """The event's wire bytes in ``fmt``, encoded on first use and then shared.

        :raises EncodeError: if ``data`` or ``headers`` hold a value ``fmt``
            cannot carry.
        :raises ValueError: if ``fmt`` is not a :class:`~icefloe.core.codec.Format`.
        """
        cache = self.__dict__
        data: bytes | None = cache.get(_CACHE_KEYS.get(fmt, ""))
        if data is None:
            data = _encode(self, fmt)
            cache[_CACHE_KEYS[fmt]] = data
        return data


class _WireEvent(msgspec.Struct, tag_field="op", tag="event"):
    topic: str
    offset: int
    epoch: str
    data: Any
    headers: dict[str, Any]
    ts: int


_CACHE_KEYS: Final[dict[Format, str]] = {Format.JSON: "_json", Format.MSGPACK: "_msgpack"}
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
#: per format, the function that turns the wire object into bytes
_ENCODERS: dict[Format, Callable[[Any], bytes]] = {
    Format.JSON: _json.encode,
    Format.MSGPACK: _msgpack.encode,
}
#: what msgspec raises for a value a format cannot carry (see core.codec)
ENCODE_FAILURES: Final = (msgspec.EncodeError, TypeError, OverflowError, UnicodeEncodeError)
_ENCODE_FAILURES = ENCODE_FAILURES
#: msgpack bytes of a value, whose length is its size against byte limits
pack: Final = _msgpack.encode


def _encode(event: HubEvent, fmt: Format) -> bytes:
    try:
        encoder = _ENCODERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}") from None
    wire = _WireEvent(event.topic, event.offset, event.epoch, event.data, event.headers, event.ts)
    try:
        return encoder(wire)
    except _ENCODE_FAILURES as exc:
        name = Format(fmt).name
        raise EncodeError(
            f"event of topic {event.topic!r} cannot be encoded as {name}: {exc}"
        ) from exc


# Tuples, not unions: isinstance with ``a | b`` builds the union on every call.
_SCALARS: Final = (bool, int, float)
_BINARY: Final = (bytes, bytearray)


def _value_size(value: Any) -> int:
    if type(value) is str:
        return len(value)
    if value is None or isinstance(value, _SCALARS):
        return SCALAR_SIZE
    if isinstance(value, str):
        return len(value)
    if isinstance(value, _BINARY):
        return len(value)
    try:
        return len(_msgpack.encode(value))
    except _ENCODE_FAILURES as exc:
        raise EncodeError(f"hub event data cannot be encoded: {exc}") from exc


def event_size(topic: str, data: Any, headers: dict[str, Any]) -> int:
    """What an event counts against the hub's byte limits.

    Topic length, plus the data's size (a str's length, a bytes' length, 8
    for a scalar, else the length of its msgpack encoding), plus each
    header's name and value. It measures the payload a subscriber holds, not
    Python's per-object overhead (which the item limits bound).

    :raises EncodeError: if ``data`` is a container msgspec cannot encode:
        hub events must be encodable, because any subscriber may be remote.
    """
    # The usual payloads, a str or a dict, are sized inline: this runs on every publish.
    kind = type(data)
    if kind is str:
        size = len(topic) + len(data)
    elif kind is dict:
        try:
            size = len(topic) + len(_msgpack.encode(data))
        except _ENCODE_FAILURES as exc:
            raise EncodeError(f"hub event data cannot be encoded: {exc}") from exc
    else:
        size = len(topic) + _value_size(data)
    if not headers:
        return size
    for name, value in headers.items():
        size += len(name) + _value_size(value)
    return size
