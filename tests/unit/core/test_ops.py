"""Tests for icefloe.core.ops: WebSocket ops, their validation and encoders."""

from __future__ import annotations

import datetime
import json
import random
import re
import time
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icefloe.core.codec import Format
from icefloe.core.messages import StreamChunk
from icefloe.core.ops import (
    MAX_CREDIT,
    MAX_DEPTH,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_FILTER_LENGTH,
    MAX_ID_LENGTH,
    MAX_PRIORITY,
    MAX_SEQ,
    MAX_TENANT_LENGTH,
    MAX_TOPIC_LENGTH,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
    Ack,
    BadRequest,
    Cancel,
    Chunk,
    ClientOp,
    Credit,
    End,
    Error,
    Event,
    Hello,
    Input,
    Pause,
    Ping,
    Pong,
    Publish,
    Resume,
    ServerOp,
    Start,
    Started,
    StartHeaders,
    Subscribe,
    SubTopic,
    Unsubscribe,
    Unsubscribed,
    UnsubTopic,
    Welcome,
    decode_client,
    decode_server,
    encode_chunk,
    encode_client,
    encode_server,
    negotiate_subprotocol,
)
from icefloe.exceptions import DecodeError, EncodeError, ErrorCode, IcefloeError

_CONTROL = re.compile("[\x00-\x1f\x7f]")
PROPERTY = settings(max_examples=150, deadline=None)
FORMATS = [Format.JSON, Format.MSGPACK]
CLIENT_OP_TYPES = (
    Hello,
    Start,
    Subscribe,
    Credit,
    Pause,
    Resume,
    Cancel,
    Ack,
    Input,
    Publish,
    SubTopic,
    Ping,
    Unsubscribe,
    UnsubTopic,
)


def _frame(obj: Any, fmt: Format) -> bytes | str:
    """``obj`` as a frame of ``fmt``, bypassing the op types."""
    if fmt is Format.JSON:
        return json.dumps(obj)
    return msgspec.msgpack.encode(obj)


def _bad(obj: Any, fmt: Format) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode_client(_frame(obj, fmt), fmt)
    return info.value


# -- strategies ------------------------------------------------------------------

_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_opt_ids = st.none() | _ids
_clean = st.characters(blacklist_categories=("Cc", "Cs"))
_topics = st.text(_clean, min_size=1, max_size=40)
_seqs = st.integers(0, MAX_SEQ)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)

_client_ops: st.SearchStrategy[ClientOp] = st.one_of(
    st.builds(Hello, session_id=_ids, resume=st.booleans(), ref=_opt_ids),
    st.builds(Hello, ref=_opt_ids),
    st.builds(
        Start,
        ref=_ids,
        payload=_values,
        headers=st.builds(
            StartHeaders,
            tenant=st.none() | st.text(_clean, min_size=1, max_size=MAX_TENANT_LENGTH),
            topic=st.none() | st.text(_clean, max_size=MAX_TOPIC_LENGTH),
            priority=st.integers(-MAX_PRIORITY, MAX_PRIORITY),
        ),
    ),
    st.builds(Subscribe, stream_id=_ids, from_seq=st.none() | _seqs, ref=_opt_ids),
    st.builds(Credit, stream_id=_ids, n=st.integers(1, MAX_CREDIT), ref=_opt_ids),
    st.builds(Pause, stream_id=_ids, ref=_opt_ids),
    st.builds(Resume, stream_id=_ids, ref=_opt_ids),
    st.builds(Cancel, stream_id=_ids, ref=_opt_ids),
    st.builds(Ack, stream_id=_ids, seq=_seqs, ref=_opt_ids),
    st.builds(Input, stream_id=_ids, data=_values, ref=_opt_ids),
    st.builds(Publish, topic=_topics, data=_values, ref=_opt_ids),
    st.builds(
        SubTopic,
        pattern=_topics,
        filter=st.none() | st.text(_clean, max_size=80),
        sub_id=_opt_ids,
        ref=_opt_ids,
    ),
    st.builds(Ping, ref=_opt_ids),
    st.builds(Unsubscribe, stream_id=_ids, ref=_opt_ids),
    st.builds(UnsubTopic, sub_id=_ids, ref=_opt_ids),
)


@st.composite
def _stream_chunks(draw: st.DrawFn) -> StreamChunk:
    return StreamChunk(
        stream_id=draw(_ids),
        seq=draw(_seqs),
        text=draw(st.text()),
        done=draw(st.booleans()),
        meta=draw(st.dictionaries(st.text(max_size=8), _values, max_size=3)),
        data=draw(_values),
        ts=draw(st.integers(-(2**63), 2**63 - 1)),
    )


