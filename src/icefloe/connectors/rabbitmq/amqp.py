"""Records as AMQP 1.0 messages and back (the mapping is in :mod:`icefloe.connectors.rabbitmq`)."""

from __future__ import annotations

from typing import Final

from rstream import AMQPMessage

from icefloe.connectors.record import Record

__all__ = ["encode_message", "message_record"]

# AMQP 1.0 encoding of the three sections a record needs. rstream's own
# encoder walks every value generically in Python and costs several times
# more per message than the sink's whole remaining work; these sections have
# fixed shapes, so they are written directly (and read back by rstream's
# decoder, which the tests check).
_PROPERTIES: Final = b"\x00\x53\x73"
_APPLICATION_PROPERTIES: Final = b"\x00\x53\x74"
_DATA: Final = b"\x00\x53\x75"
_NULL: Final = b"\x40"
#: ``group-id`` is field 10 of the properties list
_GROUP_ID_FIELD: Final = 10


def _string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < 256:
        return b"\xa1" + len(raw).to_bytes(1, "big") + raw
    return b"\xb1" + len(raw).to_bytes(4, "big") + raw


def _binary(raw: bytes) -> bytes:
    if len(raw) < 256:
        return b"\xa0" + len(raw).to_bytes(1, "big") + raw
    return b"\xb0" + len(raw).to_bytes(4, "big") + raw


def encode_message(record: Record) -> bytes:
    """``record`` as an AMQP 1.0 message (see the module docstring for the mapping).

    :raises ValueError: a header name repeats, or the key is not UTF-8.
    """
    parts: list[bytes] = []
    if record.key is not None:
        try:
            group = _string(record.key.decode())
        except UnicodeDecodeError:
            raise ValueError("record key must be UTF-8 for RabbitMQ (it is the group-id)") from None
        fields = _NULL * _GROUP_ID_FIELD + group
        count = _GROUP_ID_FIELD + 1
        parts += [_PROPERTIES, b"\xd0", (len(fields) + 4).to_bytes(4, "big")]
        parts += [count.to_bytes(4, "big"), fields]
    if record.headers:
        names = [name for name, _ in record.headers]
        if len(set(names)) != len(names):
            raise ValueError(
                "record headers repeat a name; RabbitMQ application properties are a map"
            )
        pairs = b"".join(_string(name) + _binary(value) for name, value in record.headers)
        parts += [_APPLICATION_PROPERTIES, b"\xd1", (len(pairs) + 4).to_bytes(4, "big")]
        parts += [(2 * len(names)).to_bytes(4, "big"), pairs]
    parts += [_DATA, _binary(record.value)]
    return b"".join(parts)


def _text(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def message_record(message: AMQPMessage) -> Record:
    """The record a decoded AMQP message carries (the reverse of :func:`encode_message`)."""
    body = message.body
    if isinstance(body, list):
        # several data sections: the publisher split the value; join it back
        body = b"".join(_text(part) for part in body)
    properties = message.properties
    group = None if properties is None else properties.group_id
    headers = tuple(
        (_text(name).decode(errors="replace"), _text(value))
        for name, value in (message.application_properties or {}).items()
    )
    return Record(None if group is None else _text(group), _text(body), headers)
