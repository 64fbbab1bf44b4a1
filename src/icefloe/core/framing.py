"""Length-prefixed, checksummed binary frames, and a sans-I/O reader for them.

Frame layout (all integers big-endian)::

    offset  size  field
    0       4     length   payload length in bytes (unsigned)
    4       1     format   how the payload is encoded: a codec.Format value
    5       1     flags    reserved; must be 0 (a set bit is a DecodeError)
    6       n     payload  ``length`` bytes
    6+n     4     crc      CRC32C (Castagnoli) of format + flags + payload

There is no magic number: the stream starts with a frame and frames follow
back to back. The header is checked before the payload is buffered, so a
declared length over the reader's ``max_frame`` fails at once and memory stays
bounded by ``max_frame`` plus whatever one ``feed_data`` call brings.

:class:`FrameReader` follows the websockets sans-I/O pattern: the caller
feeds bytes in (:meth:`~FrameReader.feed_data`, :meth:`~FrameReader.feed_eof`)
and drains parsed frames (:meth:`~FrameReader.events_received`); a generator
coroutine does the parsing and suspends whenever it runs out of bytes.

A frame that arrives whole (a stored record: :mod:`icefloe.store.records`
writes every chunk, start message, checkpoint and session as one frame) is
decoded by :func:`decode_frame`. It and :class:`FrameReader` share one set of
checks (header, length, CRC32C), so both reject exactly the same bytes and a
torn or corrupted record is detected, never replayed.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Generator
from typing import NamedTuple

import google_crc32c

from icefloe.core.codec import Format
from icefloe.exceptions import ChecksumMismatch, DecodeError, FrameTooLarge, InvalidState

__all__ = [
    "Frame",
    "FrameReader",
    "FrameReaderStatistics",
    "ReaderState",
    "decode_frame",
    "encode_frame",
]

_HEADER = struct.Struct(">IBB")
_CRC = struct.Struct(">I")
_OVERHEAD = _HEADER.size + _CRC.size
_MAX_LENGTH = 2**32 - 1
#: default for :class:`FrameReader` ``max_frame``: 1 MiB of payload
DEFAULT_MAX_FRAME = 1_048_576
_FORMATS = {int(f): f for f in Format}
# The checksum covers the format and flags bytes first; flags are always 0.
_CRC_SEEDS = {f: google_crc32c.value(bytes((f, 0))) for f in Format}
# Compact the read buffer once this many consumed bytes sit at its front
# (and they outnumber the unread ones, which keeps the copying linear).
_COMPACT_AT = 65_536


def encode_frame(payload: bytes, fmt: Format) -> bytes:
    """Wrap ``payload`` in a frame tagged with format ``fmt``.

    :raises ValueError: if ``fmt`` is not a :class:`Format` or the payload
        is 4 GiB or more.
    """
    seed = _CRC_SEEDS.get(fmt)
    if seed is None:
        raise ValueError(f"unknown format {fmt!r}")
    length = len(payload)
    if length > _MAX_LENGTH:
        raise ValueError(f"payload of {length} bytes does not fit a frame")
    if type(payload) is not bytes:
        payload = bytes(payload)
    crc = google_crc32c.extend(seed, payload)
    return _HEADER.pack(length, fmt, 0) + payload + _CRC.pack(crc)


class Frame(NamedTuple):
    """One decoded frame."""

    #: how the payload is encoded
    fmt: Format
    #: the payload bytes, checksum verified
    payload: bytes


def decode_frame(data: bytes, max_frame: int = _MAX_LENGTH) -> Frame:
    """Decode ``data``, which must be exactly one whole frame.

    :raises FrameTooLarge: if the frame declares a payload over ``max_frame``.
    :raises ChecksumMismatch: if its CRC32C does not match.
    :raises DecodeError: if ``data`` is shorter or longer than the frame it
        declares, or its header carries an unknown format or flag.
    """
    size = len(data)
    if size < _OVERHEAD:
        raise DecodeError(f"a frame needs at least {_OVERHEAD} bytes, got {size}")
    length, fmt_byte, flags = _HEADER.unpack_from(data, 0)
    fmt = _check_header(length, fmt_byte, flags, max_frame)
    if length != size - _OVERHEAD:
        raise DecodeError(
            f"frame declares a payload of {length} bytes but carries {size - _OVERHEAD}"
        )
    payload = bytes(data[_HEADER.size : _HEADER.size + length])
    (expected,) = _CRC.unpack_from(data, _HEADER.size + length)
    _check_crc(fmt, payload, expected)
    return Frame(fmt, payload)


def _check_header(length: int, fmt_byte: int, flags: int, max_frame: int) -> Format:
    if length > max_frame:
        raise FrameTooLarge(length, max_frame)
    fmt = _FORMATS.get(fmt_byte)
    if fmt is None:
        raise DecodeError(f"frame has unknown format {fmt_byte}")
    if flags:
        raise DecodeError(f"frame has unknown flags {flags:#04x}")
    return fmt


def _check_crc(fmt: Format, payload: bytes, expected: int) -> None:
    actual = google_crc32c.extend(_CRC_SEEDS[fmt], payload)
    if actual != expected:
        raise ChecksumMismatch(
            f"frame checksum mismatch: received {expected:#010x}, computed {actual:#010x}"
        )


class ReaderState(enum.IntEnum):
    """Where a :class:`FrameReader` is in its life."""

    #: accepting bytes
    OPEN = 0
    #: EOF arrived on a frame boundary; every frame was parsed
    CLOSED = 1
    #: the input was invalid; the reader accepts nothing more
    FAILED = 2


class FrameReaderStatistics(NamedTuple):
    """A snapshot of a :class:`FrameReader`."""

    #: the reader's state
    state: ReaderState
    #: bytes fed but not yet parsed into a frame
    buffered: int
    #: the largest payload accepted, in bytes
    max_frame: int
    #: frames parsed since construction
    frames_received: int
    #: bytes fed since construction
    bytes_received: int
    #: frames parsed but not yet drained by ``events_received``
    frames_pending: int


class FrameReader:
    """Incremental frame parser: bytes in, :class:`Frame` events out.

    Bytes may be fed in pieces of any size, down to one at a time.

    :param max_frame: the largest payload accepted, in bytes; default 1 MiB
        (1_048_576). A frame declaring more raises
        :exc:`~icefloe.exceptions.FrameTooLarge` as soon as its header is
        read, before its payload is buffered.
    :raises ValueError: if ``max_frame`` is not between 0 and 2**32 - 1.
    """

    __slots__ = (
        "_buf",
        "_bytes_received",
        "_eof",
        "_events",
        "_exc",
        "_frames_received",
        "_max_frame",
        "_offset",
        "_parser",
        "_state",
    )

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 <= max_frame <= _MAX_LENGTH:
            raise ValueError(f"max_frame must be between 0 and 2**32 - 1, got {max_frame}")
        self._max_frame = max_frame
        self._state = ReaderState.OPEN
        # Unparsed input is _buf[_offset:]; advancing _offset instead of
        # deleting from the front keeps each byte copied O(1) times.
        self._buf = bytearray()
        self._offset = 0
        self._eof = False
        self._events: list[Frame] = []
        self._exc: DecodeError | None = None
        self._frames_received = 0
        self._bytes_received = 0
        self._parser = self._parse()
        next(self._parser)

    def __repr__(self) -> str:
        return f"FrameReader(state={self._state.name}, buffered={self._buffered()})"

    @property
    def state(self) -> ReaderState:
        """The reader's state."""
        return self._state

    @property
    def exception(self) -> DecodeError | None:
        """The error that failed the reader, if it is :attr:`ReaderState.FAILED`."""
        return self._exc

    def feed_data(self, data: bytes) -> None:
        """Add received bytes and parse every frame they complete.

        :raises InvalidState: if the reader is closed or failed.
        :raises FrameTooLarge: if a frame declares a payload over ``max_frame``.
        :raises ChecksumMismatch: if a frame's CRC32C does not match.
        :raises DecodeError: if a header carries an unknown format or flag.
        """
        self._check_open("feed data to")
        if not data:
            return
        self._bytes_received += len(data)
        self._buf += data
        self._run_parser()

    def feed_eof(self) -> None:
        """Signal the end of the input.

        :raises InvalidState: if the reader is closed or failed.
        :raises DecodeError: if the input ends inside a frame.
        """
        self._check_open("feed EOF to")
        self._eof = True
        self._run_parser()

    def events_received(self) -> list[Frame]:
        """Return the frames parsed since the last call, oldest first.

        Each frame is returned once. Frames parsed before a failure are still
        returned.
        """
        events, self._events = self._events, []
        return events

    def statistics(self) -> FrameReaderStatistics:
        """A snapshot of the reader's buffer and counters."""
        return FrameReaderStatistics(
            state=self._state,
            buffered=self._buffered(),
            max_frame=self._max_frame,
            frames_received=self._frames_received,
            bytes_received=self._bytes_received,
            frames_pending=len(self._events),
        )

    def _check_open(self, action: str) -> None:
        if self._state is not ReaderState.OPEN:
            raise InvalidState(
                f"cannot {action} a frame reader in state {self._state.name}"
            ) from self._exc

    def _buffered(self) -> int:
        return len(self._buf) - self._offset

    def _run_parser(self) -> None:
        try:
            next(self._parser)
        except StopIteration:
            self._state = ReaderState.CLOSED
        except DecodeError as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: DecodeError) -> None:
        self._state = ReaderState.FAILED
        self._exc = exc
        # Release the buffered input; nothing will ever read it.
        self._buf = bytearray()
        self._offset = 0

    # -- parser coroutines: each ``yield`` waits for more input -------------

    def _parse(self) -> Generator[None, None, None]:
        yield  # primed by __init__, so the first feed starts parsing
        while True:
            if (yield from self._at_eof()):
                return
            yield from self._wait_for(_HEADER.size)
            length, fmt_byte, flags = _HEADER.unpack_from(self._buf, self._offset)
            fmt = _check_header(length, fmt_byte, flags, self._max_frame)
            self._advance(_HEADER.size)
            yield from self._wait_for(length)
            payload = self._take(length)
            yield from self._wait_for(_CRC.size)
            (expected,) = _CRC.unpack_from(self._buf, self._offset)
            self._advance(_CRC.size)
            _check_crc(fmt, payload, expected)
            self._events.append(Frame(fmt, payload))
            self._frames_received += 1

    def _at_eof(self) -> Generator[None, None, bool]:
        # Waits until there is a byte to read or the input ended.
        while self._offset == len(self._buf):
            if self._eof:
                return True
            yield
        return False

    def _wait_for(self, n: int) -> Generator[None, None, None]:
        # Waits until n unread bytes are buffered.
        while len(self._buf) - self._offset < n:
            if self._eof:
                raise DecodeError(
                    f"input ended inside a frame: needed {n} more bytes, "
                    f"got {len(self._buf) - self._offset}"
                )
            yield

    def _take(self, n: int) -> bytes:
        start = self._offset
        # One copy: slicing the bytearray first would make two.
        with memoryview(self._buf) as view:
            data = view[start : start + n].tobytes()
        self._advance(n)
        return data

    def _advance(self, n: int) -> None:
        end = self._offset + n
        size = len(self._buf)
        if end == size:
            self._buf.clear()
            self._offset = 0
        elif end >= _COMPACT_AT and end > size - end:
            del self._buf[:end]
            self._offset = 0
        else:
            self._offset = end