def _chunk_op(chunk: StreamChunk) -> Chunk | End:
    cls = End if chunk.done else Chunk
    return cls(
        stream_id=chunk.stream_id,
        seq=chunk.seq,
        text=chunk.text,
        done=chunk.done,
        meta=chunk.meta,
        data=chunk.data,
        ts=chunk.ts,
    )


_server_ops: st.SearchStrategy[ServerOp] = st.one_of(
    st.builds(Welcome, session_id=_ids, resumed=st.booleans(), window=st.integers(1, 2**31)),
    st.builds(Started, ref=_ids, stream_id=_ids),
    _stream_chunks().map(_chunk_op),
    st.builds(
        Error,
        code=st.sampled_from(list(ErrorCode)).map(str),
        message=st.text(),
        ref=_opt_ids,
        stream_id=_opt_ids,
    ),
    st.builds(Event, topic=_topics, data=_values, offset=st.none() | _seqs),
    st.builds(Pong, ref=_opt_ids),
    st.builds(Unsubscribed, stream_id=_opt_ids, sub_id=_opt_ids, ref=_opt_ids),
)


# -- round trips -------------------------------------------------------------------


@PROPERTY
@given(op=_client_ops)
@pytest.mark.parametrize("fmt", FORMATS)
def test_client_ops_round_trip(op: ClientOp, fmt: Format) -> None:
    frame = encode_client(op, fmt)
    assert isinstance(frame, str if fmt is Format.JSON else bytes)
    assert decode_client(frame, fmt) == op


@PROPERTY
@given(op=_server_ops)
@pytest.mark.parametrize("fmt", FORMATS)
def test_server_ops_round_trip(op: ServerOp, fmt: Format) -> None:
    frame = encode_server(op, fmt)
    assert isinstance(frame, str if fmt is Format.JSON else bytes)
    assert decode_server(frame, fmt) == op


@PROPERTY
@given(chunk=_stream_chunks())
@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_chunk_is_the_chunk_op(chunk: StreamChunk, fmt: Format) -> None:
    frame = encode_chunk(chunk, fmt)
    assert frame == encode_server(_chunk_op(chunk), fmt)
    op = decode_server(frame, fmt)
    assert isinstance(op, End if chunk.done else Chunk)
    assert isinstance(op, Chunk | End)
    assert op.as_stream_chunk() == chunk


def test_chunk_and_end_wire_form() -> None:
    chunk = StreamChunk("abc", 17, "lo", ts=1)
    assert encode_chunk(chunk, Format.JSON) == (
        '{"op":"chunk","stream_id":"abc","seq":17,"text":"lo","done":false,'
        '"meta":{},"data":null,"ts":1}'
    )
    end = StreamChunk("abc", 18, "", done=True, ts=2)
    text = encode_chunk(end, Format.JSON)
    assert isinstance(text, str)
    assert text.startswith('{"op":"end","stream_id":"abc","seq":18,')
    data = encode_chunk(end, Format.MSGPACK)
    assert isinstance(data, bytes)
    assert msgspec.msgpack.decode(data) == {
        "op": "end",
        "stream_id": "abc",
        "seq": 18,
        "text": "",
        "done": True,
        "meta": {},
        "data": None,
        "ts": 2,
    }


def test_server_ops_wire_form_omits_absent_optionals() -> None:
    assert encode_server(Error(code="not_found", message="no such stream"), Format.JSON) == (
        '{"op":"error","code":"not_found","message":"no such stream"}'
    )
    assert encode_server(Pong(), Format.JSON) == '{"op":"pong"}'
    assert encode_server(Unsubscribed(stream_id="s"), Format.JSON) == (
        '{"op":"unsubscribed","stream_id":"s"}'
    )
    assert encode_server(Unsubscribed(sub_id="t", ref="r"), Format.JSON) == (
        '{"op":"unsubscribed","sub_id":"t","ref":"r"}'
    )
    assert encode_server(Welcome(session_id="s", resumed=False, window=256), Format.JSON) == (
        '{"op":"welcome","session_id":"s","resumed":false,"window":256}'
    )
    assert encode_server(Event(topic="t", data=None), Format.JSON) == (
        '{"op":"event","topic":"t","data":null}'
    )


