"""What the network stores share: URL checks, option splitting, errors as StoreUnavailable."""

from __future__ import annotations

import pytest

from icefloe.store.protocol import StoreUnavailable
from icefloe.store.remote import as_unavailable, check_url, split_options


def test_a_bad_port_or_scheme_is_refused_without_the_password() -> None:
    with pytest.raises(ValueError, match="port in the store URL's 'h:x'") as refused:
        check_url("redis://u:s3cret@h:x/0", "Redis", ("redis",))
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="starts postgresql:// or postgres://, not mysql://"):
        check_url("mysql://u:s3cret@h/db", "Postgres", ("postgresql", "postgres"))
    assert check_url("redis://h:6379/2", "Redis", ("redis",)).port == 6379


def test_the_store_takes_its_options_and_passes_the_rest_on() -> None:
    rest, ours = split_options(
        "postgresql://h/db?schema=s&sslmode=require&pool_size=4", {"schema", "pool_size"}
    )
    assert rest == "postgresql://h/db?sslmode=require"
    assert ours == {"schema": "s", "pool_size": "4"}
    assert split_options("redis://h/0", ("prefix",)) == ("redis://h/0", {})


def test_client_errors_become_store_unavailable_naming_the_operation() -> None:
    failing = as_unavailable("redis://h/0", "append", (OSError,))
    with (
        pytest.raises(StoreUnavailable, match="redis://h/0: append failed: gone") as raised,
        failing,
    ):
        raise ConnectionResetError("gone")
    assert isinstance(raised.value.__cause__, ConnectionResetError)
    with pytest.raises(KeyError), as_unavailable("s", "read", (OSError,)):
        raise KeyError("not a client error")
