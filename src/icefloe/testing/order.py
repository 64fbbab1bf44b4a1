"""``assert_in_order``: the ordering promise of a stream, checked on a list of chunks."""

from __future__ import annotations

from collections.abc import Sequence

from icefloe.core.messages import StreamChunk

__all__ = ["assert_in_order"]


def assert_in_order(
    chunks: Sequence[StreamChunk], *, start: int = 0, complete: bool = False
) -> None:
    """Check that ``chunks`` are one stream's chunks in seq order, with no gap or duplicate.

    The rules are those of docs/python-api.md, "Guarantees": one ``stream_id``;
    ``seq`` goes ``start, start + 1, ...``; nothing follows the ``done`` chunk.
    With ``complete`` the last chunk must be the ``done`` one.

    :raises AssertionError: naming the first chunk (its index in ``chunks``)
        that breaks a rule, and which rule.
    """
    if not chunks:
        if complete:
            raise AssertionError("no chunks: expected a stream ending with its done chunk")
        return
    stream_id = chunks[0].stream_id
    first_at: dict[int, int] = {}  # seq -> index of the chunk that first carried it
    done_at: int | None = None
    for index, chunk in enumerate(chunks):
        where = f"chunk #{index} (seq {chunk.seq}, text {chunk.text!r})"
        if chunk.stream_id != stream_id:
            raise AssertionError(
                f"{where} is of stream {chunk.stream_id!r}; chunk #0 is of {stream_id!r}"
            )
        if done_at is not None:
            raise AssertionError(f"{where} comes after the done chunk #{done_at}")
        expected = start + index
        if chunk.seq in first_at:
            raise AssertionError(
                f"{where} is a duplicate of chunk #{first_at[chunk.seq]}: expected seq {expected}"
            )
        if chunk.seq != expected:
            raise AssertionError(
                f"{where}: expected seq {expected}; {_why(chunks, index, expected)}"
            )
        first_at[chunk.seq] = index
        if chunk.done:
            done_at = index
    if complete and done_at is None:
        last = chunks[-1]
        raise AssertionError(
            f"the stream has no done chunk: the last is chunk #{len(chunks) - 1} (seq {last.seq})"
        )


def _why(chunks: Sequence[StreamChunk], index: int, expected: int) -> str:
    """Why ``chunks[index]`` does not carry ``expected``: reordered, or lost."""
    for later in range(index + 1, len(chunks)):
        if chunks[later].seq == expected:
            return f"out of order: seq {expected} arrives later, as chunk #{later}"
    if chunks[index].seq < expected:
        return "out of order: it comes after a later seq"
    return f"a gap: seq {expected}..{chunks[index].seq - 1} never arrive"
