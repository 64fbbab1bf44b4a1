"""Resource limits of a flow, grouped in one value object.

Every limit has a default, a unit and, where it makes sense, ``None`` for
"no limit". What happens at each limit:

* ``max_streams`` / ``max_streams_per_tenant`` / ``max_bytes``: *admission*
  limits. A new stream past them is refused at once with
  ``StreamError(code="overloaded")``; icefloe never queues admissions, so an
  overloaded flow answers fast and the caller (or the HTTP edge, with 503 and
  ``Retry-After``) decides when to try again. Streams already admitted are
  never refused or dropped because of them. ``max_streams_per_tenant``
  defaults to a quarter of ``max_streams`` (2,500 of 10,000; at least 1; no
  cap when ``max_streams`` is None), so one tenant cannot hold every slot;
  the refusal names the tenant's own cap, a flow-wide one says only that the
  server is at capacity.
* ``stream_buffer`` / ``stream_max_bytes``: *backpressure* limits of one
  stream. When the slowest reader of a stream is that many chunks (or bytes)
  behind, the producer's ``emit_chunk`` waits; nothing is dropped.
* ``stream_history``: chunks every reader has consumed that a stream still
  keeps, so a late ``flow.subscribe(stream_id, from_seq=...)`` can replay them.
  0 (the default) keeps nothing after delivery (at-most-once memory use).
* ``linger_s``: how long a finished stream stays registered for a late or
  resuming reader when someone may still want it: nobody read it to its end,
  or it keeps history (streams started with ``Flow.start(history=...)``).
* ``reorder_limit``: chunks a stream holds out of order while waiting for a
  missing seq (concurrent nodes, fan-in); past it the stream fails.
* ``stream_bytes_per_s`` / ``tenant_bytes_per_s``: *bandwidth* budgets, token
  buckets of bytes per second (bursts of ``bytes_burst_s`` seconds' worth)
  for each stream and each tenant. A producer whose bucket is empty waits in
  ``emit_chunk``; nothing is dropped (:mod:`icefloe.runtime.budgets`).
* ``max_inflight_bytes_per_tenant`` / ``max_inflight_bytes``: *memory*
  budgets, bytes released into streams and not yet read, per tenant and for
  the whole flow. Over the limit, producers of that tenant (or every
  producer) wait for readers, and new streams are refused at once:
  ``limit_exceeded`` for a tenant (HTTP 429), ``overloaded`` for the flow (503).
  A budget that stays full for ``inflight_stall_s`` with no reader progress
  (a stream nobody reads) ends the stream holding the most unread bytes.
* ``stream_inputs``: interactive inputs (``flow.send_input``, WebSocket
  ``input``) a stream queues until its node reads them; past it a sender is
  refused at once (``WouldBlock``), never made to wait.
* ``adaptive_window``: how a stream's window adapts within ``[floor,
  stream_buffer]`` from its reader's queue latency and drain rate
  (docs/qos.md); ``None`` keeps every window at ``stream_buffer``.
* ``inbox_window``: how the inbox of each inner node (every node but the
  flow's entry nodes) adapts its capacity within ``[floor, queue_maxsize]``
  from its node's queue latency and drain rate (docs/qos.md); ``None`` (the
  default) keeps every inbox at ``queue_maxsize``.
"""

from __future__ import annotations

from dataclasses import dataclass

from icefloe.core.checks import check_finite_non_negative, check_int, check_positive
from icefloe.core.flowwindow import FlowWindowPolicy

__all__ = ["Limits"]