def test_client_wire_form_and_defaults() -> None:
    assert encode_client(Ping(), Format.JSON) == '{"op":"ping"}'
    assert encode_client(Start(ref="r"), Format.JSON) == '{"op":"start","ref":"r","headers":{}}'
    start = decode_client('{"op":"start","ref":"r"}', Format.JSON)
    assert start == Start(ref="r", payload=None, headers=StartHeaders())
    assert decode_client('{"op":"subscribe","stream_id":"s"}', Format.JSON) == Subscribe(
        stream_id="s"
    )


def test_unencodable_server_values_raise_encode_error() -> None:
    with pytest.raises(EncodeError, match="Event cannot be encoded as JSON"):
        encode_server(Event(topic="t", data=object()), Format.JSON)
    with pytest.raises(EncodeError, match="MSGPACK"):
        encode_server(Event(topic="t", data=2**70), Format.MSGPACK)
    with pytest.raises(EncodeError, match="chunk cannot be encoded"):
        encode_chunk(StreamChunk("s", 0, "", data=object()), Format.JSON)
    with pytest.raises(EncodeError, match="chunk cannot be encoded"):
        encode_chunk(StreamChunk("s", 0, "", meta={"k": 2**70}), Format.MSGPACK)


@pytest.mark.parametrize("fmt", [0, 3, None])
def test_unknown_format_is_a_value_error(fmt: Any) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        decode_client("{}", fmt)
    with pytest.raises(ValueError, match="unknown format"):
        encode_server(Pong(), fmt)
    with pytest.raises(ValueError, match="unknown format"):
        encode_chunk(StreamChunk("s", 0, ""), fmt)
    with pytest.raises(ValueError, match="unknown format"):
        decode_server("{}", fmt)


def test_formats_may_be_plain_ints() -> None:
    assert decode_client('{"op":"ping"}', 1) == Ping()  # type: ignore[arg-type]
    assert decode_client(b"\x81\xa2op\xa4ping", 2) == Ping()  # type: ignore[arg-type]
    assert encode_chunk(StreamChunk("s", 0, "", ts=0), 1) == encode_chunk(  # type: ignore[arg-type]
        StreamChunk("s", 0, "", ts=0), Format.JSON
    )
    with pytest.raises(EncodeError, match="as MSGPACK"):
        encode_chunk(StreamChunk("s", 0, "", data=object()), 2)  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="as JSON"):
        encode_server(Event(topic="t", data=object()), 1)  # type: ignore[arg-type]


def test_decode_server_errors() -> None:
    with pytest.raises(DecodeError, match="must be bytes"):
        decode_server('{"op":"pong"}', Format.MSGPACK)
    with pytest.raises(DecodeError, match="invalid server op"):
        decode_server('{"op":"ping"}', Format.JSON)
    # A client ignores fields it does not know (a newer server may add some).
    assert decode_server('{"op":"pong","later":1}', Format.JSON) == Pong()


# -- subprotocols --------------------------------------------------------------------


def test_subprotocols_map_to_formats() -> None:
    assert dict(SUBPROTOCOLS) == {
        "icefloe.v1.json": Format.JSON,
        "icefloe.v1.msgpack": Format.MSGPACK,
    }
    assert (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK) == ("icefloe.v1.json", "icefloe.v1.msgpack")


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["icefloe.v1.msgpack", "icefloe.v1.json"], "icefloe.v1.msgpack"),
        (["chat", "icefloe.v1.json"], "icefloe.v1.json"),
        (["icefloe.v2.json", "chat"], None),
        ([], None),
    ],
)
def test_negotiate_subprotocol_follows_the_client_order(
    offered: list[str], chosen: str | None
) -> None:
    assert negotiate_subprotocol(offered) == chosen


# -- validation: the limits -------------------------------------------------------------

