"""``last_used_at`` written behind (keystile._last_used): batched, timed, never lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from keystile import Keystile, StoreUnavailable
from keystile._last_used import LastUsed
from tests.conftest import PEPPER, STORE_BACKENDS, store_url_for

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


class Store:
    def __init__(self) -> None:
        self.down = False
        self.writes: list[dict[str, datetime]] = []

    def touch(self, pending: dict[str, datetime]) -> None:
        if self.down:
            raise StoreUnavailable("down (test)")
        self.writes.append(dict(pending))


def test_many_uses_become_one_write_with_the_newest_time_per_key() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=60)
    for i in range(100):
        last_used.note("key_a", T0 + timedelta(seconds=i))
    last_used.note("key_b", T0)
    last_used.close()
    assert store.writes == [{"key_a": T0 + timedelta(seconds=99), "key_b": T0}]


def test_a_use_noted_late_never_replaces_a_newer_one() -> None:
    # Two threads: the one that checked a key first may note it last.
    store = Store()
    last_used = LastUsed(store.touch, interval=60)
    last_used.note("key_a", T0 + timedelta(seconds=2))
    last_used.note("key_a", T0 + timedelta(seconds=1))
    last_used.close()
    assert store.writes == [{"key_a": T0 + timedelta(seconds=2)}]


def test_a_failed_write_is_kept_for_the_next_one() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=60)
    last_used.note("key_a", T0)
    last_used.note("key_b", T0)
    store.down = True
    last_used.flush()  # logged, and kept
    last_used.note("key_a", T0 + timedelta(seconds=5))  # a newer use wins over the kept one
    store.down = False
    last_used.close()
    assert store.writes == [{"key_a": T0 + timedelta(seconds=5), "key_b": T0}]


def test_the_timer_writes_without_being_asked() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=0.05)
    last_used.note("key_a", T0)
    deadline = time.monotonic() + 5
    while not store.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.writes == [{"key_a": T0}]
    last_used.close()


def test_after_close_no_timer_starts_but_a_flush_still_writes() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=0.01)
    last_used.close()
    last_used.note("key_a", T0)
    time.sleep(0.05)
    assert store.writes == []
    last_used.flush()
    assert store.writes == [{"key_a": T0}]


# A WSGI app's whole life in a process of its own: it serves one request and
# exits normally, with no close() and no lifespan; only keystile's atexit hook
# can write the use it noted.
_WSGI_PROCESS = """
import sys
from keystile.wsgi import KeystileMiddleware

def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

config = {"store": sys.argv[1], "routes": [{"path": "/", "scopes": []}]}
door = KeystileMiddleware(app, config=config)
key = door.ks.keys.create(name="exit", scopes=["read"])
statuses = []
door(
    {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1",
     "HTTP_AUTHORIZATION": "Bearer " + key.secret},
    lambda status, headers, exc_info=None: statuses.append(status),
)
print(key.id, statuses[0][:3])
"""


@pytest.mark.parametrize("backend", [b for b in STORE_BACKENDS if b.id != "memory"])
def test_a_wsgi_process_that_exits_writes_last_used_at_on_every_sql_store(
    backend: str, tmp_path: Path
) -> None:
    url = store_url_for(backend, tmp_path)
    env = {
        **os.environ,
        "KEYSTILE_PEPPER": PEPPER.decode(),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(
        [sys.executable, "-c", _WSGI_PROCESS, url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key_id, status = done.stdout.split()
    assert status == "200"
    assert "flushing at exit failed" not in done.stderr
    with Keystile({"store": url}, pepper=PEPPER) as ks:
        assert ks.keys.get(key_id).last_used_at is not None
