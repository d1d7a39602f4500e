"""Revocation across processes: a Redis channel that drops cache entries everywhere.

Each process caches verified keys for ``cache.ttl``. Without a shared
channel a revoked key can still pass in another process until its entry
expires; with a Redis-family limiter storage, every key change (revoke,
rotate, update, revoke_user) is published on ``<key_prefix>:invalidate``
and every process drops that key id from its cache on receipt, which takes
milliseconds. A process that was disconnected may have missed messages,
so on every (re)subscription it clears its whole cache; the TTL remains
the bound when Redis is down.

Both directions run on one daemon thread per engine, off the request path:
publishing never blocks a request or the event loop, and the listener
reconnects by itself.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any
from urllib.parse import urlsplit

from keystile._outage import cause_of
from keystile._redis_clients import parse_redis_uri, sync_client
from keystile.cache import KeyCache

__all__ = ["Invalidator"]

logger = logging.getLogger("keystile")

POLL = 0.05  # seconds between checks of the outgoing queue while listening
RECONNECT = 1.0
ORG_PREFIX = "org:"  # key ids start with "key_": a message naming an org cannot be one


class Invalidator:
    """Publishes changed key ids and forgets the ones other processes publish."""

    def __init__(self, storage_uri: str, cache: KeyCache) -> None:
        self._target = parse_redis_uri(storage_uri)
        self._password = urlsplit(storage_uri).password  # masked out of what is logged
        self.channel = f"{self._target.key_prefix}:invalidate"
        self._cache = cache
        self._outgoing: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Invalidator({self._target!r}, channel={self.channel!r})"

    def start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="keystile-invalidation", daemon=True
                    )
                    self._thread.start()

    def publish(self, key_id: str) -> None:
        """Tell every process to forget ``key_id`` (sent from the background thread)."""
        self.start()
        self._outgoing.put(key_id)

    def publish_org(self, org: str) -> None:
        """Tell every process to forget every key of ``org``."""
        self.publish(ORG_PREFIX + org)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * RECONNECT)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            client: Any = None
            pubsub: Any = None
            try:
                client = sync_client(self._target, timeout=5.0)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                # Messages sent while this process was not listening are lost:
                # forget everything once, rather than trust stale entries.
                self._cache.clear()
                self.subscribed.set()
                self._pump(client, pubsub)
            except Exception as exc:  # redis errors, lost connections: retry
                if self.subscribed.is_set():
                    logger.warning(
                        "key invalidation channel lost (%s); reconnecting",
                        cause_of(exc, secrets=[self._password]),
                    )
                self.subscribed.clear()
                self._stop.wait(RECONNECT)
            finally:
                for closable in (pubsub, client):
                    if closable is not None:
                        with contextlib.suppress(Exception):  # already broken
                            closable.close()

    def _pump(self, client: Any, pubsub: Any) -> None:
        while not self._stop.is_set():
            while True:
                try:
                    key_id = self._outgoing.get_nowait()
                except queue.Empty:
                    break
                client.publish(self.channel, key_id)
            message = pubsub.get_message(timeout=POLL)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                text = data.decode() if isinstance(data, bytes) else str(data)
                if text.startswith(ORG_PREFIX):  # an org's limit changed: all its keys
                    self._cache.forget_org(text[len(ORG_PREFIX) :])
                else:
                    self._cache.forget_id(text)