_OK_CASES: list[dict[str, Any]] = [
    {"op": "credit", "stream_id": "s" * MAX_ID_LENGTH, "n": 1},
    {"op": "credit", "stream_id": "~!", "n": MAX_CREDIT},
    {"op": "ack", "stream_id": "s", "seq": 0},
    {"op": "ack", "stream_id": "s", "seq": MAX_SEQ},
    {"op": "subscribe", "stream_id": "s", "from_seq": None},
    {"op": "subscribe", "stream_id": "s", "from_seq": MAX_SEQ},
    {"op": "hello", "session_id": "x", "resume": True},
    {"op": "hello", "session_id": "x"},
    {"op": "start", "ref": "r", "headers": {"priority": MAX_PRIORITY}},
    {"op": "start", "ref": "r", "headers": {"priority": -MAX_PRIORITY, "topic": ""}},
    {"op": "start", "ref": "r", "headers": {"tenant": "t" * MAX_TENANT_LENGTH}},
    {"op": "start", "ref": "r", "headers": {"tenant": "Ünïcode ok", "topic": "a.b"}},
    {"op": "publish", "topic": "t" * MAX_TOPIC_LENGTH, "data": None},
    {"op": "sub_topic", "pattern": "a.*", "filter": "f" * MAX_FILTER_LENGTH},
    {"op": "input", "stream_id": "s", "data": [2**64 - 1, -(2**63), {"k": "v"}]},
    {"op": "ping", "ref": "r" * MAX_ID_LENGTH},
    {"op": "unsubscribe", "stream_id": "s" * MAX_ID_LENGTH},
    {"op": "sub_topic", "pattern": "a.*", "sub_id": "~" * MAX_ID_LENGTH},
    {"op": "unsub_topic", "sub_id": "t" * MAX_ID_LENGTH, "ref": "u"},
]


