"""One hub subscription as its reader sees it: the async iterator over a subscriber's buffer.

The buffer itself, and the flow control between publishers and readers,
is :class:`~icefloe.hub.subscriber.SubscriberState`; this module is the
public handle that reads it, waits on it and ends it.

How a subscription ends, by cause:

=====================  ===================================================  =====================
cause                  what the reader sees                                 buffered events
=====================  ===================================================  =====================
``aclose``/``close``   iteration stops; ``receive*`` raise                  discarded at once
(or leaving ``async    ``ClosedResourceError``
with``, or garbage)
overflow               ``StreamError(code="overloaded")``                   discarded at once
``disconnect``
``Hub.close``          ``StreamError(code="cancelled")``                    read first
=====================  ===================================================  =====================

Cancelling a task blocked in ``receive``/``__anext__``/``wait`` leaves the
subscription attached: only closing it (or the hub) detaches it.
"""

from __future__ import annotations

from icefloe.core.ring import Overflow
from icefloe.exceptions import ClosedResourceError, IcefloeError, StreamError, WouldBlock
from icefloe.hub.event import HubEvent
from icefloe.hub.subscriber import SubscriberState, SubscriptionStatistics, park

__all__ = ["HubSubscription"]


def _fresh(cause: IcefloeError) -> IcefloeError:
    # Raise a new instance each time: re-raising one would grow its traceback.
    if isinstance(cause, StreamError):
        return StreamError(cause.code, cause.message, cause.stream_id)
    return ClosedResourceError(str(cause))


class HubSubscription:
    """An async iterator over the events a subscriber receives, oldest first.

    Made by :meth:`Hub.subscribe <icefloe.hub.Hub.subscribe>`. Use it as an
    async context manager (or call :meth:`aclose`) so that it detaches from
    the hub as soon as you are done; dropping the last reference detaches
    it too. Iteration ends after :meth:`aclose`; it raises
    :class:`~icefloe.exceptions.StreamError` when the subscription is ended
    by the hub (see the module docstring for the causes).

    Events of one topic arrive in offset order. A subscription is read by
    one task at a time; several may wait, and all are woken.
    """

    __slots__ = ("__weakref__", "_s")

    def __init__(self, subscriber: SubscriberState) -> None:
        self._s = subscriber

    def __repr__(self) -> str:
        s = self._s
        return (
            f"HubSubscription(id={s.subscriber_id!r}, tenant={s.tenant!r}, "
            f"pattern={s.pattern.source!r}, buffered={s.held()})"
        )

    @property
    def subscriber_id(self) -> str:
        return self._s.subscriber_id

    @property
    def tenant(self) -> str:
        return self._s.tenant

    @property
    def pattern(self) -> str:
        return self._s.pattern.source

    @property
    def filter(self) -> str | None:
        """The filter's source, or None."""
        return self._s.info.filter

    @property
    def overflow(self) -> Overflow:
        return self._s.ring.overflow

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (for any cause); buffered events may remain."""
        return self._s.cause is not None

    def statistics(self) -> SubscriptionStatistics:
        """A snapshot of this subscription's buffer and counters."""
        return self._s.statistics()

    # -- reading -----------------------------------------------------------------------

    def __aiter__(self) -> HubSubscription:
        return self

    async def __anext__(self) -> HubEvent:
        s = self._s
        if s.replay is None:
            # SubscriberState.take without a replay, inline: one call fewer per event.
            try:
                taken = s.ring.take()
            except IndexError:
                if s.room:
                    s.wake_publishers()
            else:
                if s.reliable or s.room:
                    s.taken(taken)
                return taken
        else:
            event = s.take()
            if event is not None:
                return event
        while True:
            cause = s.cause
            if cause is not None:
                if isinstance(cause, ClosedResourceError):
                    raise StopAsyncIteration
                raise _fresh(cause)
            await park(s.waiters)
            event = s.take()
            if event is not None:
                return event

    async def receive(self) -> HubEvent:
        """The next event, waiting for one.

        :raises ClosedResourceError: the subscription was closed here.
        :raises StreamError: the hub ended it (``overloaded``, ``cancelled``).
        """
        s = self._s
        while True:
            event = s.take()
            if event is not None:
                return event
            if s.cause is not None:
                raise _fresh(s.cause)
            await park(s.waiters)

    def receive_nowait(self) -> HubEvent:
        """The next event if one is buffered now.

        :raises WouldBlock: nothing is buffered yet.
        :raises ClosedResourceError: the subscription was closed here.
        :raises StreamError: the hub ended it (``overloaded``, ``cancelled``).
        """
        s = self._s
        event = s.take()
        if event is not None:
            return event
        if s.cause is not None:
            raise _fresh(s.cause)
        raise WouldBlock(f"no event for subscriber {s.subscriber_id!r} yet")

    def held(self) -> int:
        """How many events :meth:`receive_nowait` would return now without waiting."""
        return self._s.held()

    def end_reason(self) -> IcefloeError | None:
        """Why nothing more will come, once nothing is :meth:`held`; None: more may."""
        s = self._s
        if s.cause is None or s.held():
            return None
        return _fresh(s.cause)

    async def wait(self) -> None:
        """Wait until :meth:`receive_nowait` has something to say (an event or the end)."""
        s = self._s
        if s.held() or s.cause is not None:
            return
        await park(s.waiters)

    def interrupt(self) -> None:
        """End a pending :meth:`wait` early, e.g. to write a heartbeat; stays attached."""
        self._s.wake_readers()

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Detach from the hub and discard what is buffered. Idempotent."""
        s = self._s
        if s.cause is None:
            s.registry.end(s, ClosedResourceError("the subscription was closed"), keep=False)
        elif s.held():
            s.discard()

    async def aclose(self) -> None:
        """Asynchronous :meth:`close`."""
        self.close()

    async def __aenter__(self) -> HubSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # An ``async for`` left with ``break`` drops the handle without closing it.
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
