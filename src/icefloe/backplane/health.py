"""The health task of an engine: whether it answers, for ``/readyz``.

:func:`watch_health` runs the engine's ``probe`` (a Redis ``PING``, a
JetStream stream lookup) every :data:`~icefloe.backplane.limits.HEALTH_S`,
each within ``timeout_s``, and hands each outcome to ``mark``;
:func:`health_changed` is the ``mark`` half every engine shares (a change is
logged once, not every check). With ``back_off``, the checks after a failure
come sooner (from 50 ms, doubling up to ``HEALTH_S``), so readiness comes
back as soon as the engine answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from icefloe.backplane.backoff import backoff_s
from icefloe.backplane.limits import HEALTH_S

__all__ = ["health_changed", "watch_health"]

log = logging.getLogger("icefloe.backplane")


def health_changed(was: bool, answered: bool) -> bool:
    """Whether the engine is healthy now that a check ``answered`` (logged if it changed)."""
    if was and not answered:
        log.warning("backplane unreachable: /readyz answers 503 until it is back")
    elif answered and not was:
        log.warning("backplane reachable again")
    return answered


async def watch_health(
    probe: Callable[[], Awaitable[object]],
    mark: Callable[[bool], None],
    running: Callable[[], bool],
    *,
    timeout_s: float,
    back_off: bool,
) -> None:
    """Check the engine with ``probe`` while ``running()``; ``mark`` each outcome."""
    failures = 0
    while running():
        await asyncio.sleep(backoff_s(failures, cap_s=HEALTH_S) if failures else HEALTH_S)
        try:
            async with asyncio.timeout(timeout_s):
                await probe()
        except asyncio.CancelledError:
            raise
        except Exception:
            mark(False)
            failures += 1 if back_off else 0
        else:
            mark(True)
            failures = 0