@pytest.mark.parametrize("obj", _OK_CASES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_values_at_the_limits_are_accepted(obj: dict[str, Any], fmt: Format) -> None:
    op = decode_client(_frame(obj, fmt), fmt)
    assert op.__struct_config__.tag == obj["op"]


_BAD_CASES: list[tuple[dict[str, Any] | list[Any] | int | str | None, str]] = [
    # envelope
    ({"stream_id": "s"}, "missing required field `op`"),
    ({"op": 5}, "Expected `str`"),
    ({"op": "Credit", "stream_id": "s", "n": 1}, "unknown op 'Credit'"),
    ({"op": "credit ", "stream_id": "s", "n": 1}, "unknown op 'credit '"),
    ({"op": ""}, "unknown op ''"),
    ([{"op": "ping"}], "Expected `object`, got `array`"),
    (7, "Expected `object`, got `int`"),
    ("ping", "Expected `object`, got `str`"),
    (None, "Expected `object`, got"),
    # unknown fields are rejected, at the top and in headers
    ({"op": "ping", "extra": 1}, "unknown field `extra`"),
    ({"op": "subscribe", "stream_id": "s", "from_sq": 3}, "unknown field `from_sq`"),
    ({"op": "start", "ref": "r", "headers": {"tenat": "x"}}, "unknown field `tenat`"),
    # required fields
    ({"op": "start", "payload": 1}, "missing required field `ref`"),
    ({"op": "credit", "stream_id": "s"}, "missing required field `n`"),
    ({"op": "input", "stream_id": "s"}, "missing required field `data`"),
    ({"op": "hello", "resume": True}, "resume requires a session_id"),
    # ids
    ({"op": "cancel", "stream_id": "s" * (MAX_ID_LENGTH + 1)}, "length <= 128 - at `$.stream_id`"),
    ({"op": "cancel", "stream_id": ""}, "length >= 1"),
    ({"op": "cancel", "stream_id": "a b"}, "printable ASCII without spaces"),
    ({"op": "cancel", "stream_id": "é"}, "printable ASCII without spaces"),
    ({"op": "cancel", "stream_id": 5}, "Expected `str`, got `int`"),
    ({"op": "ping", "ref": ""}, "at `$.ref`"),
    ({"op": "hello", "session_id": "x\n", "resume": True}, "at `$.session_id`"),
    # credit
    ({"op": "credit", "stream_id": "s", "n": 0}, "Expected `int` >= 1 - at `$.n`"),
    ({"op": "credit", "stream_id": "s", "n": -5}, ">= 1"),
    ({"op": "credit", "stream_id": "s", "n": MAX_CREDIT + 1}, "<= 2147483647"),
    ({"op": "credit", "stream_id": "s", "n": 2**64 - 1}, "<= 2147483647"),
    ({"op": "credit", "stream_id": "s", "n": True}, "Expected `int`, got `bool`"),
    ({"op": "credit", "stream_id": "s", "n": 1.0}, "Expected `int`, got `float`"),
    ({"op": "credit", "stream_id": "s", "n": "1"}, "Expected `int`, got `str`"),
    ({"op": "credit", "stream_id": "s", "n": None}, "Expected `int`, got"),
    # seqs
    ({"op": "ack", "stream_id": "s", "seq": -1}, ">= 0 - at `$.seq`"),
    ({"op": "ack", "stream_id": "s", "seq": MAX_SEQ + 1}, "at `$.seq`"),
    ({"op": "subscribe", "stream_id": "s", "from_seq": -1}, ">= 0 - at `$.from_seq`"),
    # headers and hub fields
    ({"op": "start", "ref": "r", "headers": {"priority": MAX_PRIORITY + 1}}, "<= 1000"),
    ({"op": "start", "ref": "r", "headers": {"priority": -MAX_PRIORITY - 1}}, ">= -1000"),
    ({"op": "start", "ref": "r", "headers": {"tenant": ""}}, "at `$.headers.tenant`"),
    ({"op": "start", "ref": "r", "headers": {"tenant": "t" * 201}}, "length <= 200"),
    ({"op": "start", "ref": "r", "headers": {"tenant": "a\x1bb"}}, "at `$.headers.tenant`"),
    ({"op": "start", "ref": "r", "headers": []}, "Expected `object`, got `array`"),
    ({"op": "publish", "topic": "", "data": 1}, "at `$.topic`"),
    ({"op": "publish", "topic": "t" * 201, "data": 1}, "length <= 200"),
    ({"op": "sub_topic", "pattern": "a", "filter": "f" * 1025}, "length <= 1024"),
    ({"op": "sub_topic", "pattern": "a\nb"}, "at `$.pattern`"),
    ({"op": "sub_topic", "pattern": "a", "sub_id": ""}, "length >= 1 - at `$.sub_id`"),
    ({"op": "sub_topic", "pattern": "a", "sub_id": "a b"}, "printable ASCII without spaces"),
    # unsubscribe and unsub_topic
    ({"op": "unsubscribe"}, "missing required field `stream_id`"),
    ({"op": "unsubscribe", "stream_id": "s" * 129}, "length <= 128 - at `$.stream_id`"),
    ({"op": "unsubscribe", "stream_id": "s", "from_seq": 1}, "unknown field `from_seq`"),
    ({"op": "unsub_topic"}, "missing required field `sub_id`"),
    ({"op": "unsub_topic", "sub_id": "é"}, "printable ASCII without spaces"),
    ({"op": "unsub_topic", "sub_id": 7}, "Expected `str`, got `int`"),
    ({"op": "unsub_topic", "sub_id": "x", "pattern": "a"}, "unknown field `pattern`"),
    # payload / data values
    ({"op": "input", "stream_id": "s", "data": -(2**63) - 1}, "Integer outside the 64-bit range"),
    ({"op": "start", "ref": "r", "payload": [2**64]}, "Integer outside the 64-bit range"),
    (
        {"op": "publish", "topic": "t", "data": {"a": [[10**30]]}},
        "Integer outside the 64-bit range",
    ),
]


@pytest.mark.parametrize(("obj", "message"), _BAD_CASES)
def test_invalid_json_ops_are_bad_requests(obj: Any, message: str) -> None:
    exc = _bad(obj, Format.JSON)
    assert message in exc.message


def _msgpack_can_carry(obj: Any) -> bool:
    try:
        msgspec.msgpack.encode(obj)
    except OverflowError:  # integers beyond 64 bits have no msgpack form at all
        return False
    return True


@pytest.mark.parametrize(("obj", "message"), [c for c in _BAD_CASES if _msgpack_can_carry(c[0])])
def test_invalid_msgpack_ops_are_bad_requests(obj: Any, message: str) -> None:
    assert message in _bad(obj, Format.MSGPACK).message


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("fmt", FORMATS)
def test_payload_nesting_is_bounded(fmt: Format) -> None:
    ok = {"op": "input", "stream_id": "s", "data": _nested(MAX_DEPTH)}
    assert decode_client(_frame(ok, fmt), fmt) == Input(stream_id="s", data=_nested(MAX_DEPTH))
    exc = _bad({**ok, "data": _nested(MAX_DEPTH + 1), "ref": "r9"}, fmt)
    assert exc.message == f"invalid input: More than {MAX_DEPTH} nested lists/maps - at `$.data`"
    assert (exc.ref, exc.op) == ("r9", "input")


@pytest.mark.parametrize("fmt", FORMATS)
def test_absurd_nesting_is_a_bad_request(fmt: Format) -> None:
    depth = 100_000
    frame: bytes | str
    if fmt is Format.JSON:
        frame = '{"op":"input","ref":"d","stream_id":"s","data":' + "[" * depth + "]" * depth + "}"
    else:
        frame = b"\x84\xa2op\xa5input\xa3ref\xa1d\xa9stream_id\xa1s\xa4data" + b"\x91" * depth
    exc = _bad_frame(frame, fmt)
    # Too deep even to read the ref back: the message says why, and no more.
    assert (exc.message, exc.ref) == ("invalid message: nested too deeply", None)


def _bad_frame(frame: bytes | str, fmt: Format) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode_client(frame, fmt)
    return info.value


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("", "invalid message: Input data was truncated"),
        ('{"op":"ping"', "truncated"),
        ('{"op":"ping"} x', "trailing characters"),
        ("{'op':'ping'}", "malformed"),
        ('{"op":"ping","ref":NaN}', "malformed"),
        ('{"op":"input","stream_id":"s","data":1e999}', "Number out of range"),
        ('{"op":"input","stream_id":"s","data":"\\ud800"}', "invalid"),
        ('{"op":"ping","ref":"\ud800"}', "invalid UTF-8"),
    ],
)
def test_malformed_json(frame: str, message: str) -> None:
    assert message in _bad_frame(frame, Format.JSON).message


