"""100,000 seeded fuzz inputs through the frame codec and the record decoders.

Only documented errors escape (DecodeError for frames, CorruptRecord for
records), ``decode_frame`` and ``FrameReader`` agree, and nothing hangs (the
pytest timeout bounds the run; it takes about two seconds). ``make fuzz``
runs the long version with a memory check (tests/fuzzkit.py).
"""

from __future__ import annotations

import pytest

from fuzzkit import fuzz, seeds
from icefloe.store import records


@pytest.mark.timeout(120)
def test_a_hundred_thousand_seeded_inputs_raise_only_documented_errors() -> None:
    report = fuzz(seed=20261207, iterations=100_000)
    assert report.inputs == 100_000
    # The mix reached every layer: refused frames, refused bodies, accepted records.
    assert report.errors.get("ChecksumMismatch", 0) > 1000
    assert report.errors.get("FrameTooLarge", 0) > 1000
    assert report.errors.get("CorruptRecord", 0) > 100  # version/kind checks, re-sealed frames
    assert report.records_accepted > 100
    assert report.reader_runs > 10_000


def test_the_seeds_are_valid_records_of_their_kind() -> None:
    decoders = {
        records.RecordKind.CHUNK: records.decode_chunk,
        records.RecordKind.MESSAGE: records.decode_message,
        records.RecordKind.STATE: records.decode_state,
        records.RecordKind.SESSION: records.decode_session,
        records.RecordKind.SEGMENT: records.decode_segment,
    }
    for kind, record in seeds():
        decoders[records.RecordKind(kind)](record)
