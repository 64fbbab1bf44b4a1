"""Endpoint kinds: the registry that maps a config's ``kind`` to a connector.

A :class:`Kind` names the Struct its options are checked with and the
factories that open it as a route's source, sink, or dead-letter sink. Each
factory returns an async context manager, so a route closes what it opened
(clients, subscriptions) when it stops or fails. Client libraries are
imported inside the factories only: a config that never names Kinesis never
imports aiobotocore.

The built-in kinds are registered by :mod:`icefloe.gateway.brokers`
(``redis-streams``, ``kinesis``), :mod:`icefloe.gateway.platforms` (``nats``,
``rabbitmq``, ``pubsub``) and :mod:`icefloe.gateway.endpoints`
(``hub``, ``streams``: the served edge's hub and streams). A platform
added later (Kafka) registers itself with :func:`register_kind`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgspec

from icefloe.connectors.protocol import Inbound, Sink
from icefloe.connectors.record import ChunkRecord
from icefloe.gateway.config import ConfigError, RouteConfig, field_error

if TYPE_CHECKING:
    from icefloe.hub import Hub
    from icefloe.runtime.flow import Flow
    from icefloe.store.protocol import Store

__all__ = [
    "Kind",
    "Served",
    "SinkEnd",
    "SourceEnd",
    "Taken",
    "check_endpoints",
    "endpoint_options",
    "kind_names",
    "lookup",
    "positions_store",
    "register_kind",
]


class Served(NamedTuple):
    """What the process serves, for the built-in kinds (``hub``, ``streams``),
    and the store where sources keep their positions (Kinesis checkpoints).

    ``icefloe bridge`` serves neither flow nor hub (None): its config may not
    name them. ``store`` None: positions are kept in memory.
    """

    flow: Flow | None
    hub: Hub | None
    store: Store | None = None


async def positions_store(served: Served) -> Store | None:
    """The store a source keeps its positions in, open (None: keep them in memory).

    The served flow's store is opened by the flow: this waits until it is.

    :raises StoreUnavailable: the flow's store could not be opened.
    """
    store, flow = served.store, served.flow
    if store is not None and flow is not None and store is flow.store:
        await flow.store_ready()
    return store


class Taken(NamedTuple):
    """One record a source end handed over."""

    #: the record's view (see :mod:`icefloe.gateway.translate`)
    view: dict[str, Any]
    #: what to ack, and what a dead-letter sink gets
    inbound: Inbound
    #: why the record cannot be read (a poison record; its view is empty)
    poison: str = ""


class SourceEnd(Protocol):
    """A route's source: records as views, acked after the sink took them."""

    name: str

    def __aiter__(self) -> AsyncIterator[Taken]: ...

    async def ack(self, taken: Taken) -> None: ...

    async def lag(self) -> int | None:
        """Records waiting at the source (None: it does not know)."""
        ...


class SinkEnd(Protocol):
    """A route's sink: ``send`` hands a chunk over, ``flush`` returns once every
    chunk sent so far is confirmed (the route acks its records only then)."""

    name: str

    async def send(self, got: ChunkRecord) -> None:
        """Take ``got`` (it may wait for room; it need not be confirmed yet).

        :raises EncodeError: the chunk cannot be carried (the route dead-letters it).
        """
        ...

    async def flush(self) -> None:
        """Return once everything sent is confirmed; raise when some was not."""
        ...


SourceFactory = Callable[[Any, Served], AbstractAsyncContextManager[SourceEnd]]
SinkFactory = Callable[[Any, Served], AbstractAsyncContextManager[SinkEnd]]
RawSinkFactory = Callable[[Any], AbstractAsyncContextManager[Sink]]


class Kind(NamedTuple):
    """One endpoint kind: its options Struct and what it can be."""

    options: type[msgspec.Struct]
    source: SourceFactory | None = None
    sink: SinkFactory | None = None
    #: a connector :class:`~icefloe.connectors.protocol.Sink`, for dead letters
    raw_sink: RawSinkFactory | None = None
    #: checks the options for a role (``source``, ``sink``, ``dead_letter``);
    #: raises ValueError naming the field
    check: Callable[[Any, str], None] | None = None


_KINDS: dict[str, Kind] = {}


def register_kind(name: str, kind: Kind) -> None:
    """Make ``kind = "<name>"`` usable in bridge configs (replaces an earlier one)."""
    _KINDS[name] = kind


def _builtins() -> None:
    # registering imports no client library: factories import theirs when called
    import icefloe.gateway.brokers
    import icefloe.gateway.endpoints
    import icefloe.gateway.platforms  # noqa: F401


def kind_names() -> list[str]:
    """The registered kinds, sorted."""
    _builtins()
    return sorted(_KINDS)


def lookup(name: object, role: str, where: str) -> Kind:
    """The kind ``name`` for ``role`` (source, sink, dead_letter).

    :raises ConfigError: unknown, or it cannot play that role.
    """
    _builtins()
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(f"{where}.kind: {name!r} is not one of {', '.join(kind_names())}")
    able = {"source": kind.source, "sink": kind.sink, "dead_letter": kind.raw_sink}[role]
    if able is None:
        raise ConfigError(f"{where}.kind: {name!r} cannot be a {role.replace('_', '-')}")
    return kind


def endpoint_options(table: dict[str, Any], role: str, where: str) -> tuple[Kind, Any]:
    """The kind of an endpoint table and its checked options."""
    kind = lookup(table.get("kind"), role, where)
    rest = {k: v for k, v in table.items() if k != "kind"}
    try:
        opts = msgspec.convert(rest, kind.options)
    except msgspec.ValidationError as exc:
        raise ConfigError(field_error(where, exc, nested=True)) from None
    if kind.check is not None:
        try:
            kind.check(opts, role)
        except ValueError as exc:
            raise ConfigError(f"{where}.{exc}") from None
    return kind, opts


def check_endpoints(name: str, route: RouteConfig) -> None:
    """Check a route's endpoints and translate step.

    :raises ConfigError: naming the route and field.
    """
    endpoint_options(route.source, "source", f"route {name!r}: source")
    endpoint_options(route.sink, "sink", f"route {name!r}: sink")
    if route.dead_letter is not None:
        endpoint_options(route.dead_letter, "dead_letter", f"route {name!r}: dead_letter")
    from icefloe.gateway.translate import field_mapping, import_translator

    try:
        if isinstance(route.translate, str):
            import_translator(route.translate)
        elif route.translate is not None:
            field_mapping(route.translate)
    except ValueError as exc:
        raise ConfigError(f"route {name!r}: translate: {exc}") from None