def test_duplicate_keys_keep_the_last_value() -> None:
    frame = '{"op":"credit","stream_id":"s","n":1,"n":5}'
    assert decode_client(frame, Format.JSON) == Credit(stream_id="s", n=5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({1: "int key"}, "Map key is not a string"),
        ({None: 1}, "Map key is not a string"),
        ([{"ok": {(1, 2): 3}}], "Map key is not a string"),
        (msgspec.msgpack.Ext(5, b"x"), "extension type 5 is not allowed"),
    ],
)
def test_msgpack_values_json_cannot_carry_are_refused(data: Any, message: str) -> None:
    frame = msgspec.msgpack.encode({"op": "publish", "topic": "t", "data": data, "ref": "p"})
    exc = _bad_frame(frame, Format.MSGPACK)
    assert message in exc.message
    assert exc.ref == "p"


def test_msgpack_bytes_and_timestamps_are_carried() -> None:
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    frame = msgspec.msgpack.encode({"op": "input", "stream_id": "s", "data": [b"\x00", when]})
    op = decode_client(frame, Format.MSGPACK)
    assert op == Input(stream_id="s", data=[b"\x00", when])
    assert isinstance(encode_client(op, Format.JSON), str)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "truncated"),
        (b"\xc1", "invalid"),
        (b"\x81\xa2op\xa4ping\x00", "trailing characters"),
        (b"\x82\xa2op\xa4ping\xa3ref\xa2\xff\xfe", "invalid UTF-8"),
        (b"\x81\x01\xa4ping", "Expected `str`"),
    ],
)
def test_malformed_msgpack(frame: bytes, message: str) -> None:
    assert message in _bad_frame(frame, Format.MSGPACK).message


# -- the error itself ----------------------------------------------------------------------


def test_bad_request_is_a_decode_error_and_answers_bad_request() -> None:
    exc = _bad({"op": "credit", "stream_id": "s", "n": 0, "ref": "c1"}, Format.JSON)
    assert isinstance(exc, DecodeError)
    assert isinstance(exc, IcefloeError)
    assert isinstance(exc, ValueError)
    assert (exc.code, exc.ref, exc.op) == ("bad_request", "c1", "credit")
    assert str(exc) == exc.message == "invalid credit: Expected `int` >= 1 - at `$.n`"
    assert exc.to_error() == Error(code="bad_request", message=exc.message, ref="c1")
    assert isinstance(exc.__cause__, msgspec.ValidationError)


@pytest.mark.parametrize(
    ("ref", "kept"),
    [("c1", True), ("r" * MAX_ID_LENGTH, True), ("r" * 129, False), (5, False), ("a b", False)],
)
def test_ref_is_kept_only_when_valid(ref: Any, kept: bool) -> None:
    exc = _bad({"op": "nope", "ref": ref}, Format.JSON)
    assert exc.ref == (ref if kept else None)
    assert exc.op is None
    assert exc.message == "unknown op 'nope'"


def test_frame_type_must_match_the_subprotocol() -> None:
    exc = _bad_frame(b'{"op":"ping","ref":"p1"}', Format.JSON)
    assert exc.message == "binary frame on the icefloe.v1.json subprotocol: send text frames"
    assert exc.ref == "p1"
    exc = _bad_frame('{"op":"ping","ref":"p2"}', Format.MSGPACK)
    assert exc.message == "text frame on the icefloe.v1.msgpack subprotocol: send binary frames"
    assert exc.ref == "p2"
    assert _bad_frame(b"\x81\xa2op\xa4ping", Format.JSON).ref is None


