"""One ephemeral JetStream pull consumer on one stream's chunk subject.

:class:`Pull` asks for at most ``limit`` messages per pull request (and at
most :data:`MAX_REQUEST_BYTES`), with no acknowledgements (``AckNone``: a
consumer is a cursor here, nothing is redelivered). A request delivers each
message as soon as it is published, so a live follower sees a chunk one
publish after the producer wrote it, with no polling. The consumer lives
in the server's memory and is deleted by :meth:`Pull.close`, or by the
server :data:`INACTIVE_S` after a crashed process stopped asking.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Final

from icefloe.exceptions import BrokenResourceError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext

__all__ = ["INACTIVE_S", "MAX_REQUEST_BYTES", "Pull"]

#: seconds the server keeps a consumer nobody asks anything of
INACTIVE_S: Final = 60.0
#: bytes one pull request asks for at most (one message may be bigger)
MAX_REQUEST_BYTES: Final = 8 * 1024 * 1024
#: seconds past a request's expiry after which it counts as lost (a reconnect)
SLACK_S: Final = 2.0


class Pull:
    """A cursor on one subject of the chunk stream, from a JetStream sequence."""

    def __init__(self, nc: Client, js: JetStreamContext, stream: str, subject: str) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._subject = subject
        self._sub: Subscription | None = None
        self._name = ""
        #: messages the open request may still deliver
        self._asked = 0
        #: messages delivered and not taken yet (at most one request's worth,
        #: plus its status message)
        self._arrived: list[Msg] = []
        self._arrival = asyncio.Event()

    async def open(self, start: int) -> None:
        """Create the consumer at JetStream sequence ``start`` (filtered to the subject)."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        inbox = self._nc.new_inbox()
        limit = max(MAX_REQUEST_BYTES, 2 * self._nc.max_payload)
        self._sub = await self._nc.subscribe(
            inbox, cb=self._on_msg, pending_msgs_limit=4096, pending_bytes_limit=2 * limit
        )
        config = ConsumerConfig(
            filter_subject=self._subject,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            self._name = (await self._js.add_consumer(self._stream, config)).name or ""
        except BaseException:
            await self.close()
            raise

    async def next(self, limit: int, block_s: float) -> list[Msg]:
        """Up to ``limit`` messages; waits up to ``block_s`` for the first ([]: none came).

        :raises BrokenResourceError: the request ended with an error status
            (the consumer is gone).
        """
        sub = self._sub
        if sub is None:
            raise RuntimeError("the pull consumer is not open")
        if self._asked == 0:
            request = {
                "batch": limit,
                "expires": int(block_s * 1e9),
                "max_bytes": max(MAX_REQUEST_BYTES, 2 * self._nc.max_payload),
            }
            subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._name}"
            await self._nc.publish(subject, json.dumps(request).encode(), reply=sub.subject)
            self._asked = limit
        if not self._arrived:
            self._arrival.clear()
            arrival = asyncio.ensure_future(self._arrival.wait())
            try:
                await asyncio.wait({arrival}, timeout=block_s + SLACK_S)
            finally:
                arrival.cancel()
            if not self._arrived:
                self._asked = 0  # the request was lost (a reconnect): ask again
                return []
        got: list[Msg] = []
        arrived, self._arrived = self._arrived, []
        for msg in arrived:
            self._take(msg, got)
        return got

    async def _on_msg(self, msg: Msg) -> None:
        # nats-py calls this once per message without a loop iteration in
        # between when several are pending: the fetcher takes them in one go.
        self._arrived.append(msg)
        self._arrival.set()

    def _take(self, msg: Msg, got: list[Msg]) -> None:
        from nats.js import JetStreamContext

        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            got.append(msg)
            self._asked -= 1
        elif status in ("404", "408"):  # the request expired (or asked past the end)
            self._asked = 0
        elif status != "100":  # not a heartbeat: the consumer is gone or refused
            self._asked = 0
            text = (msg.headers or {}).get("Description", "")
            raise BrokenResourceError(f"pull request ended with {status} {text}".strip())

    async def close(self) -> None:
        """Delete the consumer and the inbox subscription (errors ignored)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is gone: nothing to release
                pass
        if self._name:
            try:
                await self._js.delete_consumer(self._stream, self._name)
            except Exception:  # the server drops it after INACTIVE_S anyway
                pass
