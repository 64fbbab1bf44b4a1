"""zstd for the WebSocket: the server's shared stream, and bounded client frames."""

from __future__ import annotations

import random

import pytest
import zstandard

from icefloe.core.wszstd import (
    MAX_CLIENT_WINDOW,
    ZstdMessageCompressor,
    ZstdMessageDecompressor,
    compress_client_frame,
    decompress_client_frame,
    is_zstd,
)
from icefloe.exceptions import DecodeError, FrameTooLarge

OP = b"\x82\xa2op\xa4ping\xa3ref\xa1x"  # msgpack {"op": "ping", "ref": "x"}


def test_every_server_message_inflates_whole_and_later_ones_shrink() -> None:
    sender, receiver = ZstdMessageCompressor(), ZstdMessageDecompressor()
    rng = random.Random(3)
    sizes = []
    for i in range(200):
        message = OP * rng.randint(1, 20) + bytes(rng.randrange(256) for _ in range(i % 5))
        wire = sender.compress(message)
        sizes.append(len(wire))
        assert receiver.decompress(wire) == message  # at once: nothing held back
    assert sum(sizes[100:]) < sum(sizes[:100])  # the shared window pays off
    stats = sender.statistics()
    assert stats.messages == 200
    assert stats.bytes_out == sum(sizes)


def test_a_message_out_of_the_stream_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="zstd"):
        ZstdMessageDecompressor().decompress(b"\x00" * 10)


def test_client_frames_round_trip_with_or_without_a_content_size() -> None:
    assert decompress_client_frame(compress_client_frame(OP), 1024) == OP
    stream = zstandard.ZstdCompressor().compressobj()
    unsized = stream.compress(OP) + stream.flush()
    assert decompress_client_frame(unsized, 1024) == OP
    assert is_zstd(unsized)
    assert not is_zstd(OP)  # a msgpack op is a map: never the zstd magic


@pytest.mark.parametrize("sized", [True, False])
def test_a_bomb_is_refused_without_inflating_it(sized: bool) -> None:
    zeros = b"\0" * 50_000_000
    if sized:
        bomb = zstandard.ZstdCompressor().compress(zeros)
    else:
        stream = zstandard.ZstdCompressor().compressobj()
        bomb = stream.compress(zeros) + stream.flush()
    del zeros
    with pytest.raises(FrameTooLarge) as refused:
        decompress_client_frame(bomb, 4096)
    assert refused.value.limit == 4096
    # Exactly the limit is fine.
    assert len(decompress_client_frame(compress_client_frame(b"a" * 4096), 4096)) == 4096


def test_a_huge_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=24, compression_level=1)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = stream.compress(OP) + stream.flush()
    assert zstandard.get_frame_parameters(frame).window_size > MAX_CLIENT_WINDOW
    with pytest.raises(DecodeError, match="window"):
        decompress_client_frame(frame, 1 << 20)


def test_broken_frames_are_decode_errors_never_anything_else() -> None:
    good = compress_client_frame(OP * 30)
    rng = random.Random(11)
    for _ in range(3000):
        frame = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        if rng.random() < 0.3:
            frame = frame[: rng.randrange(1, len(frame) + 1)]
        try:
            decompress_client_frame(bytes(frame), 2048)
        except DecodeError:  # FrameTooLarge included
            pass
    for broken in (good[:-1], good + b"x", good * 2, good[:4]):
        with pytest.raises(DecodeError):
            decompress_client_frame(broken, 2048)
