"""``icefloe serve`` turns its flags into the edge's settings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import uvicorn
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from icefloe.cli import app as cli
from icefloe.transport import app as transport_app
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import AuthError


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[EdgeSettings]:
    """The settings ``serve`` builds its app with (uvicorn is not started)."""
    seen: list[EdgeSettings] = []

    def build(flow: Any, settings: EdgeSettings, **options: Any) -> object:
        seen.append(settings)
        return object()

    def run(app: object, **options: Any) -> None:
        assert options["port"] == 8765  # serve's default: the recorder stands in for it

    monkeypatch.setattr(transport_app, "create_app", build)
    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_connection_bandwidth_applies_to_http_and_websocket(served: list[EdgeSettings]) -> None:
    flags = ["--window", "10", "--max-frame", "4096", "--connection-bytes-per-s", "65536"]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.pump.bytes_per_s == 65536
    assert settings.ws.bytes_per_s == 65536
    assert (settings.ws.window, settings.ws.max_frame) == (10, 4096)


def test_no_bandwidth_cap_by_default(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow"])
    assert result.exit_code == 0, result.output
    assert served[0].pump.bytes_per_s is None
    assert served[0].ws.bytes_per_s is None


def test_a_tiny_cap_is_refused(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(
        cli.app, ["serve", "icefloe.demo:build_demo_flow", "--connection-bytes-per-s", "10"]
    )
    assert result.exit_code == 2
    assert served == []


# -- edge limits behind a proxy ------------------------------------------------------


def test_edge_limit_defaults(served: list[EdgeSettings]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow"])
    assert result.exit_code == 0, result.output
    limits = served[0].edge_limits
    assert (limits.max_connections, limits.requests_per_s, limits.request_burst) == (
        4096,
        1000.0,
        2000,
    )
    assert served[0].forwarded_allow_ips == ()


def test_edge_limit_flags(served: list[EdgeSettings]) -> None:
    flags = ["--max-connections", "5", "--requests-per-s", "2.5", "--request-burst", "7"]
    flags += ["--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8"]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    (settings,) = served
    limits = settings.edge_limits
    assert (limits.max_connections, limits.requests_per_s, limits.request_burst) == (5, 2.5, 7)
    assert settings.forwarded_allow_ips == ("127.0.0.1", "10.0.0.0/8")


@pytest.mark.parametrize("off", ["0", "off", "OFF"])
def test_zero_or_off_turns_edge_limits_off(served: list[EdgeSettings], off: str) -> None:
    flags = ["--max-connections", off, "--requests-per-s", off]
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 0, result.output
    limits = served[0].edge_limits
    assert (limits.max_connections, limits.requests_per_s) == (None, None)


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-connections", "-3"],
        ["--max-connections", "many"],
        ["--requests-per-s", "inf"],
        ["--forwarded-allow-ips", "proxy.local"],
    ],
)
def test_bad_edge_limit_flags_are_refused(served: list[EdgeSettings], flags: list[str]) -> None:
    result = CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags])
    assert result.exit_code == 2
    assert served == []


# -- the HS256 secret off the command line, and API keys beside a JWT key (issue 15, items 9-10)

SECRET = "s3cret-" + "x" * 40
API_KEY = "acme-key-0123456789abcdef"


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICEFLOE_JWT_SECRET", raising=False)


def serve(*flags: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.app, ["serve", "icefloe.demo:build_demo_flow", *flags], env=env)


def token(secret: str = SECRET) -> str:
    claims = {"sub": "alice", "tenant": "acme", "scope": "streams:read", "exp": time.time() + 300}
    return jwt.encode(claims, secret, algorithm="HS256")


def refusal(result: Result) -> str:
    """The one-line usage error of a refused ``serve`` (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.usefixtures("no_secret_env")
def test_the_secret_can_come_from_the_environment(served: list[EdgeSettings]) -> None:
    result = serve(env={"ICEFLOE_JWT_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.authenticator.authenticate(token()).tenant == "acme"
    with pytest.raises(AuthError):
        settings.authenticator.authenticate(token("another-" + "y" * 40))


@pytest.mark.usefixtures("no_secret_env")
@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_the_secret_can_come_from_a_file(
    served: list[EdgeSettings], tmp_path: Path, ending: str
) -> None:
    path = tmp_path / "jwt-secret"
    path.write_bytes((SECRET + ending).encode())
    result = serve("--jwt-secret-file", str(path))
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.authenticator.authenticate(token()).tenant == "acme"


@pytest.mark.usefixtures("no_secret_env")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_a_missing_or_empty_secret_file_is_a_usage_error(
    served: list[EdgeSettings], tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "jwt-secret"
    if content is not None:
        path.write_bytes(content)
    output = refusal(serve("--jwt-secret-file", str(path)))
    assert "--jwt-secret-file" in output
    assert message in output
    assert not served


@pytest.mark.usefixtures("no_secret_env")
def test_an_unreadable_secret_file_is_a_usage_error(
    served: list[EdgeSettings], tmp_path: Path
) -> None:
    # A directory: unreadable as a file even for root, who may read any mode.
    output = refusal(serve("--jwt-secret-file", str(tmp_path)))
    assert "--jwt-secret-file" in output
    assert f"Is a directory: {tmp_path}" in output


@pytest.mark.usefixtures("no_secret_env")
@pytest.mark.parametrize("via_env", [False, True])
def test_a_secret_and_a_secret_file_together_are_refused(
    served: list[EdgeSettings], tmp_path: Path, via_env: bool
) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET)
    flags = ["--jwt-secret-file", str(path)]
    env = {"ICEFLOE_JWT_SECRET": SECRET} if via_env else None
    if not via_env:
        flags += ["--jwt-secret", SECRET]
    assert "give one of --jwt-secret" in refusal(serve(*flags, env=env))


def test_the_help_says_the_flag_is_visible_to_other_users() -> None:
    result = CliRunner().invoke(cli.app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    assert "visible to other users" in text
    assert "ICEFLOE_JWT_SECRET" in text
    assert "--jwt-secret-file" in text


@pytest.fixture
def api_keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({API_KEY: {"tenant": "acme", "scopes": ["streams:read"]}}))
    return path


@pytest.mark.usefixtures("no_secret_env")
def test_api_keys_beside_a_jwt_secret_accept_both(
    served: list[EdgeSettings], api_keys: Path
) -> None:
    # Issue 15, item 10: this pair (with a public key too) crashed in ChainAuthenticator.
    result = serve("--api-keys", str(api_keys), "--jwt-secret", SECRET)
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert settings.authenticator.authenticate(API_KEY).tenant == "acme"
    assert settings.authenticator.authenticate(token()).subject == "alice"
    with pytest.raises(AuthError):
        settings.authenticator.authenticate("acme-key-not-a-key-0123456")


@pytest.mark.usefixtures("no_secret_env")
def test_api_keys_with_two_jwt_keys_are_one_usage_error(
    served: list[EdgeSettings], api_keys: Path, tmp_path: Path
) -> None:
    public_key = tmp_path / "key.pem"
    public_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    flags = ["--api-keys", str(api_keys), "--jwt-secret", SECRET]
    output = refusal(serve(*flags, "--jwt-public-key", str(public_key)))
    assert "give one of --jwt-secret, --jwt-public-key or --jwt-jwks-url" in output
    assert not served
