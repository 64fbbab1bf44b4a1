"""NATS JetStream: :class:`NatsSink` (publish, dedup ids) and :class:`NatsSource` (pull consumer).

Needs the ``nats`` extra (nats-py). Both take a connected
``nats.aio.client.Client`` and never close it.

**Layout.** A record is one JetStream message: its value is the payload,
each header a NATS header of the same name, the key the header
``icefloe-key``. NATS headers are text, so a value that is not printable
ASCII (or that starts with ``b64:``) travels as ``b64:`` + base64.

**Subjects.** By default every record goes to one ``subject``: one ordered
log in the stream. With ``per_key=True`` it goes to ``subject.<key>`` (the
key itself when it is a safe token of letters, digits, ``-`` and ``_``, else
``x`` + its hex), so consumers can filter on one icefloe stream
(``subject.>`` reads them all). Either way a stream's chunks keep their
order, as they share a subject.

**Sink.** Publishes without waiting (``publish_async``, at most ``window``
unconfirmed) with ``Nats-Msg-Id`` = ``<key>:<seq>`` when the record carries an
``icefloe-seq`` header: the server drops a second message with the same id
within the stream's duplicate window, so a retried publish is stored once.
:meth:`~NatsSink.flush` waits up to ``ack_timeout_s`` for the PubAcks of the
window; one that does not come is published again (waiting for its PubAck),
``retries`` times, with the same id.

**Source.** A durable pull consumer ``durable`` (created if missing, explicit
ack, ``ack_wait_s``, ``max_ack_pending`` = ``max_in_flight``) fetching
``batch`` messages at a time. ``Inbound.position`` is the stream sequence,
``deliveries`` JetStream's ``num_delivered``. ``ack`` acks; it waits for the
server's confirmation (``ack_sync``) when the source was made with
``ack_sync=True`` or the record's ``icefloe-reliability`` is
``exactly_once``, since a lost plain ack means a redelivery. ``nack`` naks
with ``nak_delay_s``. nats-py reconnects by itself; a fetch during the outage
just comes back empty.

:func:`ensure_stream` creates the JetStream stream when it is missing.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NamedTuple

from icefloe.connectors.buffered_sink import BufferedSink
from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.record import RELIABILITY_HEADER, SEQ_HEADER, Record
from icefloe.core.reliability import Reliability

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = [
    "NatsSink",
    "NatsSource",
    "StreamLimits",
    "ensure_stream",
    "message_record",
    "record_headers",
]

KEY_HEADER = "icefloe-key"
MSG_ID_HEADER = "Nats-Msg-Id"
_B64 = "b64:"
_EXACTLY_ONCE = Reliability.EXACTLY_ONCE.value.encode()
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,200}")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


class StreamLimits(NamedTuple):
    """Limits of a JetStream stream :func:`ensure_stream` creates."""

    #: seconds a message is kept (``None``: no age limit)
    max_age_s: float | None = 24 * 3600
    #: bytes kept, oldest dropped first (``None``: no limit)
    max_bytes: int | None = 1 << 30
    #: seconds the server remembers a ``Nats-Msg-Id`` to drop its duplicates
    duplicate_window_s: float = 120


async def ensure_stream(
    nc: Client, name: str, subjects: list[str], limits: StreamLimits | None = None
) -> None:
    """Create the JetStream stream ``name`` over ``subjects`` unless it exists."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    limits = limits or StreamLimits()
    js = nc.jetstream()
    try:
        await js.stream_info(name)
    except NotFoundError:
        config = StreamConfig(
            name=name,
            subjects=subjects,
            max_age=limits.max_age_s,
            max_bytes=-1 if limits.max_bytes is None else limits.max_bytes,
            duplicate_window=limits.duplicate_window_s,
        )
        await js.add_stream(config)


def _text(value: bytes) -> str:
    if _PRINTABLE.fullmatch(value) and not value.startswith(_B64.encode()):
        return value.decode("ascii")
    return _B64 + base64.b64encode(value).decode("ascii")


def _bytes(text: str) -> bytes:
    if text.startswith(_B64):
        return base64.b64decode(text[len(_B64) :])
    return text.encode()


def record_headers(record: Record) -> dict[str, str]:
    """The NATS headers carrying ``record``'s key and headers (plus ``Nats-Msg-Id``)."""
    headers = {name: _text(value) for name, value in record.headers}
    if record.key is not None:
        headers[KEY_HEADER] = _text(record.key)
        seq = record.header(SEQ_HEADER)
        if seq is not None:
            headers[MSG_ID_HEADER] = f"{headers[KEY_HEADER]}:{seq.decode(errors='replace')}"
    return headers


def message_record(data: bytes, headers: dict[str, str] | None) -> Record:
    """The record a JetStream message carries."""
    headers = headers or {}
    key = headers.get(KEY_HEADER)
    pairs = tuple(
        (name, _bytes(value))
        for name, value in headers.items()
        if name not in (KEY_HEADER, MSG_ID_HEADER)
    )
    return Record(None if key is None else _bytes(key), data, pairs)


def _subject_token(key: bytes) -> str:
    text = key.decode(errors="replace")
    return text if _TOKEN.fullmatch(text) and text.encode() == key else "x" + key.hex()


