"""Broadcast chat tokens through the hub to subscribers with patterns and a filter.

Run it with ``python examples/hub_chat.py``. Two (simulated) assistants
stream their replies, token by token, to ``chat.<room>.tokens``. Three
subscribers listen:

* a room watcher on ``chat.lobby.tokens`` (one room, every token);
* an auditor on ``chat.*.tokens`` (every room) with a filter that keeps only
  each reply's final token, which carries the whole reply's length;
* a late joiner that replays the lobby from the first offset the room watcher
  saw (offsets are per topic, but a topic's first one is not necessarily 0:
  it is the number of events the hub had published when the topic began).

It ends with the hub's statistics: events published, delivered, dropped.
"""

from __future__ import annotations

import asyncio

from icefloe.hub import Hub, HubEvent, HubSubscription

TENANT = "demo"
REPLIES = {
    "lobby": "Welcome! Ask me anything about streaming.",
    "support": "Your ticket is open; a human will follow up shortly.",
}


async def assistant(hub: Hub, room: str, text: str) -> None:
    """Publish one reply as a token per word, then a final empty token."""
    topic = f"chat.{room}.tokens"
    for seq, word in enumerate(text.split(" ")):
        await hub.publish(topic, {"seq": seq, "text": word + " ", "final": False}, tenant=TENANT)
        await asyncio.sleep(0.02)  # paced like a model
    final = {"text": "", "final": True, "chars": len(text)}
    await hub.publish(topic, final, tenant=TENANT, headers={"room": room})


async def watch(name: str, sub: HubSubscription, until_final: int) -> int:
    """Print what ``sub`` receives until it has seen ``until_final`` final tokens;
    returns the offset of the first event it received."""
    finals = 0
    line: list[str] = []
    first: int | None = None
    async for event in sub:
        if first is None:
            first = event.offset
        line.append(describe(event))
        if event.data.get("final"):
            finals += 1
            if finals == until_final:
                break
    print(f"{name:>9}: {''.join(line)}")
    assert first is not None
    return first


def describe(event: HubEvent) -> str:
    data = event.data
    if data.get("final"):
        return f"[end of {event.topic} @{event.offset}, {data['chars']} chars]"
    return str(data["text"])


async def main() -> None:
    async with Hub() as hub:
        lobby = hub.subscribe("chat.lobby.tokens", tenant=TENANT, subscriber_id="lobby-watch")
        auditor = hub.subscribe(
            "chat.*.tokens", tenant=TENANT, filter="data.final == true and data.chars > 10"
        )
        async with lobby, auditor:
            *_, first_lobby, _ = await asyncio.gather(
                *(assistant(hub, room, text) for room, text in REPLIES.items()),
                watch("lobby", lobby, until_final=1),
                watch("auditor", auditor, until_final=len(REPLIES)),
            )
        # A subscriber that arrives late replays the lobby from where the watcher
        # began (the hub keeps each topic's recent history for this).
        late = hub.subscribe("chat.lobby.tokens", tenant=TENANT, from_offset=first_lobby)
        async with late:
            await watch("late", late, until_final=1)
        stats = hub.statistics()
        print(
            f"\n[hub: {stats.topics} topics, {stats.published} events published, "
            f"{stats.delivered} placed in live buffers, "
            f"{stats.dropped_oldest + stats.dropped_newest} dropped, "
            f"{stats.history_bytes} bytes of history kept]"
        )


if __name__ == "__main__":
    asyncio.run(main())
