"""Tests for icefloe.transport.routes_chat.ChatTable: each chat's running reply, bounded."""

from __future__ import annotations

from icefloe.transport.routes_chat import ChatTable


def test_a_chat_finds_its_running_reply_in_its_tenant_only() -> None:
    running = {"s1"}
    table = ChatTable(running.__contains__)
    table.put("acme", "c1", "s1")
    assert table.active("acme", "c1") == "s1"
    assert table.active("beta", "c1") is None
    running.clear()  # the reply ended: the chat has none, and the entry goes
    assert table.active("acme", "c1") is None
    assert len(table) == 0


def test_a_full_table_sweeps_ended_replies_and_never_drops_a_running_one() -> None:
    running = {"s0", "s1"}
    table = ChatTable(running.__contains__, limit=2)
    table.put("t", "c0", "s0")
    table.put("t", "c1", "s1")
    assert not table.room()  # both run: no room, and both kept
    assert table.active("t", "c0") == "s0"
    assert table.active("t", "c1") == "s1"
    running.discard("s0")
    assert table.room()  # the sweep dropped the ended one
    assert len(table) == 1
    assert table.active("t", "c1") == "s1"


def test_drop_forgets_a_chat() -> None:
    table = ChatTable(lambda _sid: True)
    table.put("t", "c", "s")
    table.drop("t", "c")
    table.drop("t", "c")  # idempotent
    assert table.active("t", "c") is None
