"""What RabbitMQ Streams sinks and sources share: start points, retention, the connection."""

from __future__ import annotations

import enum
from typing import Any, Final, NamedTuple

from rstream import ConsumerOffsetSpecification, OffsetType

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_STREAM_PORT",
    "FROM_FIRST",
    "Connection",
    "Position",
    "StartAt",
    "StreamRetention",
    "positive",
]

#: the port of RabbitMQ's stream protocol
DEFAULT_STREAM_PORT: Final = 5552


class Position(enum.Enum):
    """Where a consumer starts when the broker has no stored offset for it."""

    FIRST = OffsetType.FIRST
    LAST = OffsetType.LAST
    NEXT = OffsetType.NEXT
    OFFSET = OffsetType.OFFSET
    TIMESTAMP = OffsetType.TIMESTAMP


class StartAt(NamedTuple):
    """A starting point: ``StartAt(Position.OFFSET, 42)``, ``StartAt(Position.TIMESTAMP, ms)``.

    ``value`` is an offset for ``OFFSET``, milliseconds since the epoch for
    ``TIMESTAMP``, and ignored otherwise.
    """

    position: Position = Position.FIRST
    value: int = 0

    def specification(self) -> ConsumerOffsetSpecification:
        if self.value < 0:
            raise ValueError(f"start value must be >= 0, got {self.value}")
        if self.position in (Position.OFFSET, Position.TIMESTAMP):
            return ConsumerOffsetSpecification(self.position.value, self.value)
        return ConsumerOffsetSpecification(self.position.value, None)


class StreamRetention(NamedTuple):
    """The retention arguments a missing stream is created with.

    ``None`` leaves the broker's default for that argument.
    """

    #: ``max-length-bytes``: the stream's size limit, in bytes
    max_length_bytes: int | None = 1 << 30
    #: ``max-age``: e.g. ``"7D"``, ``"12h"``
    max_age: str | None = None
    #: ``stream-max-segment-size-bytes``: the size of one segment file
    max_segment_size_bytes: int | None = None

    def arguments(self) -> dict[str, Any]:
        pairs = {
            "max-length-bytes": self.max_length_bytes,
            "max-age": self.max_age,
            "stream-max-segment-size-bytes": self.max_segment_size_bytes,
        }
        return {name: value for name, value in pairs.items() if value is not None}


#: the retention a missing stream is created with: 1 GiB, no age limit
DEFAULT_RETENTION: Final = StreamRetention()
#: start at the stream's first record
FROM_FIRST: Final = StartAt()


class Connection(NamedTuple):
    """Where and as whom a sink or source connects."""

    host: str
    port: int
    username: str
    password: str
    vhost: str

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments rstream's ``Producer`` and ``Consumer`` take for it."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "vhost": self.vhost,
        }


def positive(name: str, value: float) -> None:
    """Refuse a limit that is not > 0 with a ValueError naming it."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
