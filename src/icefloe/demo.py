"""The built-in demo flow: a simulated LLM that streams a text token by token.

It paces tokens the way a hosted model does (a time to first token, then a
jittered inter-token gap) so that demos and the inspector show real
streaming behaviour without any model or network.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass

from icefloe.core.congestion import CongestionPolicy
from icefloe.core.messages import Message
from icefloe.runtime.context import Context
from icefloe.runtime.flow import DEFAULT_CONGESTION, Flow, create
from icefloe.runtime.limits import Limits
from icefloe.runtime.node import Node, NodePolicy

__all__ = ["DEMO_TEXT", "Pacing", "build_demo_flow", "simulated_llm", "tokenize"]

DEMO_TEXT = (
    "icefloe carries tokens from a node to every reader in order, only as fast as "
    "each reader can take them. A slow reader slows its own stream, never the others; "
    "a reader that leaves cancels the work it started; and every chunk has a sequence "
    "number, so a reconnecting client resumes exactly where it stopped."
)

_TOKEN = re.compile(r"\s*\S+")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into word-sized tokens that keep their leading spaces."""
    return _TOKEN.findall(text)


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast the simulated model speaks, in seconds."""

    #: delay before the first token
    first_token_s: float = 0.25
    #: mean delay between tokens
    inter_token_s: float = 0.04
    #: +/- fraction of random variation on the inter-token delay
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.first_token_s < 0 or self.inter_token_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("delays must be >= 0 and jitter within [0, 1]")

    def gap(self, rng: random.Random) -> float:
        spread = self.inter_token_s * self.jitter
        return max(0.0, self.inter_token_s + rng.uniform(-spread, spread))


def simulated_llm(
    pacing: Pacing = Pacing(), seed: int | None = None, max_concurrency: int = 256
) -> Node:
    """A node that streams the message payload (a str; default DEMO_TEXT) as tokens."""
    rng = random.Random(seed)

    async def llm(msg: Message, ctx: Context) -> None:
        text = msg.payload if isinstance(msg.payload, str) and msg.payload else DEMO_TEXT
        await asyncio.sleep(pacing.first_token_s)
        for token in tokenize(text):
            await ctx.emit_chunk(parent=msg, text=token)
            await asyncio.sleep(pacing.gap(rng))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    # Each answer holds a slot while it paces itself (and while nobody reads
    # it yet); many concurrent answers must not queue behind one another.
    return Node(llm, name="llm", policy=NodePolicy(max_concurrency=max_concurrency))


def build_demo_flow(
    pacing: Pacing = Pacing(),
    limits: Limits | None = None,
    congestion: CongestionPolicy | None = DEFAULT_CONGESTION,
) -> Flow:
    """A one-node flow around :func:`simulated_llm`."""
    return create(simulated_llm(pacing).to(), limits=limits, congestion=congestion)
