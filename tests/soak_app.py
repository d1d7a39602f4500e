"""The soak: a small Starlette app behind keystile, served by uvicorn, and its driver.

``app`` is what ``uvicorn tests.soak_app:app --workers 2`` serves: one
authenticated route that answers with the key id and the worker's pid, and a
public ``/health``; PostgreSQL is the key store and Redis the limiter (the
config comes as JSON in ``KEYSTILE_SOAK_CONFIG``, the pepper in
``KEYSTILE_PEPPER``). ``run_soak`` mints the keys, starts the server on a
free loopback port, sends a mix of keys from many client threads for a
bounded time, samples the workers' resident memory, and stops the server.
``tests/test_soak.py`` runs it shortly; ``benchmarks/soak.py`` for a minute.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["HOT_LIMIT", "SoakResult", "build_app", "run_soak"]

ROOT = Path(__file__).resolve().parent.parent
HOT_LIMIT = 20
# What each kind of key must get back; anything else is a failure.
EXPECTED = {
    "valid": {200},
    "made-up": {401},
    "revoked": {401},
    "hot": {200, 429},
}
MIX = {"valid": 70, "made-up": 10, "revoked": 10, "hot": 10}
RECONNECT_EVERY = 100


def build_app() -> Any:
    """The Starlette app, configured from the environment (one per worker)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from keystile.asgi import KeystileMiddleware

    async def events(request: Request) -> JSONResponse:
        return JSONResponse({"key": request.state.api_key.id, "pid": os.getpid()})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid()})

    app = Starlette(routes=[Route("/api/v1/events", events), Route("/health", health)])
    app.add_middleware(KeystileMiddleware, config=json.loads(os.environ["KEYSTILE_SOAK_CONFIG"]))
    return app


def __getattr__(name: str) -> Any:
    # Built on first use, so that importing the driver needs no environment.
    if name == "app":
        return build_app()
    raise AttributeError(name)


def soak_config(store: str, limiter_storage: str) -> dict[str, Any]:
    return {
        "store": store,
        "limiter": {"storage": limiter_storage, "strategy": "moving-window"},
        # Every valid key is counted (a Redis round trip per request), none refused
        # but the hot key, whose own limit replaces this one.
        "limits": {"key": "100000000/hour", "failed_auth": None},
        "routes": [
            {"path": "/health", "public": True},
            {"path": "/api/v1/events", "methods": ["GET"]},
        ],
        "default": "deny",
    }


# -- the run ------------------------------------------------------------------------


@dataclass
class SoakResult:
    seconds: float
    clients: int
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    transport_errors: int = 0
    hot_admitted: int = 0
    pids: Counter[int] = field(default_factory=Counter)  # worker pid -> 200s it served
    rss_kb: dict[int, list[int]] = field(default_factory=dict)  # samples during the load
    server_log: str = ""

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    @property
    def unexpected(self) -> dict[tuple[str, int], int]:
        return {k: n for k, n in self.statuses.items() if k[1] not in EXPECTED[k[0]]}

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def rss_thirds(self, pid: int) -> tuple[float, float]:
        """Mean resident memory (kB) over the first and the last third of the samples."""
        samples = self.rss_kb[pid]
        third = max(1, len(samples) // 3)
        return statistics.fmean(samples[:third]), statistics.fmean(samples[-third:])

    def report(self) -> str:
        by_status = Counter(status for (_, status) in self.statuses.elements())
        lines = [
            f"clients {self.clients}, {self.seconds:.1f} s, 2 uvicorn workers",
            f"requests {self.requests}, {self.requests / self.seconds:.0f} req/s, "
            f"transport errors {self.transport_errors}",
            "statuses " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())),
            "by kind  " + ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(self.statuses.items())),
            f"latency p50 {self.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {self.quantile(0.99) * 1000:.1f} ms",
            f"5xx {self.server_errors}, unexpected {self.unexpected or 0}",
            f"hot key admitted {self.hot_admitted} of limit {HOT_LIMIT} "
            f"(over-admission {self.hot_admitted - HOT_LIMIT})",
            "200s per worker " + ", ".join(f"{p}: {n}" for p, n in sorted(self.pids.items())),
        ]
        for pid in sorted(self.rss_kb):
            start, end = self.rss_thirds(pid)
            lines.append(
                f"worker {pid} RSS first third {start / 1024:.1f} MB, "
                f"last third {end / 1024:.1f} MB ({(end - start) / 1024:+.1f} MB)"
            )
        return "\n".join(lines)


