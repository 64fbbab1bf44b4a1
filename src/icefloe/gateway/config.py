"""The bridge config file (TOML): routes Source -> (translate) -> Sink.

Read with :func:`load_config` (``tomllib``), checked with msgspec Structs, and
every error is a :class:`ConfigError` naming the route and the field::

    [routes.chat]                       # a route named "chat"
    source = { kind = "redis-streams", url = "redis://127.0.0.1:6379/0", key = "chunks" }
    translate = { text = "data.msg" }   # or "package.module:function"
    sink = { kind = "streams" }
    dead_letter = { kind = "redis-streams", url = "redis://127.0.0.1:6379/0", key = "dead" }
    autostart = true
    batch = 256                         # records moved per sink flush, at most

An endpoint table (``source``, ``sink``, ``dead_letter``) has a ``kind``
(a name in :mod:`icefloe.gateway.kinds`) and that kind's own options, checked
by the kind's options Struct.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec

from icefloe.exceptions import IcefloeError

__all__ = [
    "MAX_BATCH",
    "MAX_ROUTES",
    "BridgeConfig",
    "ConfigError",
    "RouteConfig",
    "field_error",
    "load_config",
    "parse_config",
]

#: routes one config may hold
MAX_ROUTES: Final = 256
#: the largest ``batch`` a route may ask for
MAX_BATCH: Final = 10_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(IcefloeError):
    """The bridge config is invalid; the message names the route and field."""


class RouteConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One ``[routes.NAME]`` table."""

    source: dict[str, Any]
    sink: dict[str, Any]
    #: ``"module:function"`` or ``{output_field = "dotted.input.path"}``
    translate: str | dict[str, str] | None = None
    dead_letter: dict[str, Any] | None = None
    #: start with the gateway (else: ``POST /v1/routes/{name}/start``)
    autostart: bool = True
    #: records moved per sink flush at most (docs/bridge.md: batches)
    batch: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)] = 256


class BridgeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The whole file."""

    routes: dict[str, RouteConfig]
    #: first wait before a failed route restarts; doubles up to the cap
    restart_backoff_s: float = 0.5
    restart_backoff_cap_s: float = 30.0
    #: a store URL where sources keep their positions (Kinesis checkpoints);
    #: None: the served process's ``--store``, else memory
    store: str | None = None


def parse_config(data: dict[str, Any]) -> BridgeConfig:
    """Check a parsed TOML document.

    :raises ConfigError: naming the route and field at fault.
    """
    routes = data.get("routes")
    if not isinstance(routes, dict) or not routes:
        raise ConfigError("bridge config: needs at least one [routes.NAME] table")
    if len(routes) > MAX_ROUTES:
        raise ConfigError(f"bridge config: {len(routes)} routes, at most {MAX_ROUTES}")
    for name, table in routes.items():
        if _NAME.fullmatch(name) is None:
            raise ConfigError(
                f"route {name!r}: a name is 1-64 letters, digits, '_', '.', '-' "
                "(starting with a letter or digit)"
            )
        try:
            msgspec.convert(table, RouteConfig)
        except msgspec.ValidationError as exc:
            raise ConfigError(field_error(f"route {name!r}", exc)) from None
    try:
        config = msgspec.convert(data, BridgeConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(field_error("bridge config", exc)) from None
    if config.store is not None:
        from icefloe.store import open_store

        try:
            open_store(config.store)  # parses the URL; nothing is opened
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"bridge config: store: {exc}") from None
    if not 0 < config.restart_backoff_s <= config.restart_backoff_cap_s:
        raise ConfigError(
            "bridge config: restart_backoff_s must be > 0 and <= restart_backoff_cap_s"
        )
    from icefloe.gateway.kinds import check_endpoints

    for name, route in config.routes.items():
        check_endpoints(name, route)
    return config


def load_config(path: str | Path) -> BridgeConfig:
    """Read and check the TOML file at ``path``.

    :raises ConfigError: unreadable, not TOML, or invalid (naming route and field).
    """
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"bridge config {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bridge config {str(path)!r}: not valid TOML: {exc}") from None
    return parse_config(data)


def field_error(where: str, exc: msgspec.ValidationError, *, nested: bool = False) -> str:
    """``where``, the field a validation error is about, then what is wrong.

    ``nested``: ``where`` names a table (``route 'x': source``), and the field
    is joined to it with a dot.
    """
    # msgspec says "... - at `$.source.kind`": name the field the TOML way
    text = str(exc)
    head, sep, path = text.rpartition(" - at `$")
    path = path.rstrip("`").lstrip(".") if sep else ""
    if not sep:
        head = text
    if not path:
        return f"{where}: {head}"
    return f"{where}.{path}: {head}" if nested else f"{where}: {path}: {head}"
