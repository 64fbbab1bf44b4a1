"""The QoS additions to the WebSocket ops: ``chunks`` batches, ``hello.batch``, zstd."""

from __future__ import annotations

import pytest

from icefloe.core.codec import Format
from icefloe.core.messages import StreamChunk
from icefloe.core.ops import (
    SUBPROTOCOL_MSGPACK_ZSTD,
    Chunks,
    Hello,
    Welcome,
    decode_client,
    decode_server,
    encode_chunk,
    encode_chunks,
    encode_server,
    negotiate_subprotocol,
)


def frames(fmt: Format, n: int) -> list[bytes | str]:
    # Two streams interleaved, the last chunk an end: what a lagging connection packs.
    return [
        encode_chunk(StreamChunk(f"s{i % 2}", i // 2, "tok", done=i == n - 1), fmt)
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", [Format.JSON, Format.MSGPACK])
@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 65_535, 65_536])
def test_encode_chunks_is_the_chunks_op_of_the_frames(fmt: Format, n: int) -> None:
    parts = frames(fmt, n)
    ops = [decode_server(part, fmt) for part in parts]
    packed = encode_chunks(parts, fmt)
    assert packed == encode_server(Chunks(chunks=ops), fmt)  # type: ignore[arg-type]
    decoded = decode_server(packed, fmt)
    assert isinstance(decoded, Chunks)
    assert decoded.chunks == ops
    assert [(c.stream_id, c.seq) for c in decoded.chunks] == [
        (f"s{i % 2}", i // 2) for i in range(n)
    ]


def test_encode_chunks_refuses_frames_of_the_other_format() -> None:
    with pytest.raises(ValueError, match="must be str"):
        encode_chunks(frames(Format.MSGPACK, 2), Format.JSON)
    with pytest.raises(ValueError, match="must be bytes"):
        encode_chunks(frames(Format.JSON, 2), Format.MSGPACK)
    with pytest.raises(ValueError, match="unknown format"):
        encode_chunks([], 9)  # type: ignore[arg-type]


def test_hello_batch_is_opt_in_and_welcome_says_so_only_when_on() -> None:
    assert decode_client('{"op":"hello"}', Format.JSON) == Hello()
    assert decode_client('{"op":"hello","batch":true}', Format.JSON) == Hello(batch=True)
    with pytest.raises(ValueError, match="batch"):
        decode_client('{"op":"hello","batch":1}', Format.JSON)
    plain = Welcome(session_id="s", resumed=False, window=256)
    assert encode_server(plain, Format.JSON) == (
        '{"op":"welcome","session_id":"s","resumed":false,"window":256}'
    )
    on = Welcome(session_id="s", resumed=False, window=256, batch=True)
    assert encode_server(on, Format.JSON).endswith('"window":256,"batch":true}')


@pytest.mark.parametrize(
    ("offered", "zstd", "chosen"),
    [
        ([SUBPROTOCOL_MSGPACK_ZSTD, "icefloe.v1.msgpack"], True, SUBPROTOCOL_MSGPACK_ZSTD),
        ([SUBPROTOCOL_MSGPACK_ZSTD, "icefloe.v1.msgpack"], False, "icefloe.v1.msgpack"),
        ([SUBPROTOCOL_MSGPACK_ZSTD], False, None),
        (["icefloe.v1.json", SUBPROTOCOL_MSGPACK_ZSTD], True, "icefloe.v1.json"),
    ],
)
def test_zstd_is_negotiated_only_when_the_server_can(
    offered: list[str], zstd: bool, chosen: str | None
) -> None:
    assert negotiate_subprotocol(offered, zstd=zstd) == chosen
