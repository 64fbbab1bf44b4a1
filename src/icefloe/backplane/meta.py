"""What every process knows of a stream it does not produce: its meta hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from icefloe.core.wire_errors import ErrorCode

__all__ = ["ABNORMAL", "CANCELLED", "DONE", "FAILED", "LIVE", "QUEUED", "RUNNING", "StreamMeta"]

#: the states of a stream in its meta hash (the labels of the stream phases)
RUNNING = "running"
DONE = "done"
# -- workers (issue 12): a start a ``--no-runs`` gateway queued for a worker --
QUEUED = "queued"
#: states of a stream that has not ended (its readers wait for more)
LIVE = frozenset({QUEUED, RUNNING})
# An abnormal end's state is its code's name (as the stream phases' labels are).
FAILED = ErrorCode.FAILED.value
CANCELLED = ErrorCode.CANCELLED.value
#: states of a stream that ended without its ``done`` chunk
ABNORMAL = frozenset({FAILED, CANCELLED})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """A stream's row in the backplane (``P s:<id>:meta``)."""

    stream_id: str
    tenant: str
    #: queued, running, done, failed or cancelled
    state: str
    last_seq: int
    #: the terminal's code (None: running or done)
    code: str | None
    message: str
    #: the process producing it
    owner: str

    @classmethod
    def from_hash(cls, stream_id: str, raw: dict[Any, Any]) -> StreamMeta | None:
        """The meta of ``stream_id`` from its HGETALL answer (None: no such hash)."""
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return cls(
                stream_id=stream_id,
                tenant=fields["tenant"],
                state=fields.get("state", RUNNING),
                last_seq=int(fields.get("last_seq", "-1")),
                code=fields.get("code") or None,
                message=fields.get("message", ""),
                owner=fields.get("owner", ""),
            )
        except (KeyError, ValueError):
            return None  # a half-written or foreign hash reads as missing

    def to_json(self, subscribers: int = 0) -> dict[str, Any]:
        """The body of ``GET /v1/streams/{id}/status`` for this stream."""
        return {
            "stream_id": self.stream_id,
            "tenant": self.tenant,
            "state": self.state,
            "last_seq": self.last_seq,
            "subscribers": subscribers,
            "code": self.code,
        }
