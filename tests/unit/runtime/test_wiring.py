"""A flow's graph made runnable (runtime/wiring.py): inboxes, ingress, egress, workers."""

from __future__ import annotations

import pytest

from icefloe import Context, Headers, Limits, Message, Node, NodePolicy
from icefloe.core.reliability import Reliability
from icefloe.runtime.node import Adjacency
from icefloe.runtime.registry import StreamRegistry
from icefloe.runtime.wiring import Wiring


async def work(msg: Message, ctx: Context) -> None:
    return None


def _wiring(*adjacencies: Adjacency, queue_maxsize: int = 4) -> Wiring:
    registry = StreamRegistry(Limits(), lambda _trace: False)
    return Wiring(adjacencies, queue_maxsize, None, registry, None)


def test_a_message_enters_the_nodes_without_a_predecessor() -> None:
    a, b = Node(work, name="a"), Node(work, name="b")
    wiring = _wiring(a.to(b), b.to())
    assert wiring.nodes == (a, b)
    (entry,) = wiring.targets(None)
    assert wiring.targets(a) == (entry,)
    assert wiring.targets([b]) != (entry,)


def test_a_foreign_node_is_refused() -> None:
    wiring = _wiring(Node(work, name="a").to())
    with pytest.raises(ValueError, match="is not a node of this flow"):
        wiring.targets(Node(work, name="stranger"))


def test_a_run_asks_for_the_strongest_guarantee_of_the_nodes_it_enters() -> None:
    weak = Node(work, name="weak")
    strong = Node(work, name="strong", policy=NodePolicy(reliability=Reliability.EXACTLY_ONCE))
    wiring = _wiring(weak.to(), strong.to())
    assert wiring.reliability(None) == "exactly_once"
    assert wiring.reliability(weak) == "at_most_once"


def test_queue_fill_is_the_fullest_inbox() -> None:
    a = Node(work, name="a")
    wiring = _wiring(a.to(), queue_maxsize=4)
    assert wiring.queue_fill() == 0.0
    (inbox,) = wiring.targets(a)
    inbox.send_nowait(Message("x", Headers(tenant="t")))
    assert wiring.queue_fill() == 0.25
    assert len(wiring.node_statistics()) == 1
    assert wiring.inbox_windows() == {}


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        _wiring()
    with pytest.raises(ValueError, match="queue_maxsize"):
        _wiring(Node(work, name="a").to(), queue_maxsize=0)