def test_huge_input_is_not_echoed() -> None:
    name = "x" * 1_000_000
    for obj in ({"op": "ping", name: 1}, {"op": name}, {"op": "ping", "ref": name}):
        exc = _bad(obj, Format.JSON)
        assert len(exc.message) <= MAX_ERROR_MESSAGE_LENGTH
        assert exc.ref is None
    exc = _bad({"op": "ping", name: 1}, Format.JSON)
    assert exc.message.startswith("invalid ping: Object contains unknown field `xxx")
    assert exc.message.endswith("xxx`")
    assert " … " in exc.message


def test_control_characters_are_not_echoed() -> None:
    exc = _bad({"op": "ping", "a\x1b[2J\r\nb": 1}, Format.JSON)
    assert exc.message == "invalid ping: Object contains unknown field `a?[2J??b`"


# -- fuzzing --------------------------------------------------------------------------------

_VALID_OBJECTS: list[dict[str, Any]] = [
    {"op": "hello"},
    {"op": "hello", "session_id": "abc", "resume": True, "ref": "h"},
    {"op": "start", "ref": "r", "payload": {"q": "hi"}, "headers": {"tenant": "t", "priority": 1}},
    {"op": "subscribe", "stream_id": "s", "from_seq": 3},
    {"op": "credit", "stream_id": "s", "n": 10},
    {"op": "pause", "stream_id": "s"},
    {"op": "resume", "stream_id": "s"},
    {"op": "cancel", "stream_id": "s", "ref": "c"},
    {"op": "ack", "stream_id": "s", "seq": 9},
    {"op": "input", "stream_id": "s", "data": ["x", 1]},
    {"op": "publish", "topic": "t", "data": {"k": [1.5, None]}},
    {"op": "sub_topic", "pattern": "a.*", "filter": "x > 1", "sub_id": "t1"},
    {"op": "ping"},
    {"op": "unsubscribe", "stream_id": "s"},
    {"op": "unsub_topic", "sub_id": "t1"},
]
_OP_NAMES = [obj["op"] for obj in _VALID_OBJECTS]
_FIELDS = sorted({key for obj in _VALID_OBJECTS for key in obj} | {"headers.tenant", "zz"})


