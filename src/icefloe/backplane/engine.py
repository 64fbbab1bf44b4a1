"""The backplane of one process on one Redis server.

:class:`RedisBackplane` owns the connection pool and the process's tasks:

* one :func:`~icefloe.backplane.publisher.publish` task per stream this
  process produces;
* one fetch task per stream this process follows (a blocking ``XREAD`` of at
  most :data:`FETCH_COUNT` entries, whatever the number of local readers,
  run by :func:`~icefloe.backplane.fetching.fetch_loop`), started by the
  first reader and ended with the last
  (:class:`~icefloe.backplane.followers.Followers`);
* one reporter task writing, every :data:`REPORT_S` (or sooner, after
  :data:`~icefloe.backplane.limits.REPORT_EVERY` chunks read), the slowest
  local reader's position of each followed stream;
* one control task following ``P control`` for cancel requests naming a
  stream this process produces, and WebSocket sessions another process
  resumes (:mod:`icefloe.backplane.sessions`);
* one keepalive task refreshing the TTL of the streams this process
  produces, so that a crashed process's streams expire (their readers
  elsewhere then end with ``unavailable`` and may resume nowhere), and
  their leases in their tenant's running streams
  (:mod:`icefloe.backplane.tenants`);
* one health task (:func:`~icefloe.backplane.health.watch_health`) pinging
  the server for ``/readyz``.

The engine away: each loop retries with backoff
(:mod:`icefloe.backplane.backoff`); a followed stream keeps its readers
through an outage shorter than
:data:`~icefloe.backplane.backoff.RETRY_BUDGET_S` (they see a pause), and
ends with ``unavailable`` after a longer one.

Limits: :data:`MAX_FOLLOWED` streams followed at once (a reader past it gets
``unavailable``), each follower's buffer as in
:mod:`icefloe.backplane.follower`; the limits both engines share are in
:mod:`icefloe.backplane.limits` (named here too, where they were first
defined).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from icefloe.backplane import limits
from icefloe.backplane.backoff import backoff_s, engine_errors
from icefloe.backplane.fetching import check_meta, fetch_loop, history_gone_error, prepend_fetched
from icefloe.backplane.followers import Followers, ended_reader
from icefloe.backplane.health import health_changed, watch_health
from icefloe.backplane.keys import Keys, entry_id, parse_url
from icefloe.backplane.limits import FETCH_COUNT, MAX_FOLLOWED, REPORT_S
from icefloe.backplane.meta import ABNORMAL, LIVE, StreamMeta
from icefloe.backplane.producing import ChunkSource
from icefloe.backplane.publisher import publish, slowest
from icefloe.backplane.tasks import stop
from icefloe.backplane.tenants import TenantRuns
from icefloe.backplane.topics import HubLink
from icefloe.core.codec import decode_chunk_msgpack
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from icefloe.backplane.follower import Follower
    from icefloe.backplane.protocol import Deliver, NumberedDeliver
    from icefloe.backplane.reader import RemoteReader

# FETCH_COUNT, MAX_FOLLOWED and REPORT_S are limits.py's, named here as before.
__all__ = ["FETCH_COUNT", "MAX_FOLLOWED", "REPORT_S", "RedisBackplane"]

log = logging.getLogger("icefloe.backplane")

#: milliseconds one XREAD blocks before the fetcher checks the stream's meta;
#: every block stays well under redis-py's socket timeout (5 s by default),
#: which would otherwise cut the read and leave its answer on the connection
BLOCK_MS: Final = int(limits.FETCH_WAIT_S * 1000)
#: cancel requests the control log keeps
CONTROL_MAXLEN: Final = 1000


def _entries(answer: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-key XREAD answer (empty on a timeout)."""
    return list(answer[0][1]) if answer else []


def _decode(stream_id: str, fields: dict[Any, Any]) -> StreamChunk | StreamError:
    raw = fields.get(b"c")
    if raw is not None:
        return decode_chunk_msgpack(raw)
    code, _, message = bytes(fields.get(b"t", b"")).decode().partition("\n")
    try:
        return StreamError(ErrorCode(code), message, stream_id)
    except ValueError:
        return StreamError(ErrorCode.FAILED, message, stream_id)


