"""The limits every backplane engine shares, Redis and NATS JetStream alike.

Each constant bounds one thing the engines do the same way: how far the
producer runs ahead of the readers elsewhere, how often and how stale a
reader's position report is, how much one fetch takes, how many streams
one process follows or lists, how often the engine's health is checked, and
how long a stream's data outlives its producer. An engine's own limits (a
Redis ``XREAD`` block, a JetStream acknowledgement timeout) stay in its
modules. docs/deploy.md gives the figures these make, per engine.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLOSE_S",
    "FETCH_COUNT",
    "FETCH_WAIT_S",
    "HEALTH_S",
    "MAX_BATCH",
    "MAX_FOLLOWED",
    "MAX_LISTED",
    "REPORT_EVERY",
    "REPORT_S",
    "RUNNING_TTL_S",
    "STALE_MS",
    "TTL_S",
]

# -- producing --------------------------------------------------------------

#: chunks one append carries at most (a Redis pipeline, a JetStream batch):
#: enough to amortise a round trip, and a bound on what one append holds in
#: memory and on the wire
MAX_BATCH: Final = 256

# -- following --------------------------------------------------------------

#: chunks one fetch of a followed stream takes at most (``XREAD COUNT``, a
#: pull request), whatever the follower's room: as :data:`MAX_BATCH`, one
#: producer's batch comes in one fetch
FETCH_COUNT: Final = 256
#: seconds one fetch waits for new chunks before the fetcher checks the
#: stream's meta (its producer may be gone); under redis-py's 5 s socket
#: timeout, and short enough that a vanished producer is noticed in a second
FETCH_WAIT_S: Final = 1.0
#: streams one process follows at once; a reader past it gets ``unavailable``
#: (each followed stream costs a fetch task and up to a history of chunks)
MAX_FOLLOWED: Final = 1000
#: streams ``list_streams`` answers at most (one engine read per stream)
MAX_LISTED: Final = 1000

# -- position reports -------------------------------------------------------

#: seconds between two reports of the slowest local reader of each followed
#: stream: the producer elsewhere waits on them, so this is the latency a
#: reader's progress adds to a producer held back by the window
REPORT_S: Final = 0.1
#: chunks read by a follower's readers after which their position is
#: reported early (a fast reader need not wait :data:`REPORT_S` to free the
#: producer)
REPORT_EVERY: Final = 64
#: milliseconds after which a reader position report is ignored: a crashed
#: gateway stops reporting and must not stall a stream forever; fifty report
#: periods, so a slow loop or a short outage does not drop a live reader
STALE_MS: Final = 5000

# -- the engine's upkeep ----------------------------------------------------

#: seconds between health checks (and the longest one may take): ``/readyz``
#: follows an outage within a second or two
HEALTH_S: Final = 1.0
#: seconds ``aclose`` waits for the tasks it cancelled (a stuck engine call
#: must not hold a shutdown)
CLOSE_S: Final = 2.0
#: seconds a running stream's data lives after the last refresh (the
#: engine's keepalive refreshes it every third of it): a crashed producer's
#: streams vanish, and their readers elsewhere end with ``unavailable``
RUNNING_TTL_S: Final = 30
#: seconds a stream's data lives after its end: a reader that reconnects
#: late still finds it, and the engine's memory is given back after
TTL_S: Final = 600