def _hostile_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**40, -(10**300)])
    if kind == 1:
        return rng.choice([True, False, None, 0.0, -0.0, 1e308, 2.5, -1e-300])
    if kind == 2:
        return "x" * rng.choice([0, 1, 127, 128, 129, 200, 201, 1025, 5000])
    if kind == 3:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(6)))
    if kind == 4:
        return rng.choice(_OP_NAMES) + rng.choice(["", " ", "\x00", "X"])
    if kind == 5:
        return _nested(rng.choice([1, MAX_DEPTH, MAX_DEPTH + 1, 200]))
    if kind == 6:
        return {rng.choice(["op", "ref", "a", ""]): _hostile_scalar(rng)}
    if kind == 7:
        return [_hostile_scalar(rng) for _ in range(rng.randrange(3))]
    if kind == 8:
        return rng.randrange(-(2**70), 2**70)
    if kind == 9:
        return rng.randbytes(rng.randrange(8))
    return rng.choice(["s", "r", "t", "a.*", "", " "])


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 6)
    if kind < 6:
        return _hostile_scalar(rng) if kind == 0 else rng.choice([None, 1, "v", 2.0, True, []])
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["op", "ref", "stream_id", "n", "seq", "data", "payload", "headers", "k"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _mutated_op(rng: random.Random) -> Any:
    obj: dict[str, Any] = json.loads(json.dumps(rng.choice(_VALID_OBJECTS)))
    for _ in range(rng.randrange(1, 3)):
        field = rng.choice(_FIELDS)
        action = rng.randrange(4)
        target = obj
        if field == "headers.tenant":
            target = obj.setdefault("headers", {})
            if not isinstance(target, dict):
                continue
            field = "tenant"
        if action == 0:
            target.pop(field, None)
        else:
            target[field] = _hostile_scalar(rng)
    return obj


def _to_bytes(obj: Any, fmt: Format, rng: random.Random) -> bytes | str | None:
    try:
        if fmt is Format.JSON:
            text = json.dumps(obj, ensure_ascii=rng.random() < 0.5, default=repr)
            if rng.random() < 0.05:  # damage it
                cut = rng.randrange(len(text) + 1)
                text = text[:cut] + rng.choice(["", "}", "\x00", '"', "\ud800"]) + text[cut + 1 :]
            return text
        data = msgspec.msgpack.encode(obj)
        if rng.random() < 0.05:
            cut = rng.randrange(len(data) + 1)
            data = data[:cut] + rng.randbytes(rng.randrange(3)) + data[cut + 1 :]
        return data
    except (OverflowError, TypeError, ValueError):
        return None  # the generator made something the format cannot express


def _hostile_frame(rng: random.Random, fmt: Format) -> bytes | str | None:
    kind = rng.randrange(10)
    if kind == 0:
        raw = rng.randbytes(rng.randrange(48))
        if fmt is Format.JSON:
            return raw.decode("utf-8", "surrogateescape")
        return raw
    if kind == 1:
        depth = rng.choice([10, 1000, 50_000])
        if fmt is Format.JSON:
            return '{"op":"input","stream_id":"s","data":' + "[" * depth + "]" * depth + "}"
        return b"\x83\xa2op\xa5input\xa9stream_id\xa1s\xa4data" + b"\x91" * depth + b"\xc0"
    if kind == 2:
        if fmt is Format.JSON:
            return '{"op":"credit","stream_id":"s","n":' + "9" * rng.randrange(1, 6000) + "}"
        return b"\x83\xa2op\xa6credit\xa9stream_id\xa1s\xa1n" + rng.choice(
            [b"\xcf" + b"\xff" * 8, b"\xd3\x80" + b"\x00" * 7, b"\xcb" + rng.randbytes(8)]
        )
    if kind == 3:
        # msgpack headers claiming huge lengths
        return rng.choice([b"\xdd", b"\xdf", b"\xdb", b"\xc6"]) + b"\xff\xff\xff\xff"
    if kind in (4, 5):
        return _to_bytes(_random_value(rng), fmt, rng)
    return _to_bytes(_mutated_op(rng), fmt, rng)


def _check_bad_request(exc: BadRequest) -> None:
    """The error is safe to send back, in either format."""
    message = exc.message
    assert len(message) <= MAX_ERROR_MESSAGE_LENGTH
    assert not _CONTROL.search(message)
    assert exc.ref is None or (0 < len(exc.ref) <= MAX_ID_LENGTH and exc.ref.isascii())
    for out in FORMATS:
        encode_server(exc.to_error(), out)


def _check_outcome(frame: bytes | str, fmt: Format) -> bool:
    """Decode ``frame``; a valid op must re-encode in both formats. True if accepted."""
    try:
        op = decode_client(frame, fmt)
    except BadRequest as exc:
        _check_bad_request(exc)
        return False
    assert isinstance(op, CLIENT_OP_TYPES)
    # Valid means: it round-trips in its own format, and the other format can
    # carry it too (msgpack bytes and timestamps become JSON strings).
    assert decode_client(encode_client(op, fmt), fmt) == op
    for out in FORMATS:
        encode_client(op, out)
    return True


def test_fuzz_100k_hostile_frames() -> None:
    """decode_client only ever returns a valid op or raises BadRequest."""
    rng = random.Random(20251125)
    started = time.perf_counter()
    frames = accepted = 0
    while frames < 100_000:
        fmt = rng.choice(FORMATS)
        frame = _hostile_frame(rng, fmt)
        if frame is None:
            continue
        if rng.random() < 0.02:  # the wrong frame type for the subprotocol
            fmt = Format.MSGPACK if fmt is Format.JSON else Format.JSON
        accepted += _check_outcome(frame, fmt)
        frames += 1
    elapsed = time.perf_counter() - started
    # Both outcomes are exercised, and the decoder is not slow on hostile input.
    assert 1_000 < accepted < 90_000
    assert elapsed < 30, f"fuzzing took {elapsed:.1f}s"


_structures = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(_OP_NAMES + _FIELDS),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=12,
)


@settings(max_examples=250, deadline=None)
@given(
    op=st.sampled_from(_VALID_OBJECTS),
    changes=st.dictionaries(st.sampled_from(_FIELDS), _structures, max_size=3),
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_structured_variants(op: dict[str, Any], changes: dict[str, Any], fmt: Format) -> None:
    obj = {**op, **changes}
    try:
        frame = _frame(obj, fmt)
    except (OverflowError, TypeError, ValueError):
        return
    _check_outcome(frame, fmt)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), text=st.text(max_size=64))
def test_fuzz_arbitrary_frames(data: bytes, text: str) -> None:
    for frame in (data, text):
        for fmt in FORMATS:
            _check_outcome(frame, fmt)
