"""A Kinesis consumer in a process of its own, for the restart test (test_kinesis_restart.py).

``python kinesis_consumer.py ENDPOINT STREAM STORE_URL OUT --stop-after N
[--crash]`` reads STREAM with a :class:`KinesisSource` whose checkpoints are
in the store at STORE_URL, appends every delivery to OUT as a JSON line
(shard, sequence number, partition key, blob as hex), flushed, then acks it.
After N deliveries it either exits cleanly (the source saves its acked
prefix on close) or, with ``--crash``, SIGKILLs itself: nothing runs after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from typing import TextIO

from motoserver import CREDENTIALS, REGION

from icefloe.connectors.kinesis import KinesisSource, pack
from icefloe.store import open_store

#: the consumer name the test reads the checkpoints back under
CONSUMER = "restart"
#: acks between two checkpoint saves of a shard
COMMIT_EVERY = 40


async def consume(args: argparse.Namespace, out: TextIO) -> None:
    store = open_store(args.store)
    await store.open()
    source = KinesisSource(
        args.stream,
        consumer_name=CONSUMER,
        store=store,
        region=REGION,
        endpoint_url=args.endpoint,
        credentials=CREDENTIALS,
        commit_every=COMMIT_EVERY,
        poll_interval_s=0.05,
    )
    taken = 0
    try:
        async with source:
            async for inbound in source:
                key, blob = pack(inbound.record)
                line = {"shard": inbound.partition, "seq": inbound.position, "key": key}
                out.write(json.dumps({**line, "blob": blob.hex()}) + "\n")
                out.flush()
                await source.ack(inbound)
                taken += 1
                if taken == args.stop_after:
                    if args.crash:
                        os.kill(os.getpid(), signal.SIGKILL)
                    break
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("endpoint", "stream", "store", "out"):
        parser.add_argument(name)
    parser.add_argument("--stop-after", type=int, required=True)
    parser.add_argument("--crash", action="store_true")
    args = parser.parse_args()
    with open(args.out, "a", encoding="utf-8") as out:
        asyncio.run(consume(args, out))


if __name__ == "__main__":
    main()
