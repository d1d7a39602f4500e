"""Audit events and their sinks.

Every create, rotate, revoke, scope change, refused request (401, 403, 429)
and store or limiter outage becomes an ``AuditEvent``: time, event name, key
id, org, reason, client address, status. Never a secret: events are built
from key records and refusals, which hold none.

Sinks:

- callbacks (``ks.audit.subscribe(fn)``), called at once, in the caller's
  thread; keep them fast;
- the ``keystile.audit`` logger (``audit.log``, on by default);
- the SQL store's ``keystile_audit`` table (``audit.store: true``);
- a webhook (``audit.webhook.url``): a JSON POST signed like Stripe's,
  ``Keystile-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The table and the webhook are written by one background thread from a
bounded queue, never on the request path: a slow or dead receiver delays
nothing, and when the queue is full events are dropped and counted in the
log rather than blocking a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from keystile.config import AuditConfig

__all__ = ["AuditEvent", "Auditor", "sign", "verify_signature"]

logger = logging.getLogger("keystile.audit")

SIGNATURE_HEADER = "Keystile-Signature"


@dataclass(frozen=True)
class AuditEvent:
    event: str  # key.created, key.revoked, request.refused, store.unavailable, ...
    time: datetime
    key_id: str | None = None
    org: str | None = None
    reason: str | None = None
    client: str | None = None
    status: int | None = None
    key_prefix: str | None = None  # the display prefix (first 14 characters), never more

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time.isoformat().replace("+00:00", "Z")
        return data


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, tolerance: float = 300) -> bool:
    """What a receiver does: recompute the MAC and check the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class Auditor:
    """Fans events out to the configured sinks; see the module docstring."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        store_writer: Callable[[list[AuditEvent]], None] | None = None,
        store_reader: Callable[..., list[AuditEvent]] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._store_reader = store_reader
        self._clock = clock
        self._callbacks: list[Callable[[AuditEvent], None]] = []
        self._store_writer = store_writer if config.store else None
        self._webhook_secret = b""
        if config.webhook_url:
            secret = os.environ.get(config.webhook_secret_env or "", "")
            self._webhook_secret = secret.encode()
        self._queue: queue.Queue[AuditEvent | None] = queue.Queue(maxsize=config.queue_size)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        self.delivered = 0

    def __repr__(self) -> str:
        sinks = [
            name
            for name, on in (
                ("log", self.config.log),
                ("store", self._store_writer),
                ("webhook", self.config.webhook_url),
            )
            if on
        ]
        return f"Auditor(sinks={sinks}, callbacks={len(self._callbacks)})"

    def subscribe(self, callback: Callable[[AuditEvent], None]) -> None:
        self._callbacks.append(callback)

    def record(self, event: AuditEvent) -> None:
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                logger.exception("audit callback %r failed", callback)
        if self.config.log:
            # The fields also go as `extra`, for JSON log formatters.
            logger.info(
                "%s key_id=%s key_prefix=%s org=%s status=%s client=%s reason=%s",
                event.event,
                event.key_id,
                event.key_prefix,
                event.org,
                event.status,
                event.client,
                event.reason,
                extra={"keystile": event.as_dict()},
            )
        if self._store_writer is None and not self.config.webhook_url:
            return
        self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                dropped = self.dropped
            if dropped == 1 or dropped % 100 == 0:
                logger.warning("audit queue full: %d events dropped so far", dropped)

    def _start(self) -> None:
        if self._worker is None:
            with self._lock:
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._run, name="keystile-audit", daemon=True
                    )
                    self._worker.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 100:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            if events:
                self._deliver(events)
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return

    def _deliver(self, events: list[AuditEvent]) -> None:
        if self._store_writer is not None:
            try:
                self._store_writer(events)
            except Exception as exc:
                logger.warning("could not write %d audit events to the store: %s", len(events), exc)
        if self.config.webhook_url:
            for event in events:
                self._post(event)

    def _post(self, event: AuditEvent) -> None:
        body = json.dumps(event.as_dict(), separators=(",", ":")).encode()
        url = self.config.webhook_url or ""
        for attempt in range(self.config.webhook_retries + 1):
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "keystile-audit",
                    SIGNATURE_HEADER: sign(self._webhook_secret, body, int(time.time())),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.config.webhook_timeout) as reply:
                    if 200 <= reply.status < 300:
                        self.delivered += 1
                        return
            except urllib.error.HTTPError as exc:  # a non-2xx answer: close its body
                exc.close()
                reason: Exception = exc
            except OSError as exc:  # URLError, timeouts, refused connections
                reason = exc
            else:
                reason = RuntimeError("non-2xx answer")
            if attempt < self.config.webhook_retries:
                time.sleep(min(2.0, 0.2 * 2**attempt))
        logger.warning(
            "audit webhook gave up on %s after %d attempts: %s",
            event.event,
            self.config.webhook_retries + 1,
            type(reason).__name__,
        )

    def events(
        self,
        org: str | None = None,
        key_id: str | None = None,
        days: int = 7,
        *,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """The audit trail kept in the key store, newest first, never a secret.

        ``org`` and ``key_id`` narrow it; ``days`` looks back that many days
        (1 to 366). Events still queued for the store are written first.
        Needs ``audit.store`` (on by default).
        """
        from keystile.errors import KeyInputError
        from keystile.usage import check_usage_days

        days = check_usage_days(days)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise KeyInputError("limit must be a positive whole number", field="limit")
        if self._store_writer is None or self._store_reader is None:
            raise KeyInputError(
                "the audit trail is not kept in the key store (audit.store is false)",
                field="audit.store",
            )
        self.flush()
        now = self._clock() if self._clock is not None else datetime.now(timezone.utc)
        return self._store_reader(org, key_id, now - timedelta(days=days), limit)

    async def aevents(
        self,
        org: str | None = None,
        key_id: str | None = None,
        days: int = 7,
        *,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """``events`` for async callers: it waits for the queue and reads in a worker thread,
        so the event loop never blocks on either."""
        import functools

        import anyio.to_thread

        read = functools.partial(self.events, org, key_id, days, limit=limit)
        return await anyio.to_thread.run_sync(read)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) until queued events are delivered or given up."""
        if self._worker is None:
            return
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        if self._worker is not None:
            with contextlib.suppress(queue.Full):  # a full queue: the join below times out
                self._queue.put_nowait(None)
            self._worker.join(timeout=0.5)
            self._worker = None