class RedisBackplane:
    """Streams shared with the other processes on one Redis server."""

    def __init__(
        self,
        url: str,
        *,
        history: int,
        window: int,
        on_cancel: Callable[[str], object],
        max_followed: int = MAX_FOLLOWED,
    ) -> None:
        self._url, prefix = parse_url(url)
        self.keys = Keys(prefix)
        self.history = max(history, 1)
        self.window = max(1, min(window, self.history))
        self._on_cancel = on_cancel
        #: this process, in reports and meta
        self.process_id = uuid.uuid4().hex[:12]
        self._client: Redis | None = None
        self._publishing: dict[str, asyncio.Task[Any]] = {}
        #: the tenant of each stream this process produces
        self._tenants: dict[str, str] = {}
        #: each tenant's running streams, across processes
        self.tenant_runs = TenantRuns(lambda: self.client, self.keys)
        self._following = Followers(
            history=self.history, on_dropped=self._dropped, max_followed=max_followed
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._forgetting: set[asyncio.Task[None]] = set()
        self._closing = False
        #: when a stream this process produces was last seen read elsewhere
        self._read_elsewhere: dict[str, float] = {}
        #: whether the engine answered the last health check (``/readyz``)
        self.healthy = False
        #: called with a WebSocket session id another process resumes (issue 12)
        self.on_session_taken: Callable[[str], object] | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("the backplane is not open")
        return self._client

    async def open(self) -> None:
        """Connect (checked with a PING) and start the reporter and control tasks."""
        import redis.asyncio

        self._client = redis.asyncio.Redis.from_url(self._url)
        await self._client.ping()
        self.healthy = True
        self._tasks = [
            asyncio.ensure_future(self._report_loop()),
            asyncio.ensure_future(self._control_loop()),
            asyncio.ensure_future(self._keepalive_loop()),
            asyncio.ensure_future(self._health_loop()),
        ]

    async def aclose(self) -> None:
        """Stop every task and close the pool."""
        # The loops also stop on this flag: redis-py may turn a cancel that
        # lands mid-command into another error, which a loop would survive.
        self._closing = True
        await stop([*self._tasks, *self._publishing.values(), *self._following.fetch_tasks()])
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- producing ------------------------------------------------------------

    def publish(self, stream_id: str, tenant: str, source: ChunkSource) -> None:
        """Append ``source`` (a stream this process produces) to the engine."""
        self.produce(
            stream_id,
            publish(
                self.client,
                self.keys,
                source,
                stream_id=stream_id,
                tenant=tenant,
                owner=self.process_id,
                history=self.history,
                window=self.window,
            ),
            tenant,
        )

    def produce(
        self, stream_id: str, appender: Coroutine[Any, Any, Any], tenant: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``appender`` as the publisher of ``stream_id``: cancel requests,
        keepalive and close treat it as :meth:`publish`'s (a worker's fenced
        publisher, issue 12). With ``tenant``, the stream counts in that
        tenant's running streams across processes until it ends."""
        task = asyncio.ensure_future(appender)
        self._publishing[stream_id] = task
        if tenant is not None:
            self._tenants[stream_id] = tenant
        task.add_done_callback(lambda t: self._published(stream_id, t))
        return task

    def _published(self, stream_id: str, task: asyncio.Task[Any]) -> None:
        self._publishing.pop(stream_id, None)
        self._read_elsewhere.pop(stream_id, None)
        tenant = self._tenants.pop(stream_id, None)
        if tenant is not None and self._client is not None and not self._closing:
            self.finished(tenant, stream_id)
        if not task.cancelled() and task.exception() is not None:
            log.warning("backplane publish of %s failed: %r", stream_id, task.exception())

    # -- reading --------------------------------------------------------------

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """The stream's meta, or None if no process shares it."""
        return StreamMeta.from_hash(stream_id, await self.client.hgetall(self.keys.meta(stream_id)))

    async def list_streams(self) -> list[StreamMeta]:
        """The shared streams, newest first (at most :data:`MAX_LISTED`)."""
        client = self.client
        ids: Any = await client.zrevrange(self.keys.streams, 0, limits.MAX_LISTED - 1)
        pipe = client.pipeline(transaction=False)
        for raw in ids:
            pipe.hgetall(self.keys.meta(raw.decode()))
        found: list[StreamMeta] = []
        gone: list[bytes] = []
        for raw, fields in zip(ids, await pipe.execute(), strict=True):
            meta = StreamMeta.from_hash(raw.decode(), fields)
            if meta is None:
                gone.append(raw)
            else:
                found.append(meta)
        if gone:
            await client.zrem(self.keys.streams, *gone)
        return found

    async def cancel(self, stream_id: str) -> None:
        """Ask the producing process to cancel ``stream_id``."""
        await self.client.xadd(
            self.keys.control, {"cancel": stream_id}, maxlen=CONTROL_MAXLEN, approximate=True
        )

    async def follow(self, meta: StreamMeta, from_seq: int) -> RemoteReader:
        """A reader of the remote stream ``meta`` from ``from_seq``.

        A reader past the last chunk of a stream that ended abnormally gets
        its terminal at once; one before it reads the chunks first (an
        ``interrupted`` run's prefix, issue 12).

        :raises StreamError: ``history_gone`` (``from_seq`` was trimmed) or
            ``unavailable`` (this process follows too many streams).
        """
        sid = meta.stream_id
        if meta.state in ABNORMAL and from_seq > meta.last_seq:
            return ended_reader(meta, from_seq)
        follower, new = self._following.follower(sid, from_seq)
        if new:
            # Reported now, not at the next tick: until the producer sees a
            # position it does not wait for this reader, and a fast one could
            # run a whole history ahead of it (``history_gone``).
            await self._report({sid: from_seq})
        # A reader ahead of the run (a reconnect past it) waits for the run
        # to reach it, within the fetcher's limit. One behind it is attached
        # first: its position pins ``base`` while the missing part is fetched.
        reader = self._following.reader(follower, from_seq)
        if from_seq < follower.base:
            try:
                await self._prefill(follower, from_seq)
            except BaseException:
                reader.close()
                raise
        if not self._following.fetching(sid):
            self._following.start_fetch(sid, self._fetch_loop(follower))
        return reader

    async def _prefill(self, follower: Follower, from_seq: int) -> None:
        """Fetch ``[from_seq, base)`` with XRANGE for a reader resuming behind the run."""
        sid = follower.stream_id
        need = follower.base - from_seq
        if need > self.history:
            raise history_gone_error(sid)
        entries: Any = await self.client.xrange(
            self.keys.log(sid), entry_id(from_seq), entry_id(follower.base - 1), count=need
        )
        chunks = [c for _id, f in entries if isinstance(c := _decode(sid, f), StreamChunk)]
        prepend_fetched(follower, from_seq, chunks)

    def finished(self, tenant: str, stream_id: str) -> None:
        """``stream_id`` no longer counts for its tenant (it ended, or never started)."""
        done = asyncio.ensure_future(self._finish(tenant, stream_id))
        self._forgetting.add(done)
        done.add_done_callback(self._forgetting.discard)

    async def _finish(self, tenant: str, stream_id: str) -> None:
        # A failure leaves the lease to expire (RUNNING_TTL_S).
        with contextlib.suppress(Exception):
            await self.tenant_runs.finish(tenant, stream_id)

    def _dropped(self, stream_id: str) -> None:
        """The last local reader of ``stream_id`` closed."""
        if self._client is not None:
            # Forget this process's position: it no longer holds the producer.
            forget = asyncio.ensure_future(self._forget(stream_id))
            self._forgetting.add(forget)
            forget.add_done_callback(self._forgetting.discard)

    async def _forget(self, stream_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.client.hdel(self.keys.readers(stream_id), self.process_id)

    async def _fetch_loop(self, follower: Follower) -> None:
        sid = follower.stream_id
        fetch = functools.partial(self._read_log, follower)
        await fetch_loop(
            follower,
            fetch,
            lambda e: _decode(sid, e[1]),
            self._check_alive,
            retried=engine_errors(),
        )

    async def _read_log(
        self, follower: Follower, count: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """One XREAD of up to ``count`` entries after the follower's head."""
        last = entry_id(follower.head - 1) if follower.head else "0-0"
        answer: Any = await self.client.xread(
            {self.keys.log(follower.stream_id): last}, count=count, block=BLOCK_MS
        )
        return _entries(answer)

    async def _check_alive(self, follower: Follower) -> None:
        """After an idle XREAD: end the follow if the producer vanished or ended."""
        check_meta(follower, await self.meta(follower.stream_id), LIVE)

    async def _report(self, positions: dict[str, int]) -> None:
        """Write this process's slowest reader position of each stream, in one pipeline."""
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for sid, position in positions.items():
            key = self.keys.readers(sid)
            pipe.hset(key, self.process_id, f"{position} {now_ms}")
            pipe.pexpire(key, limits.STALE_MS * 4)
        await pipe.execute()

    async def _report_loop(self) -> None:
        """Write each followed stream's slowest reader position, every REPORT_S."""
        failures = 0
        while not self._closing:
            positions = await self._following.next_report()
            if not positions:
                continue
            try:
                await self._report(positions)
            except Exception as exc:
                if not failures:
                    log.warning("backplane position report failed: %r; retrying", exc)
                await asyncio.sleep(backoff_s(failures))
                failures += 1
            else:
                failures = 0

    async def _control_loop(self) -> None:
        """Cancel the streams this process produces when another process asks."""
        last = "$"
        failures = 0
        while not self._closing:
            try:
                answer: Any = await self.client.xread({self.keys.control: last}, block=BLOCK_MS * 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failures:
                    log.warning("backplane control read failed: %r; retrying", exc)
                await asyncio.sleep(backoff_s(failures))
                failures += 1
                continue
            failures = 0
            for entry_id_, fields in _entries(answer):
                last = entry_id_.decode()
                sid = fields.get(b"cancel", b"").decode()
                if sid in self._publishing:
                    self._on_cancel(sid)
                # -- a WebSocket session resumed on another process (issue 12) --
                session = fields.get(b"session")
                by = fields.get(b"by", b"").decode()
                taken = self.on_session_taken
                if session is not None and taken is not None and by != self.process_id:
                    taken(session.decode())

    async def _keepalive_loop(self) -> None:
        """Each second, note which streams this process produces have fresh
        remote readers; every RUNNING_TTL_S / 3, refresh their TTL. One
        pipeline per pass, whatever the number of streams."""
        tick = 0
        while not self._closing:
            await asyncio.sleep(limits.HEALTH_S)
            tick += 1
            refresh = tick % int(limits.RUNNING_TTL_S / 3 / limits.HEALTH_S) == 0
            sids = list(self._publishing)
            if not sids:
                continue
            pipe = self.client.pipeline(transaction=False)
            for sid in sids:
                pipe.hgetall(self.keys.readers(sid))
                if refresh:
                    pipe.expire(self.keys.meta(sid), limits.RUNNING_TTL_S)
                    pipe.expire(self.keys.log(sid), limits.RUNNING_TTL_S)
                    self.tenant_runs.renew(pipe, self._tenants.get(sid, ""), sid)
            try:
                answers: list[Any] = await pipe.execute()
            except Exception as exc:
                log.warning("backplane keepalive failed: %r", exc)
                continue
            now_ms = int(time.time() * 1000)
            step = 5 if refresh else 1  # HGETALL, then EXPIRE x2, ZADD, PEXPIRE
            for sid, raw in zip(sids, answers[::step], strict=True):
                if slowest(raw, now_ms) is not None:
                    self._read_elsewhere[sid] = time.monotonic()

    def read_elsewhere(self, stream_id: str) -> bool:
        """Whether another process reported reading ``stream_id`` lately
        (within the staleness of a position report, checked each second)."""
        seen = self._read_elsewhere.get(stream_id)
        return seen is not None and time.monotonic() - seen < limits.STALE_MS / 1000

    async def _health_loop(self) -> None:
        """PING every HEALTH_S: ``healthy`` says whether the engine answers.

        redis-py reconnects on the next command after a connection is lost;
        every loop of this module backs off before it tries again, so an
        outage costs a few commands per loop per second, not a busy loop.
        While the engine is away the PINGs back off from 50 ms up to
        HEALTH_S, so readiness comes back as soon as it answers.
        """
        await watch_health(
            lambda: self.client.ping(),
            self._mark_health,
            lambda: not self._closing,
            timeout_s=limits.HEALTH_S,
            back_off=True,
        )

    def _mark_health(self, answered: bool) -> None:
        self.healthy = health_changed(self.healthy, answered)

    def followed(self) -> dict[str, Follower]:
        """The followed streams (for tests and metrics)."""
        return self._following.followed()

    def producing(self) -> int:
        """How many streams this process is appending to the engine (a drain waits for 0)."""
        return len(self._publishing)

    def publishing(self, stream_id: str) -> bool:
        """Whether this process produces ``stream_id``."""
        return stream_id in self._publishing

    def topic_link(self, numbered: NumberedDeliver, forwarded: Deliver) -> HubLink:
        """The hub link of this process on ``P hub`` (opened by the caller):
        Redis numbers the topics (``forwarded`` is not used)."""
        return HubLink(self.client, self.keys.hub, self.process_id, numbered)
