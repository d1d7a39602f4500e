"""Revocation across real processes: within 1 s over Redis, within the TTL without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import keystile
from keystile import Keystile
from tests.conftest import PEPPER, REDIS_URL, require_service

# A second process: says "started" once it is up (warm, and subscribed with
# Redis), waits for "go", verifies the key once (now cached) and says "ready"
# with the monotonic times around that first lookup; then asks every 10 ms
# and reports when the first refusal was answered (the cache was asked no
# later) and when the last request served was asked (the cache no sooner).
# time.monotonic() is the system-wide CLOCK_MONOTONIC on Linux, the clock the
# verified-key cache counts its TTL on: both processes read the same one.
WATCHER = textwrap.dedent(
    """
    import json, sys, time
    from keystile import Keystile
    from keystile.sansio import RequestView

    config = json.loads(sys.argv[1])
    ks = Keystile(config, pepper=sys.argv[2].encode())
    view = RequestView("GET", b"/x", headers={"authorization": ["Bearer " + sys.argv[3]]})
    if ks.invalidator is not None:
        ks.invalidator.start()  # as the first request would
        assert ks.invalidator.subscribed.wait(10)
    # Warm up (store connection, imports, the digest) and forget the answer,
    # so that the timed lookup below is as short as a cache miss gets.
    assert ks.decide(view).principal is not None
    ks.cache.clear()
    print("started", flush=True)
    assert sys.stdin.readline().strip() == "go"
    before = time.monotonic()
    assert ks.decide(view).principal is not None
    print("ready", before, time.monotonic(), flush=True)
    served = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        asked = time.monotonic()
        decision = ks.decide(view)
        if getattr(decision, "status", 200) == 401:
            print("refused", time.monotonic(), served, flush=True)
            break
        served = asked
        time.sleep(0.01)
    ks.close()
    """
)


@dataclass
class Watched:
    """What one watcher saw, on the shared monotonic clock."""

    cached_from: float  # the first lookup began: the entry lives at least the TTL from here
    cached_by: float  # it ended: the entry lives at most the TTL from here
    refused: float  # the first refusal was answered
    served: float | None  # the last request served was asked (None: none after "ready")


def _watch(config: dict[str, Any], secret: str) -> subprocess.Popen[str]:
    # The keystile this test imports (the checkout's src, or the compiled
    # build's site-packages), not always the checkout's.
    env = {**os.environ, "PYTHONPATH": str(Path(keystile.__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", WATCHER, json.dumps(config), PEPPER.decode(), secret],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _words(proc: subprocess.Popen[str], first: str) -> list[str]:
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    assert words and words[0] == first, (words, proc.stderr.read() if proc.stderr else "")
    return words[1:]


def _revoke_and_watch(
    config: dict[str, Any], action: Any, secret: str
) -> tuple[float, float, list[Watched]]:
    """Two watchers cache the key together, then ``action`` runs.

    Returns when the action began and ended, and what each watcher saw.
    """
    watchers = [_watch(config, secret) for _ in range(2)]
    try:
        for proc in watchers:
            _words(proc, "started")
        for proc in watchers:  # both cache the key now, whichever started first
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        cached = [[float(w) for w in _words(proc, "ready")] for proc in watchers]
        began = time.monotonic()
        action()
        done = time.monotonic()
        seen = []
        for proc, (cached_from, cached_by) in zip(watchers, cached, strict=True):
            refused, served = _words(proc, "refused")
            last = None if served == "None" else float(served)
            seen.append(Watched(cached_from, cached_by, float(refused), last))
        return began, done, seen
    finally:
        for proc in watchers:
            proc.wait(30)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def _config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "store": f"sqlite:///{tmp_path / 'keys.db'}",
        "default": "authenticated",
        "limits": {"key": None},
        **extra,
    }


@pytest.mark.redis
@pytest.mark.parametrize("how", ["revoke", "rotate", "revoke_user"])
def test_revocation_reaches_other_processes_within_a_second_over_redis(
    tmp_path: Path, how: str
) -> None:
    require_service("redis")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = _config(
        tmp_path,
        cache={"ttl": "60s"},  # far longer than the promise: only the message can do it
        limiter={"storage": f"{REDIS_URL}?key_prefix={prefix}"},
    )
    ks = Keystile(config, pepper=PEPPER)
    new = ks.keys.create(name="k", org="acme", user="u1")
    actions = {
        "revoke": lambda: ks.keys.revoke(new.id),
        "rotate": lambda: ks.keys.rotate(new.id),
        "revoke_user": lambda: ks.keys.revoke_user(org="acme", user="u1"),
    }
    try:
        began, _, seen = _revoke_and_watch(config, actions[how], new.secret)
    finally:
        ks.close()
    assert max(w.refused for w in seen) - began < 1.0


def test_without_redis_other_processes_refuse_within_the_cache_ttl(tmp_path: Path) -> None:
    ttl = 1.0
    config = _config(tmp_path, cache={"ttl": f"{ttl:g}s"})
    ks = Keystile(config, pepper=PEPPER)
    new = ks.keys.create(name="k", org="acme")
    try:
        _, done, seen = _revoke_and_watch(config, lambda: ks.keys.revoke(new.id), new.secret)
    finally:
        ks.close()
    for watched in seen:
        # Revoked in the store, the key was still served from the cache...
        assert watched.served is not None and watched.served >= done
        # ...until its TTL ran out, and not one request past it.
        assert watched.refused >= watched.cached_from + ttl
        assert watched.served < watched.cached_by + ttl


@pytest.mark.redis
def test_a_reconnecting_listener_clears_its_cache(tmp_path: Path) -> None:
    from keystile.cache import KeyCache
    from keystile.invalidation import Invalidator

    require_service("redis")
    cache = KeyCache(60)
    invalidator = Invalidator(f"{REDIS_URL}?key_prefix=t{uuid.uuid4().hex[:8]}", cache)
    ks = Keystile(_config(tmp_path), pepper=PEPPER)
    record = ks.keys.create(name="k", org="acme").record
    cache.put("digest", record)
    invalidator.start()
    try:
        assert invalidator.subscribed.wait(10)
        assert len(cache) == 0  # cleared when (re)subscribing: messages may have been missed
        cache.put("digest", record)
        invalidator.publish(record.id)
        for _ in range(100):
            if len(cache) == 0:
                break
            time.sleep(0.01)
        assert len(cache) == 0
    finally:
        invalidator.close()
        ks.close()
