"""Revocation across real processes: within 1 s over Redis, within the TTL without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import PEPPER, REDIS_URL, require_service

# A second process: verifies the key once (now cached), says "ready", then
# asks every 10 ms and reports the first moment the key is refused.
WATCHER = textwrap.dedent(
    """
    import json, sys, time
    from keystile import Keystile
    from keystile.sansio import RequestView

    config = json.loads(sys.argv[1])
    ks = Keystile(config, pepper=sys.argv[2].encode())
    view = RequestView("GET", b"/x", headers={"authorization": ["Bearer " + sys.argv[3]]})
    assert ks.decide(view).principal is not None
    if ks.invalidator is not None:
        assert ks.invalidator.subscribed.wait(10)
    print("ready", flush=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        decision = ks.decide(view)
        if getattr(decision, "status", 200) == 401:
            print("refused", time.time(), flush=True)
            break
        time.sleep(0.01)
    ks.close()
    """
)


def _watch(config: dict[str, Any], secret: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", WATCHER, json.dumps(config), PEPPER.decode(), secret],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _revoke_and_time(ks: Keystile, config: dict[str, Any], action: Any, secret: str) -> float:
    watchers = [_watch(config, secret) for _ in range(2)]
    try:
        for proc in watchers:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
        revoked_at = time.time()
        action()
        delays = []
        for proc in watchers:
            assert proc.stdout is not None
            words = proc.stdout.readline().split()
            assert words and words[0] == "refused", proc.stderr.read() if proc.stderr else ""
            delays.append(float(words[1]) - revoked_at)
        return max(delays)
    finally:
        for proc in watchers:
            proc.wait(30)
            for stream in (proc.stdout, proc.stderr):
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
        delay = _revoke_and_time(ks, config, actions[how], new.secret)
    finally:
        ks.close()
    assert delay < 1.0


def test_without_redis_other_processes_refuse_within_the_cache_ttl(tmp_path: Path) -> None:
    config = _config(tmp_path, cache={"ttl": "1s"})
    ks = Keystile(config, pepper=PEPPER)
    new = ks.keys.create(name="k", org="acme")
    try:
        delay = _revoke_and_time(ks, config, lambda: ks.keys.revoke(new.id), new.secret)
    finally:
        ks.close()
    assert delay < 1.0 + 0.5  # the TTL, plus the watcher's polling and start-up slack


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
