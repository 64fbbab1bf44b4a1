"""Undelivered: a flush reports what failed since the last one, once."""

from __future__ import annotations

import pytest

from icefloe.connectors.protocol import DeliveryFailed
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered


def test_a_report_raises_every_failure_once() -> None:
    failures = Undelivered()
    failures.report()  # nothing failed: nothing raised
    one, two, three = (Record(None, bytes([n])) for n in range(3))
    failures.add(one, "refused")
    failures.add_all([two, three], "connection lost")
    assert len(failures) == 3
    with pytest.raises(DeliveryFailed) as raised:
        failures.report()
    assert raised.value.failures == (
        (one, "refused"),
        (two, "connection lost"),
        (three, "connection lost"),
    )
    assert len(failures) == 0
    failures.report()
