"""The translate step of a route: a view of the source's record -> the fields of a chunk.

A source hands each record over as a *view*, a plain dict: for a chunk record
``stream_id, seq, text, done, meta, data, tenant, trace_id``; for a hub event
also ``topic, offset, headers`` (see docs/bridge.md). :func:`to_chunk` makes
the chunk the sink gets from the view's fields of those names.

Between the two, a route may translate:

* a **field mapping** ``{text = "data.msg"}``: each output field takes the
  value at a dotted path of the view (dict keys; a list index is a number);
  fields not mapped keep the view's value;
* a **callable** ``"package.module:function"``, sync or async, taking the
  view and returning the new view, or ``None`` to drop the record.

A missing path, a wrong type, or an exception of the callable makes the record
poison (:class:`TranslateError`): it goes to the route's dead-letter sink.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeAlias

from icefloe.connectors.record import ChunkRecord
from icefloe.core.messages import StreamChunk
from icefloe.core.reliability import Reliability
from icefloe.exceptions import IcefloeError

__all__ = [
    "CHUNK_FIELDS",
    "TranslateError",
    "Translator",
    "chunk_view",
    "field_mapping",
    "import_translator",
    "to_chunk",
]

View: TypeAlias = dict[str, Any]
#: translate view -> view; None drops the record
Translator: TypeAlias = Callable[[View], Awaitable[View | None]]

#: fields a mapping may set: the chunk's and the record's
CHUNK_FIELDS: Final = frozenset(
    {"stream_id", "seq", "text", "done", "meta", "data", "tenant", "trace_id"}
)
_MISSING: Final = object()


class TranslateError(IcefloeError):
    """A record could not be translated (a poison record)."""


def _lookup(view: Any, path: str) -> Any:
    value = view
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = _MISSING
        if value is _MISSING:
            raise TranslateError(f"the record has no {path!r}")
    return value


def field_mapping(mapping: Mapping[str, str]) -> Translator:
    """The translator of a ``{output_field = "dotted.path"}`` table.

    :raises ValueError: an output field is not one of :data:`CHUNK_FIELDS`.
    """
    unknown = sorted(set(mapping) - CHUNK_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown output field(s) {', '.join(unknown)}; "
            f"one of {', '.join(sorted(CHUNK_FIELDS))}"
        )
    pairs = tuple(mapping.items())

    async def translate(view: View) -> View:
        return {**view, **{field: _lookup(view, path) for field, path in pairs}}

    return translate


def import_translator(target: str) -> Translator:
    """The function named ``"package.module:function"``, as an async translator.

    :raises ValueError: not ``module:function``, not importable, or not callable.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not 'package.module:function'")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {target!r}: {exc}") from None
    if not callable(func):
        raise ValueError(f"{target!r} is not callable")

    async def translate(view: View) -> View | None:
        try:
            out = func(view)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            raise TranslateError(f"{target} raised {type(exc).__name__}: {exc}") from exc
        if out is not None and not isinstance(out, dict):
            raise TranslateError(f"{target} returned {type(out).__name__}, not a dict or None")
        return out

    return translate


def to_chunk(view: View) -> ChunkRecord:
    """The chunk (with tenant and trace) a view's fields describe.

    :raises TranslateError: a field is missing or has the wrong type.
    """
    sid, seq, text = view.get("stream_id"), view.get("seq"), view.get("text", "")
    if not isinstance(sid, str) or not sid:
        raise TranslateError("stream_id must be a non-empty string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise TranslateError("seq must be an integer >= 0")
    if not isinstance(text, str):
        raise TranslateError(f"text must be a string, got {type(text).__name__}")
    meta = view.get("meta") or {}
    if not isinstance(meta, dict):
        raise TranslateError("meta must be a table")
    tenant = view.get("tenant") or "default"
    trace_id = view.get("trace_id") or sid
    if not isinstance(tenant, str) or not isinstance(trace_id, str):
        raise TranslateError("tenant and trace_id must be strings")
    chunk = StreamChunk(
        stream_id=sid,
        seq=seq,
        text=text,
        done=bool(view.get("done", False)),
        meta=meta,
        data=view.get("data"),
    )
    return ChunkRecord(chunk, trace_id, tenant, Reliability.AT_LEAST_ONCE)


def chunk_view(got: ChunkRecord) -> View:
    """The view of a chunk record (the inverse of :func:`to_chunk`)."""
    c = got.chunk
    return {
        "stream_id": c.stream_id,
        "seq": c.seq,
        "text": c.text,
        "done": c.done,
        "meta": dict(c.meta),
        "data": c.data,
        "tenant": got.tenant,
        "trace_id": got.trace_id,
    }
