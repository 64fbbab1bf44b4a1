"""Seeded fuzzing of the frame codec and the store's record decoders.

Each input is either random bytes or a mutation of a valid record (bit
flips, byte overwrites, truncation, insertion, deletion, splices of two
records, a rewritten length, and payload mutations re-sealed with a valid
CRC32C so they reach the version, kind and msgpack checks). Every input goes
through :func:`~icefloe.core.framing.decode_frame`, the record decoder of
its kind and, for one input in four, a :class:`~icefloe.core.framing.FrameReader`
fed in random pieces. The only exceptions allowed are the documented ones
(``DecodeError`` and its subclasses for frames, ``CorruptRecord`` for
records); and the two frame decoders must agree: a whole single frame is
accepted by both or by neither, with the same payload.

The unit tests run :func:`fuzz` with 100,000 inputs; ``make fuzz`` runs this
module as a script (``FUZZ_ITERATIONS``, ``FUZZ_SEED``), which also checks
that the process's RSS stays flat (within 4 MiB after a warm-up).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from icefloe.core.codec import Format
from icefloe.core.framing import FrameReader, decode_frame, encode_frame
from icefloe.core.messages import Headers, Message, StreamChunk
from icefloe.exceptions import CorruptRecord, DecodeError
from icefloe.store import records

__all__ = ["FuzzReport", "fuzz", "main", "seeds"]

# What the RSS may grow over a ``make fuzz`` run after the warm-up.
_RSS_SLACK = 4 * 1024 * 1024

_DECODERS: dict[int, Callable[[bytes], Any]] = {
    records.RecordKind.CHUNK: records.decode_chunk,
    records.RecordKind.MESSAGE: records.decode_message,
    records.RecordKind.STATE: records.decode_state,
    records.RecordKind.SESSION: records.decode_session,
    records.RecordKind.SEGMENT: records.decode_segment,
}


def seeds() -> list[tuple[int, bytes]]:
    """Valid records of every kind, as ``(kind, record)``."""
    chunk = StreamChunk("stream-1", 42, "héllo", True, {"m": [1, 2]}, {"d": b"\x00"}, 7)
    message = Message(
        {"prompt": "hi", "n": [1.5, None]},
        Headers("acme", "news", 3),
        trace_id="trace",
        deadline_s=12.5,
        meta={"k": "v"},
    )
    state = {"pos": 16, "text": "abc" * 10, "nested": [[{"x": -1}]], "blob": b"\xff" * 8}
    return [
        (records.RecordKind.CHUNK, records.encode_chunk(chunk)),
        (records.RecordKind.CHUNK, records.encode_chunk(StreamChunk("s", 0, ""))),
        (records.RecordKind.MESSAGE, records.encode_message(message)),
        (records.RecordKind.STATE, records.encode_state(state)),
        (records.RecordKind.STATE, records.encode_state(None)),
        (records.RecordKind.SESSION, records.encode_session(b"session \x00 blob")),
        (records.RecordKind.SEGMENT, records.encode_segment([chunk])),
        (
            records.RecordKind.SEGMENT,
            records.encode_segment([StreamChunk("s", i, f"t{i}", ts=i) for i in range(3, 9)]),
        ),
    ]


@dataclass
class FuzzReport:
    """What a fuzz run did."""

    inputs: int = 0
    frames_accepted: int = 0
    records_accepted: int = 0
    reader_runs: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def _reseal(payload: bytes) -> bytes:
    # A frame around ``payload`` with a correct CRC: reaches the body checks.
    return encode_frame(payload, Format.MSGPACK)


def _mutate(rng: random.Random, record: bytes, other: bytes) -> bytes:
    data = bytearray(record)
    how = rng.randrange(9)
    if how == 0:
        for _ in range(rng.randint(1, 4)):
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
    elif how == 1:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == 2:
        del data[rng.randrange(len(data)) :]
    elif how == 3:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    elif how == 4:
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 8)]
    elif how == 5:
        return record[: rng.randrange(len(record))] + other[rng.randrange(len(other)) :]
    elif how == 6:
        data[0:4] = rng.randrange(2**32).to_bytes(4, "big")
    else:
        # Mutate inside the payload, then seal it again with a valid CRC.
        payload = bytearray(record[6:-4])
        for _ in range(rng.randint(1, 3)):
            if payload:
                payload[rng.randrange(len(payload))] = rng.randrange(256)
        if how == 8 and len(payload) > 2:
            del payload[rng.randrange(2, len(payload)) :]
        return _reseal(bytes(payload))
    return bytes(data)


def _count(report: FuzzReport, exc: BaseException) -> None:
    name = type(exc).__name__
    report.errors[name] = report.errors.get(name, 0) + 1


def _check_reader(rng: random.Random, data: bytes, single: bytes | None) -> None:
    reader = FrameReader(max_frame=records.MAX_RECORD + 2)
    failed = False
    try:
        at = 0
        while at < len(data):
            step = rng.randint(1, 16)
            reader.feed_data(data[at : at + step])
            at += step
        reader.feed_eof()
    except DecodeError:
        failed = True
    frames = reader.events_received()
    if single is not None:
        assert not failed, "FrameReader refused a frame decode_frame accepted"
        assert [f.payload for f in frames] == [single]
    elif not failed and len(frames) == 1:
        raise AssertionError("FrameReader accepted a frame decode_frame refused")


def _one(rng: random.Random, report: FuzzReport, kind: int, data: bytes) -> None:
    single: bytes | None = None
    try:
        single = decode_frame(data, records.MAX_RECORD + 2).payload
        report.frames_accepted += 1
    except DecodeError as exc:
        _count(report, exc)
    try:
        _DECODERS[kind](data)
        report.records_accepted += 1
    except CorruptRecord as exc:
        _count(report, exc.__cause__ or exc)
    if rng.random() < 0.25:
        report.reader_runs += 1
        _check_reader(rng, data, single)


def fuzz(seed: int, iterations: int) -> FuzzReport:
    """Run ``iterations`` inputs from ``seed``; raise on any undocumented behaviour."""
    rng = random.Random(seed)
    pool = seeds()
    report = FuzzReport()
    for _ in range(iterations):
        kind, record = rng.choice(pool)
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randint(0, 64))
            if rng.random() < 0.5 and len(data) >= 4:
                # random bytes that at least declare a plausible length
                data = max(len(data) - 10, 0).to_bytes(4, "big") + data[4:]
        elif rng.random() < 0.02:
            data = record  # the seeds themselves must decode
        else:
            data = _mutate(rng, record, rng.choice(pool)[1])
        report.inputs += 1
        _one(rng, report, kind, data)
    return report


def main() -> int:
    """``make fuzz``: a long seeded run with a flat-memory (RSS) check."""
    iterations = int(os.environ.get("FUZZ_ITERATIONS", "2000000"))
    seed = int(os.environ.get("FUZZ_SEED", str(int(time.time()))))
    process = psutil.Process()
    fuzz(seed ^ 0x5EED, 50_000)  # warm-up: caches, interned strings, allocator arenas
    rss = [process.memory_info().rss]
    report = FuzzReport()
    started = time.perf_counter()
    tenth = max(1, iterations // 10)
    for part in range(0, iterations, tenth):
        done = fuzz(seed + part, min(tenth, iterations - part))
        report.inputs += done.inputs
        report.frames_accepted += done.frames_accepted
        report.records_accepted += done.records_accepted
        report.reader_runs += done.reader_runs
        for name, n in done.errors.items():
            report.errors[name] = report.errors.get(name, 0) + n
        rss.append(process.memory_info().rss)
    elapsed = time.perf_counter() - started
    grown = rss[-1] - rss[0]
    print(
        f"seed {seed}: {report.inputs} inputs in {elapsed:.1f} s "
        f"({report.inputs / elapsed:,.0f}/s), frames accepted {report.frames_accepted}, "
        f"records accepted {report.records_accepted}, reader runs {report.reader_runs}; "
        f"RSS {rss[0] // 1024} KiB -> {rss[-1] // 1024} KiB; errors {report.errors}"
    )
    # Flat: a leak of even a few bytes per input would show as megabytes here.
    if grown > _RSS_SLACK:
        print(f"RSS grew by {grown} bytes over the run (samples {rss})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
