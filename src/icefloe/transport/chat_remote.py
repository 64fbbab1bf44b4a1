"""``/v1/chat`` across gateways (issue 12, the backplane).

A chat's active reply is found by (tenant, chat id) in the gateway's own
:class:`~icefloe.transport.routes_chat.ChatTable`; with a backplane every
post also records it in Redis (``P chat:<n>:<tenant>:<chat id>``, kept as
long as a stream's keys after its end), so that a page reloaded through the
load balancer resumes the reply on another gateway (read from seq 0 through
the backplane: the whole reply must still be within ``--history``, as
locally), a stop on another gateway cancels it, and a new message posted on
another gateway supersedes it.
"""

from __future__ import annotations

from icefloe.backplane.reader import RemoteReader
from icefloe.exceptions import EndOfStream, StreamError
from icefloe.transport.auth import Principal
from icefloe.transport.backplane_edge import EdgeBackplane
from icefloe.transport.errors import HttpError

__all__ = ["remote_reply", "remote_stop", "remote_supersede"]


async def remote_supersede(
    backplane: EdgeBackplane, principal: Principal, tenant: str, chat_id: str, stream_id: str
) -> None:
    """A post started ``stream_id`` here: cancel the chat's reply running on
    another gateway, and record the new one."""
    previous = await backplane.chat_reply(principal, tenant, chat_id)
    if previous is not None and previous != stream_id:
        await backplane.cancel(principal, previous)
    await backplane.chat_started(tenant, chat_id, stream_id)


async def remote_reply(
    backplane: EdgeBackplane, principal: Principal, tenant: str, chat_id: str
) -> RemoteReader | None:
    """A reader of the chat's reply from seq 0 if another gateway runs it (None: none).

    :raises HttpError: the reply can no longer be replayed (``history_gone``).
    """
    sid = await backplane.chat_reply(principal, tenant, chat_id)
    if sid is None:
        return None
    try:
        return await backplane.follow_stream(principal, sid, 0)
    except (EndOfStream, ValueError):
        return None  # it ended since the lookup
    except StreamError as exc:
        raise HttpError(exc.code, f"the reply can no longer be replayed: {exc.message}") from None


async def remote_stop(
    backplane: EdgeBackplane, principal: Principal, tenant: str, chat_id: str
) -> str | None:
    """Cancel the chat's reply running on another gateway; its stream id (None: none)."""
    sid = await backplane.chat_reply(principal, tenant, chat_id)
    await backplane.chat_stopped(tenant, chat_id)
    if sid is not None:
        await backplane.cancel(principal, sid)
    return sid
