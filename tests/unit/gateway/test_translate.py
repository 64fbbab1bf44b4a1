"""The translate step: field mappings, callables by import path, and the chunk a view makes."""

from __future__ import annotations

import pytest

from icefloe.gateway.translate import (
    TranslateError,
    chunk_view,
    field_mapping,
    import_translator,
    to_chunk,
)

VIEW = {"stream_id": "s1", "seq": 3, "text": "", "data": {"msg": "hi", "parts": ["a", "b"]}}


def upper_text(view: dict) -> dict:  # type: ignore[type-arg]
    return {**view, "text": view["data"]["msg"].upper()}


async def drop_all(view: dict) -> None:  # type: ignore[type-arg]
    return None


def explode(view: dict) -> dict:  # type: ignore[type-arg]
    raise KeyError("boom")


async def test_a_mapping_sets_fields_from_dotted_paths() -> None:
    out = await field_mapping({"text": "data.msg", "trace_id": "data.parts.1"})(VIEW)
    assert (out["text"], out["trace_id"], out["seq"]) == ("hi", "b", 3)


async def test_a_missing_path_is_a_translate_error() -> None:
    with pytest.raises(TranslateError, match=r"no 'data\.nope'"):
        await field_mapping({"text": "data.nope"})(VIEW)
    with pytest.raises(TranslateError, match=r"no 'data\.parts\.5'"):
        await field_mapping({"text": "data.parts.5"})(VIEW)


def test_a_mapping_names_only_chunk_fields() -> None:
    with pytest.raises(ValueError, match="unknown output field"):
        field_mapping({"colour": "data.msg"})


async def test_callables_by_import_path_sync_async_and_failing() -> None:
    here = __name__
    assert (await import_translator(f"{here}:upper_text")(VIEW))["text"] == "HI"  # type: ignore[index]
    assert await import_translator(f"{here}:drop_all")(VIEW) is None
    with pytest.raises(TranslateError, match="explode raised KeyError"):
        await import_translator(f"{here}:explode")(VIEW)
    with pytest.raises(ValueError, match="is not callable"):
        import_translator(f"{here}:VIEW")


def test_to_chunk_checks_each_field() -> None:
    got = to_chunk({**VIEW, "text": "x", "tenant": "acme"})
    assert (got.chunk.stream_id, got.chunk.seq, got.chunk.text, got.tenant) == (
        "s1",
        3,
        "x",
        "acme",
    )
    assert got.trace_id == "s1"
    assert chunk_view(got)["data"] == VIEW["data"]
    for bad, message in [
        ({"seq": 1}, "stream_id"),
        ({"stream_id": "s", "seq": -1}, "seq"),
        ({"stream_id": "s", "seq": True}, "seq"),
        ({"stream_id": "s", "seq": 0, "text": 5}, "text must be a string"),
        ({"stream_id": "s", "seq": 0, "meta": [1]}, "meta"),
    ]:
        with pytest.raises(TranslateError, match=message):
            to_chunk(bad)
