"""A flow's load shedding put together: the load watch, what it samples, the shedder.

The parts live elsewhere: :class:`~icefloe.runtime.loadwatch.LoadWatch`
turns samples into a congestion state, and
:class:`~icefloe.runtime.shedding.LoadShedder` refuses, throttles and sheds
runs by that state. :class:`FlowLoad` exists to assemble them for one
:class:`~icefloe.runtime.flow.Flow` (or leave them out: ``congestion=None``)
and to define what "load" means for a flow: how full its inboxes are and
how many of its producers are starved of credit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from icefloe.core.congestion import CongestionPolicy, CongestionState
from icefloe.runtime.loadwatch import LoadWatch
from icefloe.runtime.shedding import LoadShedder, ShedStatistics
from icefloe.runtime.throttle import SheddingPolicy

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.wiring import Wiring

__all__ = ["DEFAULT_CONGESTION", "DEFAULT_SHEDDING", "STARVATION_FLOOR", "FlowLoad"]

#: load shedding's thresholds unless create(congestion=...) says otherwise
DEFAULT_CONGESTION = CongestionPolicy()
#: throttling and shedding unless create(shedding=...) says otherwise
DEFAULT_SHEDDING = SheddingPolicy()
#: credit starvation is a share of at least this many running streams
STARVATION_FLOOR = 32


class FlowLoad:
    """The load watch and shedder of one flow (both None: shedding off).

    ``stop_run`` interrupts a shed run's workers (``Flow`` passes its own).
    """

    __slots__ = ("_registry", "_wiring", "max_delay_s", "shedder", "watch")

    def __init__(
        self,
        congestion: CongestionPolicy | None,
        shedding: SheddingPolicy,
        *,
        registry: StreamRegistry,
        wiring: Wiring,
        stop_run: Callable[[str], bool],
    ) -> None:
        #: the load watch behind load shedding (None: shedding off)
        self.watch: LoadWatch | None = None
        #: refuses, throttles and sheds runs by congestion (None: shedding off)
        self.shedder: LoadShedder | None = None
        self._registry = registry  # what the samples read
        self._wiring = wiring
        if congestion is not None:
            self.watch = LoadWatch(self.sample, policy=congestion)
            self.shedder = LoadShedder(self.watch, registry, shedding, stop_run)
            registry.shedder = self.shedder.refusal
        #: the longest a deferred run waits for room in its inbox, past its delay;
        #: without shedding, a deferred run (a resumed one) still waits at most
        #: the default policy's
        self.max_delay_s = (shedding if self.shedder is not None else DEFAULT_SHEDDING).max_delay_s

    @property
    def state(self) -> CongestionState:
        """``normal``, ``congested`` or ``overloaded`` (always ``normal`` with shedding off)."""
        return CongestionState.NORMAL if self.watch is None else self.watch.state

    def sample(self) -> tuple[float, float]:
        """(queue fill, credit starvation) for the load watch, each 0..1.

        Queue fill is the fullest node inbox, against its configured maxsize
        (an adaptive inbox's window is not: a shrunken window is the inbox
        holding less, not pressure). Starvation is the share of
        running streams whose producer waits for its readers, counted over at
        least STARVATION_FLOOR streams: a few stalled clients are their own
        business, not the server's.
        """
        starved = self._registry.producers_waiting()
        active = max(self._registry.active, STARVATION_FLOOR)
        return self._wiring.queue_fill(), starved / active

    def start(self) -> None:
        """Start sampling (the flow runs)."""
        if self.watch is not None:
            self.watch.start()

    def close(self) -> None:
        """Stop sampling (the flow stopped)."""
        if self.watch is not None:
            self.watch.close()

    def statistics(self) -> ShedStatistics | None:
        """What shedding did (None: shedding off)."""
        return None if self.shedder is None else self.shedder.statistics()
