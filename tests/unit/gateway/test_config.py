"""Bridge config errors name the route and the field (issue 13, gateways)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from icefloe.gateway import ConfigError, load_config

REDIS = 'url = "redis://127.0.0.1:6379/0"'
GOOD_SOURCE = f'source = {{ kind = "redis-streams", {REDIS}, key = "in" }}'
GOOD_SINK = 'sink = { kind = "streams" }'


def route(*lines: str, name: str = "chat") -> str:
    return f"[routes.{name}]\n" + "\n".join(lines) + "\n"


CASES = [
    ("", "needs at least one [routes.NAME] table"),
    ("routes = 3", "needs at least one [routes.NAME] table"),
    (route(GOOD_SINK), "route 'chat': Object missing required field `source`"),
    (
        route(GOOD_SOURCE, GOOD_SINK, "autostrat = true"),
        "route 'chat': Object contains unknown field `autostrat`",
    ),
    (
        route(GOOD_SOURCE, 'sink = { kind = "kafka2" }'),
        "route 'chat': sink.kind: 'kafka2' is not one of",
    ),
    (
        route(GOOD_SOURCE, GOOD_SINK, 'autostart = "yes"'),
        "route 'chat': autostart: Expected `bool`, got `str`",
    ),
    (route(GOOD_SOURCE, "sink = { topic = 1 }"), "route 'chat': sink.kind: None is not one of"),
    (
        route(f'source = {{ kind = "redis-streams", {REDIS} }}', GOOD_SINK),
        "route 'chat': source: Object missing required field `key`",
    ),
    (
        route(
            f'source = {{ kind = "redis-streams", {REDIS}, key = "in", block_ms = 0 }}', GOOD_SINK
        ),
        "route 'chat': source.block_ms: Expected `int` >= 1",
    ),
    (
        route(f'source = {{ kind = "redis-streams", {REDIS}, key = "in", colour = 1 }}', GOOD_SINK),
        "route 'chat': source: Object contains unknown field `colour`",
    ),
    (
        route('source = { kind = "streams" }', GOOD_SINK),
        "route 'chat': source.kind: 'streams' cannot be a source",
    ),
    (
        route(GOOD_SOURCE, GOOD_SINK, 'dead_letter = { kind = "hub", topic = "x" }'),
        "route 'chat': dead_letter.kind: 'hub' cannot be a dead-letter",
    ),
    (
        route(GOOD_SOURCE, GOOD_SINK, 'translate = { colour = "data.c" }'),
        "route 'chat': translate: unknown output field(s) colour",
    ),
    (
        route(GOOD_SOURCE, GOOD_SINK, 'translate = "no_such_module_x:f"'),
        "route 'chat': translate: cannot import 'no_such_module_x:f'",
    ),
    (
        route(GOOD_SOURCE, GOOD_SINK, 'translate = "json"'),
        "route 'chat': translate: 'json' is not 'package.module:function'",
    ),
    (route(GOOD_SOURCE, GOOD_SINK, name='"a b"'), "route 'a b': a name is 1-64 letters"),
    (
        "restart_backoff_s = 0\n" + route(GOOD_SOURCE, GOOD_SINK),
        "restart_backoff_s must be > 0",
    ),
    ("[routes.chat\n", "not valid TOML"),
    (
        route('source = { kind = "pubsub", topic = "projects/p/topics/t" }', GOOD_SINK),
        "route 'chat': source.subscription: a pubsub source needs a subscription",
    ),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_config_errors_name_the_route_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


def test_a_valid_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        route(GOOD_SOURCE, GOOD_SINK, 'translate = { text = "data.msg" }', "autostart = false"),
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.routes["chat"].autostart is False
    assert config.routes["chat"].translate == {"text": "data.msg"}


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "nope.toml")


def test_the_bridge_command_exits_2_with_the_error(tmp_path: Path) -> None:
    from icefloe.cli.app import app as cli

    path = tmp_path / "bridge.toml"
    path.write_text(route(GOOD_SOURCE, 'sink = { kind = "nope" }'), encoding="utf-8")
    result = CliRunner().invoke(cli, ["bridge", str(path)])
    assert result.exit_code == 2
    assert "route 'chat': sink.kind: 'nope' is not one of" in result.output


def test_the_bridge_command_refuses_the_served_endpoints(tmp_path: Path) -> None:
    from icefloe.cli.app import app as cli

    path = tmp_path / "bridge.toml"
    path.write_text(route(GOOD_SOURCE, GOOD_SINK), encoding="utf-8")
    result = CliRunner().invoke(cli, ["bridge", str(path)])
    assert result.exit_code == 2
    assert "sink.kind: 'streams' needs the served edge" in result.output


def test_serve_refuses_a_bad_bridge_config(tmp_path: Path) -> None:
    from icefloe.cli.app import app as cli

    path = tmp_path / "bridge.toml"
    path.write_text(route(GOOD_SINK), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["serve", "icefloe.demo:build_demo_flow", "--bridge", str(path)]
    )
    assert result.exit_code == 2
    assert "route 'chat': Object missing required field `source`" in result.output


def test_the_example_config_loads() -> None:
    example = Path(__file__).parents[3] / "examples" / "bridge.toml"
    config = load_config(example)
    assert sorted(config.routes) == ["chat", "orders"]