MIB = 1024 * 1024
#: ``max_streams_per_tenant``'s default: a share of ``max_streams``
AUTO = 0
#: without a per-tenant cap of its own, a tenant may hold 1/TENANT_SHARE of ``max_streams``
TENANT_SHARE = 4
#: the adaptive window's default policy (immutable, so shared)
DEFAULT_WINDOW_POLICY = FlowWindowPolicy()


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits for one flow. All counts are >= 1 unless noted."""

    #: streams active at once, all tenants (None: no limit)
    max_streams: int | None = 10_000
    #: streams active at once per tenant (None: no limit; 0, the default: a
    #: quarter of ``max_streams``, 2,500 of 10,000), so one tenant (one API key
    #: pipelining starts) cannot take every slot: three quarters stay for others
    max_streams_per_tenant: int | None = AUTO
    #: bytes of chunk text/data buffered in all streams before new streams are refused
    max_bytes: int | None = 256 * MIB
    #: chunks one stream buffers ahead of its slowest reader before the producer waits
    stream_buffer: int = 64
    #: bytes one stream buffers ahead of its slowest reader before the producer waits
    stream_max_bytes: int = 4 * MIB
    #: delivered chunks a stream keeps for late readers (>= 0)
    stream_history: int = 0
    #: seconds a finished, unread stream stays registered (>= 0)
    linger_s: float = 30.0
    #: out-of-order chunks one stream may hold (>= 1)
    reorder_limit: int = 1024
    #: interactive inputs one stream queues for its node before senders are refused
    stream_inputs: int = 64
    #: bytes per second one stream's producers may release (None: no limit)
    stream_bytes_per_s: float | None = None
    #: bytes per second all of one tenant's producers may release together (None: no limit)
    tenant_bytes_per_s: float | None = None
    #: the burst of each bytes/s bucket, in seconds of its rate (> 0)
    bytes_burst_s: float = 0.1
    #: unread bytes in one tenant's streams before its producers wait (None: no limit)
    max_inflight_bytes_per_tenant: int | None = None
    #: unread bytes in all streams before every producer waits (None: no limit)
    max_inflight_bytes: int | None = None
    #: seconds a memory budget may stay full with no reader progress before the
    #: stream holding the most unread bytes is ended (``limit_exceeded``)
    inflight_stall_s: float = 5.0
    #: the adaptive window's target latency, floor and steps (None: fixed windows)
    adaptive_window: FlowWindowPolicy | None = DEFAULT_WINDOW_POLICY
    #: the adaptive inner-node inboxes' target latency, floor and steps (None: fixed inboxes)
    inbox_window: FlowWindowPolicy | None = None

    def __post_init__(self) -> None:
        if self.max_streams_per_tenant == AUTO and not isinstance(
            self.max_streams_per_tenant, bool
        ):
            object.__setattr__(self, "max_streams_per_tenant", _tenant_share(self.max_streams))
        for name in ("max_streams", "max_streams_per_tenant", "max_bytes"):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, 1)
        check_int("stream_buffer", self.stream_buffer, 1)
        check_int("stream_max_bytes", self.stream_max_bytes, 1)
        check_int("stream_history", self.stream_history, 0)
        check_int("reorder_limit", self.reorder_limit, 1)
        check_int("stream_inputs", self.stream_inputs, 1)
        for name in ("max_inflight_bytes_per_tenant", "max_inflight_bytes"):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, 1)
        for name in ("stream_bytes_per_s", "tenant_bytes_per_s"):
            value = getattr(self, name)
            if value is not None:
                check_positive(name, value)
        check_positive("bytes_burst_s", self.bytes_burst_s)
        check_positive("inflight_stall_s", self.inflight_stall_s)
        for name in ("adaptive_window", "inbox_window"):
            window = getattr(self, name)
            if window is not None and not isinstance(window, FlowWindowPolicy):
                raise ValueError(f"{name} must be a FlowWindowPolicy or None, got {window!r}")
        check_finite_non_negative("linger_s", self.linger_s)


def _tenant_share(max_streams: int | None) -> int | None:
    """The default per-tenant cap: a quarter of ``max_streams`` (at least 1)."""
    if max_streams is None or not isinstance(max_streams, int) or isinstance(max_streams, bool):
        return None  # no flow-wide cap (or a bad one, refused just after)
    return max(1, max_streams // TENANT_SHARE)
