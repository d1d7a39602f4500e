"""A Redis Cluster of three nodes of the tests' own, started from ``redis-server``.

The nodes listen on free loopback ports, are joined with ``redis-cli
--cluster create`` and are shut down when the session ends. Tests get the
storage URI (``redis+cluster://127.0.0.1:p1,...``) from the ``cluster``
fixture, which ``conftest.py`` makes visible to every test module.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = ["cluster", "node_answers", "nodes_of"]


def _free_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (so P <= 55535)."""
    for _ in range(200):
        port = random.randrange(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed for the Redis Cluster tests")
    workdir: Path = tmp_path_factory.mktemp("cluster")
    ports = [_free_port() for _ in range(3)]
    for port in ports:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(workdir),
                "--logfile",
                f"redis-{port}.log",
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
    try:
        for port in ports:
            _wait_for(lambda p=port: node_answers(p, "PING") is True)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in ports:
            _wait_for(lambda p=port: b"cluster_state:ok" in node_answers(p, "CLUSTER", "INFO"))
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        for port in ports:
            subprocess.run(
                ["redis-cli", "-p", str(port), "shutdown", "nosave"],
                capture_output=True,
                timeout=10,
            )


def node_answers(port: int, *command: str) -> Any:
    import redis

    client: Any = redis.Redis(port=port)
    with client:
        return client.execute_command(*command)


def _wait_for(ready: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not come up")
        time.sleep(0.05)


def nodes_of(storage: str) -> list[int]:
    """The ports of a ``redis+cluster://`` storage URI's nodes."""
    netloc = urlsplit(storage).netloc
    return [int(node.rpartition(":")[2]) for node in netloc.split(",")]
