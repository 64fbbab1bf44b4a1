"""Segment rows: any run of chunks packs into rows and reads back from any seq."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from icefloe.store import StoredChunk
from icefloe.store.sqlite_schema import SEGMENT_BYTES, SEGMENT_CHUNKS, segment_rows, split_segment


@given(
    first=st.integers(0, 2**40),
    records=st.lists(st.binary(max_size=40), max_size=SEGMENT_CHUNKS * 2 + 3),
    offset=st.integers(0, SEGMENT_CHUNKS * 3),
    limit=st.integers(0, SEGMENT_CHUNKS * 3),
)
def test_rows_split_back_into_the_chunks_from_any_seq(
    first: int, records: list[bytes], offset: int, limit: int
) -> None:
    chunks = [StoredChunk(first + i, r) for i, r in enumerate(records)]
    rows = segment_rows(chunks)
    assert all(0 < last - start + 1 <= SEGMENT_CHUNKS for last, start, _, _ in rows)
    got: list[StoredChunk] = []
    for _last, start, sizes, blob in rows:
        split_segment(got, start, sizes, blob, first + offset, limit)
    assert got == chunks[offset : offset + limit]


def test_a_row_closes_once_its_bytes_reach_the_limit() -> None:
    big = b"x" * (SEGMENT_BYTES // 2)
    rows = segment_rows([StoredChunk(i, big) for i in range(5)])
    assert [(start, last) for last, start, _, _ in rows] == [(0, 1), (2, 3), (4, 4)]


def test_rows_hold_segment_chunks_each_until_the_bytes_limit_cuts_one() -> None:
    small = [StoredChunk(i, b"r") for i in range(SEGMENT_CHUNKS * 2 + 10)]
    rows = segment_rows(small)
    n = SEGMENT_CHUNKS
    assert [(start, last) for last, start, _, _ in rows] == [
        (0, n - 1),
        (n, 2 * n - 1),
        (2 * n, 2 * n + 9),
    ]
    # A big record in the second row's span cuts it by bytes instead.
    big = b"x" * SEGMENT_BYTES
    mixed = [StoredChunk(i, big if i == n + 3 else b"r") for i in range(2 * n)]
    rows = segment_rows(mixed)
    assert [(start, last) for last, start, _, _ in rows] == [
        (0, n - 1),
        (n, n + 3),
        (n + 4, 2 * n - 1),
    ]
