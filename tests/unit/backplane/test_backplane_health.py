"""An engine's health watch: each check marked, a change logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from icefloe.backplane import health
from icefloe.backplane.health import health_changed, watch_health


def test_a_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="icefloe.backplane"):
        assert health_changed(False, True)
        assert health_changed(True, True)
        assert not health_changed(True, False)
        assert not health_changed(False, False)
    assert [r.getMessage() for r in caplog.records] == [
        "backplane reachable again",
        "backplane unreachable: /readyz answers 503 until it is back",
    ]


@pytest.mark.parametrize("back_off", [True, False])
async def test_each_check_is_marked_until_the_engine_stops(
    monkeypatch: pytest.MonkeyPatch, back_off: bool
) -> None:
    monkeypatch.setattr(health, "HEALTH_S", 0.001)
    answers = [ConnectionError("away"), None, TimeoutError(), None]
    marks: list[bool] = []

    async def probe() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    def running() -> bool:
        return bool(answers)

    await asyncio.wait_for(
        watch_health(probe, marks.append, running, timeout_s=1, back_off=back_off), 5
    )
    assert marks == [False, True, False, True]


async def test_a_check_past_its_timeout_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "HEALTH_S", 0.001)
    marks: list[bool] = []

    async def probe() -> None:
        await asyncio.sleep(10)

    await asyncio.wait_for(
        watch_health(probe, marks.append, lambda: not marks, timeout_s=0.01, back_off=False), 5
    )
    assert marks == [False]