class NatsSink(BufferedSink):
    """Publishes records to JetStream (see the module docstring)."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        *,
        per_key: bool = False,
        window: int = 2000,
        ack_timeout_s: float = 5.0,
        retries: int = 3,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        super().__init__()
        self._js = nc.jetstream(publish_async_max_pending=window)
        self._subject = subject
        self._per_key = per_key
        self._window = window
        self._ack_timeout = ack_timeout_s
        self._retries = retries
        self._unconfirmed: list[tuple[Record, str, dict[str, str], asyncio.Future[Any]]] = []
        self._lock = asyncio.Lock()
        self._sent = self._confirmed = self._failed = self._duplicates = 0

    @property
    def name(self) -> str:
        return f"nats:{self._subject}"

    @property
    def duplicates(self) -> int:
        """PubAcks that said the server already had the message (dropped by id)."""
        return self._duplicates

    def _subject_of(self, record: Record) -> str:
        if self._per_key and record.key is not None:
            return f"{self._subject}.{_subject_token(record.key)}"
        return self._subject

    async def send(self, record: Record) -> None:
        """Publish ``record``; waits for PubAcks when ``window`` are unconfirmed."""
        self._refuse_if_closed(record)
        subject = self._subject_of(record)
        headers = record_headers(record)
        async with self._lock:
            future = await self._js.publish_async(subject, record.value, headers=headers)
            self._unconfirmed.append((record, subject, headers, future))
            self._sent += 1
        if len(self._unconfirmed) >= self._window:
            await self._settle()

    async def _settle(self) -> None:
        """Wait for every PubAck; publish again what got none (``retries`` times)."""
        async with self._lock:
            batch, self._unconfirmed = self._unconfirmed, []
            if not batch:
                return
            # one wait for the whole window: the PubAcks arrive together
            await asyncio.wait([future for *_, future in batch], timeout=self._ack_timeout)
            for record, subject, headers, future in batch:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._settled(future.result())
                    continue
                error = "no PubAck within ack_timeout_s"
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    error = f"nats: {future.exception()!r}"
                await self._republish(record, subject, headers, error)

    def _settled(self, ack: Any) -> None:
        self._confirmed += 1
        self._duplicates += bool(ack.duplicate)

    async def _republish(
        self, record: Record, subject: str, headers: dict[str, str], error: str
    ) -> None:
        from nats.errors import Error as NatsError

        for _ in range(self._retries):
            try:
                # same Nats-Msg-Id: stored once even if the first one landed
                ack = await self._js.publish(
                    subject, record.value, timeout=self._ack_timeout, headers=headers
                )
            except (TimeoutError, NatsError) as exc:
                error = f"nats: {type(exc).__name__}: {exc}"
                continue
            self._settled(ack)
            return
        self._failed += 1
        self._failures.add(record, error)

    def statistics(self) -> ConnectorStatistics:
        in_flight = self._sent - self._confirmed - self._failed
        return ConnectorStatistics(self._sent, self._confirmed, self._failed, in_flight, 0)


class NatsSource:
    """Reads a JetStream stream with the durable pull consumer ``durable``."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        *,
        durable: str,
        subject: str,
        batch: int = 500,
        fetch_timeout_s: float = 1.0,
        ack_wait_s: float = 30.0,
        max_in_flight: int = 10_000,
        nak_delay_s: float = 1.0,
        ack_sync: bool = False,
    ) -> None:
        if batch < 1 or max_in_flight < 1:
            raise ValueError("batch and max_in_flight must be >= 1")
        self._nc = nc
        self._stream = stream
        self._durable = durable
        self._subject = subject
        self._batch = batch
        self._fetch_timeout = fetch_timeout_s
        self._ack_wait = ack_wait_s
        self._max_in_flight = max_in_flight
        self._nak_delay = nak_delay_s
        self._ack_sync = ack_sync
        self._sub: Any = None
        self._msgs: dict[int, Msg] = {}
        self._received = self._acked = self._nacked = 0

    @property
    def name(self) -> str:
        return f"nats:{self._stream}"

    async def __aenter__(self) -> NatsSource:
        from nats.js.api import AckPolicy, ConsumerConfig

        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=self._max_in_flight,
        )
        self._sub = await self._nc.jetstream().pull_subscribe(
            self._subject, durable=self._durable, stream=self._stream, config=config
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Inbound]:
        from nats.errors import TimeoutError as FetchTimeout

        if self._sub is None:
            raise RuntimeError("use the source in 'async with' before iterating")
        while True:
            room = self._max_in_flight - len(self._msgs)
            try:
                msgs = await self._sub.fetch(max(1, min(self._batch, room)), self._fetch_timeout)
            except (FetchTimeout, TimeoutError):
                # nothing to fetch within fetch_timeout_s (nats-py raises either)
                continue
            for msg in msgs:
                meta = msg.metadata
                position = meta.sequence.stream
                self._msgs[position] = msg
                self._received += 1
                record = message_record(msg.data, msg.headers)
                yield Inbound(record, meta.stream, position, meta.num_delivered)

    async def ack(self, inbound: Inbound) -> None:
        """The message is processed: ack it (``ack_sync``: and wait for the server)."""
        msg = self._msgs.pop(inbound.position, None)
        if msg is None:
            return
        if self._ack_sync or inbound.record.header(RELIABILITY_HEADER) == _EXACTLY_ONCE:
            await msg.ack_sync()
        else:
            await msg.ack()
        self._acked += 1

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Nak the message: JetStream redelivers it after ``nak_delay_s``."""
        msg = self._msgs.pop(inbound.position, None)
        if msg is not None:
            await msg.nak(delay=self._nak_delay)
            self._nacked += 1

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(self._received, self._acked, self._nacked, len(self._msgs), 0)