def run_soak(
    *,
    seconds: float,
    clients: int,
    store: str,
    redis_url: str,
    pepper: bytes,
    workdir: Path,
    warmup: float = 1.0,
) -> SoakResult:
    """Mint keys, serve the app with two workers, load it, and stop it."""
    import uuid

    prefix = f"kssoak-{uuid.uuid4().hex[:12]}"
    config = soak_config(store, f"{redis_url}?key_prefix={prefix}")
    try:
        keys = _mint_keys(config, pepper)
        port = _free_port()
        log_path = workdir / "uvicorn.log"
        with log_path.open("wb") as log:
            server = _start_server(config, pepper, port, log)
            try:
                workers = _wait_until_ready(server, port)
                result = SoakResult(seconds=seconds, clients=clients)
                _load(result, keys, port, workers, seconds, warmup)
            finally:
                _stop(server)
        result.server_log = log_path.read_text(errors="replace")
        return result
    finally:
        _forget_counters(redis_url, prefix)


def _mint_keys(config: dict[str, Any], pepper: bytes) -> dict[str, list[str]]:
    from keystile import Keystile

    with Keystile(config, pepper=pepper) as ks:
        valid = [str(ks.keys.create(name=f"valid {i}", org="soak").secret) for i in range(16)]
        revoked = []
        for i in range(8):
            new = ks.keys.create(name=f"revoked {i}", org="soak")
            ks.keys.revoke(new.id)
            revoked.append(str(new.secret))
        hot = ks.keys.create(name="hot", org="soak", rate_limit=f"{HOT_LIMIT}/minute")
        return {"valid": valid, "revoked": revoked, "hot": [str(hot.secret)]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(
    config: dict[str, Any], pepper: bytes, port: int, log: Any
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KEYSTILE_SOAK_CONFIG": json.dumps(config),
        "KEYSTILE_PEPPER": pepper.decode(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable, "-m", "uvicorn", "tests.soak_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _workers_of(parent: int) -> list[int]:
    """The uvicorn workers: children of the master spawned by multiprocessing."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _wait_until_ready(server: subprocess.Popen[bytes], port: int) -> list[int]:
    deadline = time.monotonic() + 30
    seen: set[int] = set()
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.returncode} before serving")
        workers = _workers_of(server.pid)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                if response.status == 200:
                    seen.add(json.loads(response.read())["pid"])
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            pass
        # Both workers must answer before the load starts: the clients keep
        # their connections, so a worker still starting (it checks the store
        # and warms the limiter first) would otherwise never get one.
        if len(workers) == 2 and len(seen) == 2:
            return workers
        time.sleep(0.1 if len(seen) < 1 else 0.01)
    raise RuntimeError(f"uvicorn did not have two workers answering within 30 s (saw {seen})")


def _made_up_key() -> str:
    from keystile.keys import KeyFormat

    return KeyFormat("sk_").generate()  # well formed, so each one costs a store lookup


def _load(
    result: SoakResult,
    keys: dict[str, list[str]],
    port: int,
    workers: list[int],
    seconds: float,
    warmup: float,
) -> None:
    lock = threading.Lock()
    started = time.monotonic()
    sampling_from = started + warmup
    stop_at = started + seconds
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        statuses: Counter[tuple[str, int]] = Counter()
        pids: Counter[int] = Counter()
        latencies: list[float] = []
        errors = hot = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        sent = 0
        try:
            while time.monotonic() < stop_at:
                sent += 1
                if sent % RECONNECT_EVERY == 0:
                    # New connections now and then: the kernel spreads them
                    # over both workers, and connection churn is soaked too.
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                kind = rng.choices(kinds, weights)[0]
                key = _made_up_key() if kind == "made-up" else rng.choice(keys[kind])
                began = time.perf_counter()
                try:
                    conn.request(
                        "GET", "/api/v1/events", headers={"Authorization": f"Bearer {key}"}
                    )
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException):
                    errors += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[(kind, response.status)] += 1
                if response.status == 200:
                    pids[json.loads(body)["pid"]] += 1
                    hot += kind == "hot"
        finally:
            conn.close()
        with lock:
            result.statuses.update(statuses)
            result.pids.update(pids)
            result.latencies.extend(latencies)
            result.transport_errors += errors
            result.hot_admitted += hot

    threads = [
        threading.Thread(target=client, args=(i,), daemon=True) for i in range(result.clients)
    ]
    for thread in threads:
        thread.start()
    samples: dict[int, list[int]] = {pid: [] for pid in workers}
    while time.monotonic() < stop_at:
        if time.monotonic() >= sampling_from:
            for pid in workers:
                rss = _rss_kb(pid)
                if rss is not None:
                    samples[pid].append(rss)
        time.sleep(0.25)
    for thread in threads:
        thread.join(timeout=30)
    result.rss_kb = samples
    result.seconds = time.monotonic() - started


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)  # graceful: workers run lifespan shutdown
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _forget_counters(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
