"""WebSocket ops on a stream another gateway produces (issue 12, the backplane).

With ``--backplane``, a ``subscribe`` (or a session resume) naming a stream
this gateway's flow does not know reads it from the backplane through a
:class:`~icefloe.backplane.reader.RemoteReader`, which the connection's pump
follows as it follows an in-process stream: credit, ``pause``, acks and the
terminal work the same, and a reader held back by credit holds the remote
producer back through the backplane's reported positions. What differs is
listed in docs/websocket.md ("Streams of another gateway"): the stream's
priority in the connection's fair queue is 0 (its start's priority is not
shared), and ``input`` reaches only the producing gateway.

A ``cancel`` of such a stream goes to its producer through the backplane's
control log. Another tenant's stream reads as missing (``not_found``), as on
the producing gateway.
"""

from __future__ import annotations

from icefloe.backplane.reader import RemoteReader
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import EndOfStream, StreamError
from icefloe.runtime.flow import Flow
from icefloe.transport.auth import Principal
from icefloe.transport.backplane_edge import EdgeBackplane
from icefloe.transport.errors import HttpError

__all__ = ["REMOTE_PRIORITY", "cancel_remote", "open_remote"]

#: the priority of a remote stream in a connection's fair queue
REMOTE_PRIORITY = 0


def _local(flow: Flow, stream_id: str) -> bool:
    return flow.brief(stream_id) is not None or flow.finished(stream_id) is not None


async def open_remote(
    backplane: EdgeBackplane | None,
    flow: Flow,
    principal: Principal,
    stream_id: str,
    from_seq: int | None,
) -> RemoteReader | None:
    """A reader of ``stream_id`` if another gateway produces it; None: answer
    as without a backplane (a local stream, or no such stream the principal
    may see).

    :raises EndOfStream: the stream is done and ``from_seq`` is past its end.
    :raises HttpError: ``bad_request`` (``from_seq`` past the stream's next
        seq), ``history_gone``, ``unavailable``.
    """
    if backplane is None or _local(flow, stream_id):
        return None
    try:
        return await backplane.follow_stream(principal, stream_id, from_seq)
    except EndOfStream:
        raise
    except ValueError as exc:
        raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
    except StreamError as exc:
        raise HttpError(exc.code, exc.message) from None


async def cancel_remote(
    backplane: EdgeBackplane | None, flow: Flow, principal: Principal, stream_id: str
) -> bool:
    """Ask the producing gateway to cancel ``stream_id``; False: not a remote
    stream the principal may see (answer as without a backplane)."""
    if backplane is None or _local(flow, stream_id):
        return False
    return await backplane.cancel(principal, stream_id) is not None
