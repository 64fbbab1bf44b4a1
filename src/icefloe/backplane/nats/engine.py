"""The backplane of one process on one NATS server with JetStream.

:class:`NatsBackplane` is the JetStream twin of
:class:`~icefloe.backplane.engine.RedisBackplane` (the same
:class:`~icefloe.backplane.protocol.Engine`, followers and readers). It owns
one connection (nats-py reconnects by itself) and the process's tasks:

* one :func:`~icefloe.backplane.nats.producer.produce` task per stream this
  process produces, with a subscription to that stream's reader positions;
* one :func:`~icefloe.backplane.nats.following.fetch_loop` task per stream
  this process follows (one pull consumer, whatever the number of local
  readers), started by the first reader and ended with the last
  (:class:`~icefloe.backplane.followers.Followers`, as on Redis);
* one reporter task publishing, every :data:`REPORT_S` (or sooner, after
  :data:`~icefloe.backplane.limits.REPORT_EVERY` chunks read), the slowest
  local reader's position of each followed stream;
* one keepalive task rewriting the meta of the streams this process
  produces every third of :data:`~icefloe.backplane.limits.RUNNING_TTL_S`;
* one health task (:func:`~icefloe.backplane.health.watch_health`) asking
  JetStream for the chunk stream each second (and making it and the meta
  bucket again if a restarted server lost them).

Cancel requests arrive on one subscription. Limits: :data:`MAX_FOLLOWED`
streams followed at once, each follower's buffer as in
:mod:`icefloe.backplane.follower`; the limits both engines share are in
:mod:`icefloe.backplane.limits`, the layout and the engine's own limits in
:mod:`icefloe.backplane.nats.layout` and here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane import limits
from icefloe.backplane.fetching import check_meta
from icefloe.backplane.followers import Followers, ended_reader
from icefloe.backplane.health import health_changed, watch_health
from icefloe.backplane.limits import MAX_FOLLOWED, MAX_LISTED, REPORT_S
from icefloe.backplane.meta import ABNORMAL, RUNNING, StreamMeta
from icefloe.backplane.nats.following import fetch_loop, prefill
from icefloe.backplane.nats.layout import Layout, parse_nats_url
from icefloe.backplane.nats.metastore import MetaStore, now_ms
from icefloe.backplane.nats.producer import Positions, produce
from icefloe.backplane.nats.pull import Pull
from icefloe.backplane.nats.setup import ensure_chunks, ensure_meta
from icefloe.backplane.nats.topics import NatsHubLink
from icefloe.backplane.producing import ChunkSource
from icefloe.backplane.tasks import stop

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from icefloe.backplane.follower import Follower
    from icefloe.backplane.protocol import Deliver, NumberedDeliver
    from icefloe.backplane.reader import RemoteReader

# MAX_FOLLOWED, MAX_LISTED and REPORT_S are limits.py's, named here as before.
__all__ = ["MAX_FOLLOWED", "MAX_LISTED", "REPORT_S", "NatsBackplane"]

log = logging.getLogger("icefloe.backplane")

#: the states of a stream still producing, on JetStream (no queued starts:
#: workers need a Redis backplane)
_LIVE: Final = frozenset({RUNNING})

#: cancel requests waiting to be handled (past it nats-py drops them)
CONTROL_PENDING: Final = 1000
#: position reports of one produced stream waiting to be taken
POSITIONS_PENDING: Final = 1000


class NatsBackplane:
    """Streams shared with the other processes on one NATS JetStream server."""

    def __init__(
        self,
        url: str,
        *,
        history: int,
        window: int,
        on_cancel: Callable[[str], object],
        max_followed: int = MAX_FOLLOWED,
    ) -> None:
        # nats-py is imported here, before the loop serves: imported in open(),
        # its import time is loop lag, which the flow's load watch would see
        # as an overload at start.
        import nats.js.api  # noqa: F401

        self._options = parse_nats_url(url)
        self.layout = Layout(self._options.prefix)
        self.history = max(history, 1)
        self.window = max(1, min(window, self.history))
        self._on_cancel = on_cancel
        self.process_id = uuid.uuid4().hex[:12]
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._store: MetaStore | None = None
        self._publishing: dict[str, asyncio.Task[None]] = {}
        #: the meta fields and reader positions of each stream produced here
        self._metas: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, Positions] = {}
        self._following = Followers(
            history=self.history, on_dropped=self._dropped, max_followed=max_followed
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.healthy = False

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the backplane is not open")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the backplane is not open")
        return self._js

    @property
    def store(self) -> MetaStore:
        if self._store is None:
            raise RuntimeError("the backplane is not open")
        return self._store

    async def open(self) -> None:
        """Connect, make the chunk stream and meta bucket, start the tasks."""
        import nats

        self._nc = await nats.connect(
            servers=[self._options.server],
            name=f"icefloe-backplane-{self.process_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=2,
            error_cb=_quiet,
        )
        self._js = self._nc.jetstream()
        try:  # a server without JetStream fails here
            await self._ensure_chunks()
            self._store = MetaStore(await self._ensure_meta())
            await self._nc.subscribe(
                self.layout.control, cb=self._on_control, pending_msgs_limit=CONTROL_PENDING
            )
        except BaseException:
            await self.aclose()
            raise
        self.healthy = True
        self._tasks = [
            asyncio.ensure_future(self._report_loop()),
            asyncio.ensure_future(self._keepalive_loop()),
            asyncio.ensure_future(self._health_loop()),
        ]

    async def _ensure_chunks(self) -> None:
        await ensure_chunks(self.js, self.layout, self._options, self.history)

    async def _ensure_meta(self) -> KeyValue:
        return await ensure_meta(self.js, self.layout, self._options)

    async def aclose(self) -> None:
        """Stop every task and close the connection."""
        self._closing = True
        await stop([*self._tasks, *self._publishing.values(), *self._following.fetch_tasks()])
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    def topic_link(self, numbered: NumberedDeliver, forwarded: Deliver) -> NatsHubLink:
        """The hub link of this process on ``P.h`` (opened by the caller)."""
        # Core NATS keeps no log to number topics from: each hub numbers its own.
        return NatsHubLink(self.nc, self.layout.hub, self.process_id, forwarded)

    # -- producing ------------------------------------------------------------

    def publish(self, stream_id: str, tenant: str, source: ChunkSource) -> None:
        """Append ``source`` (a stream this process produces) to the engine."""
        meta = {"stream_id": stream_id, "tenant": tenant, "owner": self.process_id}
        self._metas[stream_id] = meta
        self._positions[stream_id] = Positions()
        task = asyncio.ensure_future(self._produce(stream_id, source))
        self._publishing[stream_id] = task
        task.add_done_callback(lambda t: self._published(stream_id, t))

    async def _produce(self, stream_id: str, source: ChunkSource) -> None:
        positions = self._positions[stream_id]

        async def on_report(msg: Msg) -> None:
            positions.report(msg.data)

        try:
            sub = await self.nc.subscribe(
                self.layout.positions(stream_id),
                cb=on_report,
                pending_msgs_limit=POSITIONS_PENDING,
            )
        except BaseException:
            source.close()
            raise
        try:
            await produce(
                self.nc,
                self.js,
                self.store,
                source,
                positions,
                subject=self.layout.chunks(stream_id),
                meta=self._metas[stream_id],
                window=self.window,
            )
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _published(self, stream_id: str, task: asyncio.Task[None]) -> None:
        self._publishing.pop(stream_id, None)
        self._metas.pop(stream_id, None)
        self._positions.pop(stream_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("backplane publish of %s failed: %r", stream_id, task.exception())

    async def _on_control(self, msg: Msg) -> None:
        sid = msg.data.decode(errors="replace")
        if sid in self._publishing:
            self._on_cancel(sid)

    def read_elsewhere(self, stream_id: str) -> bool:
        """Whether another process reported reading ``stream_id`` in the last 5 s."""
        positions = self._positions.get(stream_id)
        return positions is not None and positions.slowest(now_ms()) is not None

    def publishing(self, stream_id: str) -> bool:
        return stream_id in self._publishing

    def producing(self) -> int:
        """How many streams this process is appending to the engine (a drain waits for 0)."""
        return len(self._publishing)

    # -- reading --------------------------------------------------------------

    async def meta(self, stream_id: str) -> StreamMeta | None:
        return await self.store.get(stream_id)

    async def list_streams(self) -> list[StreamMeta]:
        return await self.store.listed(MAX_LISTED)

    async def cancel(self, stream_id: str) -> None:
        await self.nc.publish(self.layout.control, stream_id.encode())

    async def follow(self, meta: StreamMeta, from_seq: int) -> RemoteReader:
        """A reader of the remote stream ``meta`` from ``from_seq``.

        :raises StreamError: ``history_gone`` (``from_seq`` is no longer kept)
            or ``unavailable`` (this process follows too many streams).
        """
        sid = meta.stream_id
        if meta.state in ABNORMAL:
            return ended_reader(meta, from_seq)
        follower, new = self._following.follower(sid, from_seq)
        if new:
            # Report at once: until the producer hears of this reader, it may
            # run past the chunks the subject keeps.
            self._following.report_now()
        reader = self._following.reader(follower, from_seq)
        try:
            if from_seq < follower.base:
                await prefill(follower, await self._pull(sid, from_seq), from_seq)
            if not self._following.fetching(sid):
                pull = await self._pull(sid, follower.head)
                if self._following.fetching(sid):  # another reader started one meanwhile
                    await pull.close()
                else:
                    self._following.start_fetch(sid, fetch_loop(follower, pull, self._check_alive))
        except BaseException:
            reader.close()
            raise
        return reader

    async def _pull(self, stream_id: str, from_seq: int) -> Pull:
        """A pull consumer opened at or before chunk ``from_seq``."""
        marks = await self.store.marks(stream_id)
        pull = Pull(self.nc, self.js, self.layout.chunk_stream, self.layout.chunks(stream_id))
        await pull.open(marks.start_for(from_seq))
        return pull

    def _dropped(self, stream_id: str) -> None:
        """The last local reader of ``stream_id`` closed."""
        if self._nc is not None and not self._closing:
            # Forget this process's position: it no longer holds the producer.
            forget = f"{self.process_id} -1 {now_ms()}".encode()
            report = asyncio.ensure_future(
                self.nc.publish(self.layout.positions(stream_id), forget)
            )
            report.add_done_callback(_ignore)

    async def _check_alive(self, follower: Follower) -> None:
        """After an idle pull: end the follow if the producer vanished or ended."""
        check_meta(follower, await self.meta(follower.stream_id), _LIVE)

    async def _report_loop(self) -> None:
        """Publish each followed stream's slowest reader position, every REPORT_S."""
        while not self._closing:
            positions = await self._following.next_report()
            now = now_ms()
            try:
                for sid, position in positions.items():
                    report = f"{self.process_id} {position} {now}".encode()
                    await self.nc.publish(self.layout.positions(sid), report)
            except Exception as exc:
                log.warning("backplane position report failed: %r", exc)
                await asyncio.sleep(limits.HEALTH_S)

    async def _keepalive_loop(self) -> None:
        """Rewrite the meta of the running streams produced here (their ``at``)."""
        while not self._closing:
            await asyncio.sleep(limits.RUNNING_TTL_S / 3)
            for sid, fields in list(self._metas.items()):
                if fields.get("state") != RUNNING:
                    continue
                try:
                    await self.store.put(sid, fields)
                except Exception as exc:
                    log.warning("backplane keepalive of %s failed: %r", sid, exc)
                    break

    async def _health_loop(self) -> None:
        """Ask JetStream for the chunk stream every HEALTH_S: ``healthy`` says
        whether it answers."""
        await watch_health(
            self._probe,
            self._mark_health,
            lambda: not self._closing,
            timeout_s=limits.HEALTH_S * 2,
            back_off=False,
        )

    async def _probe(self) -> None:
        """One health check. A server restarted without the chunk stream
        (memory storage) gets the stream and the bucket again."""
        from nats.js.errors import NotFoundError

        if not self.nc.is_connected:
            raise ConnectionError("not connected")
        try:
            await self.js.stream_info(self.layout.chunk_stream)
        except NotFoundError:
            log.warning("backplane chunk stream missing: made again")
            await self._ensure_chunks()
            await self._ensure_meta()

    def _mark_health(self, answered: bool) -> None:
        self.healthy = health_changed(self.healthy, answered)

    def followed(self) -> dict[str, Follower]:
        return self._following.followed()


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: reconnects are expected, say them once at debug."""
    log.debug("nats backplane connection: %r", exc)


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
