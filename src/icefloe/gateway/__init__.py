"""The gateway layer: routes Source -> (translate) -> Sink, configured by a TOML file.

``icefloe bridge CONFIG.toml`` runs the routes alone; ``icefloe serve
--bridge CONFIG.toml`` runs them in the served process, where the built-in
``hub`` and ``streams`` endpoints reach the edge's clients and
``/v1/routes`` manages them (docs/bridge.md).
"""

from __future__ import annotations

from icefloe.gateway.config import BridgeConfig, ConfigError, RouteConfig, load_config, parse_config
from icefloe.gateway.gateway import Gateway
from icefloe.gateway.kinds import Kind, Served, Taken, kind_names, register_kind
from icefloe.gateway.route import Route, RouteState, RouteStatus

__all__ = [
    "BridgeConfig",
    "ConfigError",
    "Gateway",
    "Kind",
    "Route",
    "RouteConfig",
    "RouteState",
    "RouteStatus",
    "Served",
    "Taken",
    "kind_names",
    "load_config",
    "parse_config",
    "register_kind",
]
