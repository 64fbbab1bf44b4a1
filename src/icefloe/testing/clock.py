"""A fake clock and the virtual-time event loop that runs on it.

:class:`FakeClock` is a number of seconds that moves only when told to
(:meth:`FakeClock.advance`) or, inside its event loop, when the loop has
nothing to do but wait for a timer: then it jumps straight to that timer
("autojump"; trio's ``MockClock`` has the same idea). So a node that does
``await asyncio.sleep(30)`` finishes at once in real time, and exactly 30
seconds later in the loop's time.

What it controls is the *event loop's* clock, ``loop.time()``, and so
everything scheduled on it: ``asyncio.sleep``, ``asyncio.timeout``,
``asyncio.wait_for``, ``loop.call_later``/``call_at``, and the runtime's own
timers (deadline expiry, the linger of finished streams, the load watch, the
throttle of congested starts, the edge's heartbeats and send watchdog). It
does not change ``time.time()``, ``time.monotonic()`` or ``time.time_ns()``:
chunk timestamps, and byte budgets' pacing, read those (docs/testing.md
lists each one). Code that takes a clock argument (``Hub(clock=...)``) can be
given :meth:`FakeClock.monotonic`.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = ["FakeClock", "VirtualTimeLoop", "current_clock"]

T = TypeVar("T")


class FakeClock:
    """Seconds that move only by :meth:`advance` or an autojump of its loop.

    :param start: the clock's first reading, in seconds.
    :param autojump_threshold: real seconds the loop must sit idle (nothing
        ready, no I/O) before it jumps to its next timer. 0.0 jumps at once;
        raise it when the code under test waits on threads or sockets while a
        timer is pending, so the jump does not beat them.
    :raises ValueError: ``start`` or ``autojump_threshold`` is not a finite
        number, or the threshold is negative.
    """

    __slots__ = ("_now_ns", "autojump_threshold", "jumped_s", "jumps")

    def __init__(self, start: float = 0.0, *, autojump_threshold: float = 0.0) -> None:
        if not isinstance(start, int | float) or not math.isfinite(start):
            raise ValueError(f"start must be a finite number of seconds, got {start!r}")
        if (
            not isinstance(autojump_threshold, int | float)
            or not math.isfinite(autojump_threshold)
            or autojump_threshold < 0
        ):
            raise ValueError(
                f"autojump_threshold must be finite seconds >= 0, got {autojump_threshold!r}"
            )
        # Whole nanoseconds: thousands of jumps add up with no float drift.
        self._now_ns = round(start * 1e9)
        self.autojump_threshold = float(autojump_threshold)
        #: how many times the loop jumped to its next timer
        self.jumps = 0
        #: seconds the loop's jumps added (advance() is not counted)
        self.jumped_s = 0.0

    def __repr__(self) -> str:
        return f"<FakeClock {self.monotonic():.6f} s, {self.jumps} jumps>"

    def monotonic(self) -> float:
        """The clock's reading, in seconds (a ``time.monotonic`` stand-in)."""
        return self._now_ns / 1e9

    time = monotonic

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``; timers now due run on the loop's
        next turn (so ``advance(1); await asyncio.sleep(0)`` lets them run).

        :raises ValueError: ``seconds`` is negative or not finite (time never goes back).
        """
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        self._now_ns += round(seconds * 1e9)

    def jump(self, seconds: float) -> None:
        """An autojump of the loop to a timer ``seconds`` away (counted in
        :attr:`jumps` and :attr:`jumped_s`), to the nanosecond.

        asyncio runs a timer due within its clock resolution (1 ns here), so the
        nearest nanosecond is on time; at least 1 ns, so a wait that rounds to
        nothing still moves the clock instead of spinning."""
        step = max(1, round(seconds * 1e9))
        self._now_ns += step
        self.jumps += 1
        self.jumped_s += step / 1e9

    def new_event_loop(self) -> VirtualTimeLoop:
        """A new event loop on this clock (a ``loop_factory`` for ``asyncio.Runner``)."""
        return VirtualTimeLoop(self)

    def run(self, main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
        """Like ``asyncio.run(main)``, in a new event loop on this clock."""
        with asyncio.Runner(debug=debug, loop_factory=self.new_event_loop) as runner:
            return runner.run(main)


class _JumpingSelector(selectors.BaseSelector):
    """The loop's selector, which turns an idle wait for a timer into a jump.

    asyncio asks its selector to wait ``timeout`` seconds exactly when no
    callback is ready and the next timer is ``timeout`` away: that is the
    moment the clock may jump. A wait with no timer (``None``) stays real,
    so a loop with nothing scheduled blocks as it would anyway.
    """

    def __init__(self, inner: selectors.BaseSelector, clock: FakeClock) -> None:
        self._inner = inner
        self._clock = clock

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return self._inner.select(timeout)
        ready = self._inner.select(min(timeout, self._clock.autojump_threshold))
        if not ready:
            self._clock.jump(timeout)
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose ``time()`` is a :class:`FakeClock`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        super().__init__(_JumpingSelector(selectors.DefaultSelector(), clock))
        # The clock's own tick (asyncio takes the real monotonic clock's, which
        # varies by platform): a timer within 1 ns of now is due, see jump().
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.clock.monotonic()


def current_clock() -> FakeClock | None:
    """The fake clock of the running loop, or None when it runs on real time.

    :raises RuntimeError: no event loop is running.
    """
    loop = asyncio.get_running_loop()
    return loop.clock if isinstance(loop, VirtualTimeLoop) else None
