"""What the Kinesis sink and source share: the envelope, the client, the stream, the backoff.

**Envelope.** Kinesis records have a partition key and a data blob, no
headers. The partition key is the record's ``key`` (a chunk's stream id:
UTF-8, 1 to 256 characters; a record without a key gets a random one) and the
blob is a msgpack array ``[1, headers, value, keyed]``: the envelope version,
the ``[name, value]`` header pairs (name a string, value binary, order and
repeats kept), the value (binary) and whether the key was the record's own.
A blob that is not such an envelope is read back as a record with that blob
as its value and no headers, so a consumer's decoding names it a poison
record instead of the source failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from typing import Any, Final, NamedTuple

import msgspec
from aiobotocore.session import get_session  # type: ignore[import-untyped]

from icefloe.connectors.record import Record

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_RECORD_BYTES",
    "ClientOptions",
    "StreamClient",
    "backoff",
    "ensure_stream",
    "error_code",
    "pack",
    "unpack",
]

#: the most records in one ``put_records`` call
MAX_BATCH_RECORDS: Final = 500
#: the most bytes (blobs and partition keys) in one ``put_records`` call
MAX_BATCH_BYTES: Final = 5 * 1024 * 1024
#: the most bytes of one record (blob and partition key)
MAX_RECORD_BYTES: Final = 1024 * 1024

_ENVELOPE_VERSION: Final = 1
_encoder = msgspec.msgpack.Encoder()


class _Envelope(msgspec.Struct, array_like=True):
    version: int
    headers: list[tuple[str, bytes]]
    value: bytes
    keyed: bool


_decoder = msgspec.msgpack.Decoder(_Envelope)


def pack(record: Record) -> tuple[str, bytes]:
    """The partition key and data blob carrying ``record``.

    :raises ValueError: the key is not UTF-8 or not 1 to 256 characters.
    """
    if record.key is None:
        key = uuid.uuid4().hex
    else:
        try:
            key = record.key.decode()
        except UnicodeDecodeError:
            raise ValueError("record key must be UTF-8 (it is the Kinesis partition key)") from None
        if not 1 <= len(key) <= 256:
            raise ValueError(f"record key must be 1 to 256 characters, got {len(key)}")
    envelope = _Envelope(
        _ENVELOPE_VERSION, list(record.headers), record.value, record.key is not None
    )
    return key, _encoder.encode(envelope)


def unpack(partition_key: str, blob: bytes) -> Record:
    """The record a Kinesis record carries (a foreign blob comes back whole, without headers)."""
    try:
        envelope = _decoder.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Record(partition_key.encode(), blob)
    if envelope.version != _ENVELOPE_VERSION:
        return Record(partition_key.encode(), blob)
    key = partition_key.encode() if envelope.keyed else None
    return Record(key, envelope.value, tuple(envelope.headers))


class ClientOptions(NamedTuple):
    """Where and how to make an aiobotocore Kinesis client."""

    region: str
    endpoint_url: str | None
    credentials: tuple[str, str] | None

    def create(self) -> Any:
        options: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url is not None:
            options["endpoint_url"] = self.endpoint_url
        if self.credentials is not None:
            options["aws_access_key_id"], options["aws_secret_access_key"] = self.credentials
        return get_session().create_client("kinesis", **options)


class StreamClient:
    """One stream's client: the caller's, or made from :class:`ClientOptions` and
    then owned (released by :meth:`close`)."""

    __slots__ = ("_client", "_create_shards", "_options", "_owned", "_stream")

    def __init__(
        self, stream: str, options: ClientOptions, *, create_shards: int | None, client: Any
    ) -> None:
        self._stream = stream
        self._options = options
        self._create_shards = create_shards
        self._client = client
        self._owned: contextlib.AsyncExitStack | None = None

    async def open(self) -> Any:
        """The client, made when the caller gave none; with ``create_shards``, a
        missing stream is created first (see :func:`ensure_stream`).

        A failed open keeps what it made: :meth:`close` releases it.
        """
        if self._client is None:
            self._owned = contextlib.AsyncExitStack()
            self._client = await self._owned.enter_async_context(self._options.create())
        if self._create_shards is not None:
            await ensure_stream(self._client, self._stream, self._create_shards)
        return self._client

    async def close(self) -> None:
        """Release the client this made (the caller's stays open)."""
        if self._owned is not None:
            await self._owned.aclose()


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


async def ensure_stream(client: Any, stream: str, shards: int, timeout_s: float = 30.0) -> None:
    """Create ``stream`` with ``shards`` shards if it does not exist; wait until it is ACTIVE."""
    try:
        await client.describe_stream_summary(StreamName=stream)
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        with contextlib.suppress(Exception):
            await client.create_stream(StreamName=stream, ShardCount=shards)
    async with asyncio.timeout(timeout_s):
        delay = 0.05
        while True:
            summary = await client.describe_stream_summary(StreamName=stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] in ("ACTIVE", "UPDATING"):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """A wait before retry ``attempt`` (0-based), exponential with full jitter."""
    # full jitter: spreads the retries of many sinks hitting one shard
    return random.uniform(0, min(cap_s, base_s * 2**attempt))
