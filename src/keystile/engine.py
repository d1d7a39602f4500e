"""``Keystile``: one engine that wires config, store, cache and limiter.

One engine serves any number of apps (ASGI and WSGI alike) and the key API.
It owns the resources that outlive a request: store connections, the
verified-key cache, the limiter storage and the write-behind of
``last_used_at``; ``close()`` (or ``with`` / ``async with``) releases them and
flushes what is pending.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from keystile._coalesce import AsyncCoalescer, Coalescer
from keystile._flow import adrive, drive
from keystile._last_used import LastUsed
from keystile._redact import redact_url
from keystile._redis_clients import REDIS_SCHEMES
from keystile.audit import AuditEvent, Auditor
from keystile.cache import KeyCache
from keystile.config import Config, load_config
from keystile.errors import ConfigError, LimiterUnavailable, ServiceUnavailable
from keystile.invalidation import Invalidator
from keystile.keys import Digester, KeyFormat, imported_hash_context
from keystile.lifecycle import KeyManager
from keystile.limiter import Limiter, open_limiter, refunds_on
from keystile.limiting import LimitCall
from keystile.overrides import LimitOverrides
from keystile.pipeline import (
    UNMATCHED,
    Admit,
    Decision,
    Event,
    Lookups,
    Refusal,
    VerifyImported,
    decide,
    express,
)
from keystile.policy import KeyContext, Policy
from keystile.sansio import RequestView, client_address
from keystile.scopes import ScopePolicy
from keystile.stores import (
    AsyncKeyStore,
    KeyStore,
    MemoryKeyStore,
    is_memory_url,
    open_async_store,
    open_store,
)
from keystile.stores.base import KeyRecord, StoreCall, utcnow

if TYPE_CHECKING:
    from keystile.metrics import PrometheusMetrics

__all__ = ["Keystile"]

logger = logging.getLogger("keystile")

EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # usage days count from here (UTC)

MIN_PEPPER_BYTES = 16


class Keystile:
    """The keystile engine.

    >>> ks = Keystile.from_config("keystile.yaml")            # doctest: +SKIP
    >>> new = ks.keys.create(name="CI", scopes=["results"])   # doctest: +SKIP
    >>> ks.close()                                             # doctest: +SKIP

    The pepper (the HMAC key of stored digests) comes from the environment
    variable the config names; without it the engine refuses to start,
    except on ``memory://``, where a random one is made (keys then live and
    die with the process anyway). Never log or share the pepper: with it and
    the database, key guesses can be checked offline.
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | str | os.PathLike[str],
        *,
        pepper: bytes | str | None = None,
        store: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        cfg = self.config
        # What every request is judged against, compiled once. The stored
        # form of a secret (HMAC-SHA256 keyed by the pepper) lives in it; the
        # pepper itself is not kept.
        self.policy = Policy.compile(
            cfg, Digester(self._resolve_pepper(pepper)), refunds=refunds_on(cfg.limiter)
        )
        self.digest: Callable[[str], str] = self.policy.digest
        self.scopes: ScopePolicy = self.policy.scopes
        self.routes = self.policy.routes
        self.formats: Mapping[str, KeyFormat] = self.policy.formats
        self.cache = KeyCache(
            cfg.cache_ttl,
            negative_ttl=cfg.negative_cache_ttl,
            size=cfg.cache_size,
            negative_size=cfg.negative_cache_size,
        )
        # What decisions share at run time: the cache, lookups in flight, the clock.
        self.lookups = Lookups(self.cache, clock)
        if store is None and is_memory_url(cfg.store):
            store = MemoryKeyStore(cfg.store)  # one store for sync and async callers
        self._store: KeyStore | None = store
        self._shared_store: AsyncKeyStore | None = store
        # An async engine's pooled connections belong to the event loop that
        # opened them, so each loop gets its own async store.
        self._astores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncKeyStore] = (
            weakref.WeakKeyDictionary()
        )
        self._store_lock = threading.Lock()
        self._finds = Coalescer()  # concurrent cache misses of one digest: one lookup
        self._afinds = AsyncCoalescer()
        self.keys = KeyManager(self)
        self.limits = LimitOverrides(self)
        self.audit = Auditor(
            cfg.audit,
            store_writer=self._write_audit,
            store_reader=lambda *args: self.store.execute("audit_events", *args),
            clock=clock,
        )
        # event -> (monotonic time of the last report, requests since): _report_outage
        self.outages: dict[str, tuple[float, int]] = {}
        # Set by keystile.metrics.install (the optional Prometheus extra).
        self.metrics: PrometheusMetrics | None = None
        self.invalidator: Invalidator | None = None
        scheme = cfg.limiter.storage.split("://", 1)[0].lower().removeprefix("async+")
        if scheme in REDIS_SCHEMES:
            self.invalidator = Invalidator(cfg.limiter.storage, self.cache)
        # Usage counts ride with last_used_at: one buffer, one timer, one flush.
        self.counting = cfg.usage.enabled
        self._last_used = LastUsed(
            lambda pending: self.store.execute("touch", pending),
            write_counts=self._write_counts if self.counting else None,
        )
        self._closed = False
        self._limiter: Limiter | None = None
        self._imports: Any = None
        # A WSGI server has no shutdown hook of its own: flush at exit.
        atexit.register(_close_at_exit, weakref.ref(self))

    @classmethod
    def from_config(
        cls, source: Config | Mapping[str, Any] | str | os.PathLike[str], **options: Any
    ) -> Keystile:
        return cls(source, **options)

    def __repr__(self) -> str:
        store = redact_url(self.config.store)
        return f"Keystile(store={store!r}, routes={len(self.config.routes)})"

    # -- pepper and digests -----------------------------------------------------

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (``"dashboard-csrf"``), derived from the pepper.

        HMAC-SHA256(pepper, label), the PRF that ``digest`` already keys, so
        the engine still keeps no pepper. The label starts with a NUL, which
        no API key can hold (credentials with control characters are refused
        before any digest), so a derived key is never a stored digest.
        Every process sharing the pepper derives the same key.
        """
        if not purpose or "\0" in purpose:
            raise ValueError("purpose must be a non-empty label without NUL")
        return bytes.fromhex(self.digest("\0keystile:" + purpose))

    def _resolve_pepper(self, given: bytes | str | None) -> bytes:
        if given is None:
            given = os.environ.get(self.config.pepper_env)
        if given is None or given == "":
            if is_memory_url(self.config.store):
                logger.warning(
                    "%s is not set; using a random pepper for this process "
                    "(fine for memory://, whose keys die with the process)",
                    self.config.pepper_env,
                )
                return secrets.token_bytes(32)
            raise ConfigError(
                f"environment variable {self.config.pepper_env} is not set: it holds the "
                "HMAC key (pepper) for stored key digests; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                file=self.config.source,
            )
        pepper = given.encode("utf-8") if isinstance(given, str) else given
        if len(pepper) < MIN_PEPPER_BYTES:
            raise ConfigError(
                f"the pepper in {self.config.pepper_env} is {len(pepper)} bytes; "
                f"use at least {MIN_PEPPER_BYTES} random bytes",
                file=self.config.source,
            )
        return pepper

    @property
    def now(self) -> Callable[[], datetime]:
        """The clock (UTC ``datetime``) that expiry and ``last_used_at`` are read on."""
        return self.lookups.clock

    @now.setter
    def now(self, clock: Callable[[], datetime]) -> None:
        self.lookups.clock = clock

    def key_context(self, record: KeyRecord) -> KeyContext:
        """What a request with ``record``'s key works out to (its principal, its limits)."""
        return self.policy.context(record)

    def key_type_of(self, credential: str) -> str | None:
        """The key type whose format ``credential`` has (checksum included), or None."""
        return self.policy.key_type_of(credential)

    # -- stores ------------------------------------------------------------------

    @property
    def store(self) -> KeyStore:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(self.config.store, timeout=self.config.store_timeout)
        return self._store

    @property
    def astore(self) -> AsyncKeyStore:
        """The async store of the running event loop."""
        if self._shared_store is not None:
            return self._shared_store
        loop = asyncio.get_running_loop()
        store = self._astores.get(loop)
        if store is None:
            store = open_async_store(self.config.store, timeout=self.config.store_timeout)
            self._astores[loop] = store
        return store

    def init_store(self) -> None:
        """Create the store's tables now rather than on first use."""
        init = getattr(self.store, "init_schema", None)
        if init is not None:
            init()

    @property
    def limiter(self) -> Limiter:
        if self._limiter is None:
            with self._store_lock:
                if self._limiter is None:
                    self._limiter = open_limiter(self.config.limiter)
        return self._limiter

    def warm_up(self) -> None:
        """Prepare the limiter now (connect, learn a cluster, load the script), not on a request.

        The WSGI and Django middlewares call this when they are built, the
        ASGI middleware at lifespan startup (``awarm_up``). A limiter storage
        that does not answer is logged, not raised: requests then meet it as
        an outage (``limiter.on_error``), and it is used as soon as it answers.
        """
        try:
            self.limiter.warm_up()
        except LimiterUnavailable as exc:
            _log_cold_limiter(exc)

    async def awarm_up(self) -> None:
        """``warm_up`` for the running event loop (its connections belong to it)."""
        try:
            await self.limiter.awarm_up()
        except LimiterUnavailable as exc:
            _log_cold_limiter(exc)

    # -- the request decision ------------------------------------------------------

    def decide(self, view: RequestView) -> Decision:
        """Admit or refuse a request, with blocking I/O (WSGI)."""
        decision = self.decide_in_memory(view)
        if decision is not None:
            return decision
        perform = self._perform if self.metrics is None else self._perform_timed
        flow = decide(self.policy, self.lookups, view)
        return self._settle(view, drive(flow, perform, ServiceUnavailable))

    async def adecide(self, view: RequestView) -> Decision:
        """Admit or refuse a request without blocking the event loop (ASGI)."""
        decision = self.decide_in_memory(view)
        if decision is not None:
            return decision
        return await self.adecide_flow(view)

    async def adecide_flow(self, view: RequestView) -> Decision:
        """``adecide`` for a request ``decide_in_memory`` already declined.

        The ASGI door asks ``decide_in_memory`` first, so that the common
        request costs no coroutine; this is the rest, with no second ask.
        """
        aperform = self._aperform if self.metrics is None else self._aperform_timed
        flow = decide(self.policy, self.lookups, view)
        return self._settle(view, await adrive(flow, aperform, ServiceUnavailable))

    def decide_in_memory(self, view: RequestView) -> Decision | None:
        """The decision, when no I/O is needed to make it; else None.

        With an in-process limiter, the common request (a key the cache
        holds) is answered by a plain call (``pipeline.express``), with no
        flow to drive and, on ASGI, no coroutine to await.
        """
        if self.invalidator is not None:
            self.invalidator.start()  # a no-op once listening
        limiter = self.limiter
        if not limiter.in_process:
            return None
        hit = limiter.hit_all if self.metrics is None else self._perform_timed
        decision = express(self.policy, self.lookups, view, hit)
        return None if decision is None else self._settle(view, decision)

    def _perform(self, effect: Any) -> Any:
        try:
            if isinstance(effect, LimitCall):
                return self.limiter.hit_all(effect)
            if isinstance(effect, StoreCall):
                if effect.op == "find_by_digest":  # a cache miss: concurrent ones share it
                    (digest,) = effect.args
                    return self._finds.run(digest, lambda: self.store.execute(effect.op, digest))
                return self.store.execute(effect.op, *effect.args)
        except ServiceUnavailable as exc:
            self._report_outage(effect, exc)
            raise
        if isinstance(effect, VerifyImported):
            return self._verify_imported(effect)
        if isinstance(effect, Event):
            return self.emit(effect.name, effect.record)
        raise TypeError(f"unknown effect {effect!r}")

    async def _aperform(self, effect: Any) -> Any:
        try:
            if isinstance(effect, LimitCall):
                limiter = self.limiter
                if limiter.in_process:
                    return limiter.hit_all(effect)  # no I/O: no second coroutine either
                return await limiter.ahit_all(effect)
            if isinstance(effect, StoreCall):
                store = self.astore
                if effect.op == "find_by_digest":  # a cache miss: concurrent ones share it
                    (digest,) = effect.args
                    return await self._afinds.run(digest, lambda: store.aexecute(effect.op, digest))
                return await store.aexecute(effect.op, *effect.args)
        except ServiceUnavailable as exc:
            self._report_outage(effect, exc)
            raise
        if isinstance(effect, VerifyImported):
            import anyio.to_thread

            return await anyio.to_thread.run_sync(self._verify_imported, effect)
        if isinstance(effect, Event):
            return self.emit(effect.name, effect.record)
        raise TypeError(f"unknown effect {effect!r}")

    def _report_outage(self, effect: Any, exc: ServiceUnavailable) -> None:
        """Log and record an outage at most once a second, with how many requests it hit.

        At a thousand requests a second, one line per refused request would
        bury the log and flood the audit sinks with copies of the same fact.
        """
        event = "limiter.unavailable" if isinstance(effect, LimitCall) else "store.unavailable"
        now = time.monotonic()
        last, missed = self.outages.get(event, (0.0, 0))
        if now - last < OUTAGE_REPORT_EVERY:
            self.outages[event] = (last, missed + 1)
            return
        self.outages[event] = (now, 0)
        more = f" ({missed} more requests hit it since the last report)" if missed else ""
        what = "key store" if event.startswith("store") else "rate limiter"
        logger.error("%s unavailable: %s%s", what, exc, more)
        self.emit(event, None, reason=f"{exc}{more}")

    def _perform_timed(self, effect: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._perform(effect)
        finally:
            if self.metrics is not None:
                self.metrics.observe_call(_backend_of(effect), time.perf_counter() - start)

    async def _aperform_timed(self, effect: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self._aperform(effect)
        finally:
            if self.metrics is not None:
                self.metrics.observe_call(_backend_of(effect), time.perf_counter() - start)

    def _verify_imported(self, effect: VerifyImported) -> bool:
        if self._imports is None:
            self._imports = imported_hash_context()
        try:
            return bool(self._imports.verify(effect.secret, effect.hash))
        except (ValueError, TypeError):  # an unknown or garbled hash never verifies
            return False

    # -- cache invalidation --------------------------------------------------------

    def forget(self, record: KeyRecord) -> None:
        """Drop a changed key from the cache: here at once, elsewhere by Redis or the TTL."""
        if record.digest is not None:
            self.cache.forget_digest(record.digest)
        self.forget_id(record.id)

    def forget_org(self, org: str) -> None:
        """Drop every cached key of ``org`` (its limit changed): here and, over Redis, elsewhere."""
        self.cache.forget_org(org)
        if self.invalidator is not None:
            self.invalidator.publish_org(org)

    def forget_id(self, key_id: str) -> None:
        self.cache.forget_id(key_id)
        if self.invalidator is not None:
            self.invalidator.publish(key_id)

    # -- events ----------------------------------------------------------------------

    def emit(
        self,
        event: str,
        record: KeyRecord | None,
        *,
        org: str | None = None,
        reason: str | None = None,
        client: str | None = None,
        status: int | None = None,
    ) -> None:
        """Record an audit event (see :mod:`keystile.audit`); never carries a secret."""
        self.audit.record(
            AuditEvent(
                event,
                self.now(),
                key_id=record.id if record else None,
                key_prefix=record.prefix if record else None,
                org=record.org if record else org,
                reason=reason,
                client=client,
                status=status,
            )
        )

    def _settle(self, view: RequestView, decision: Decision) -> Decision:
        """What follows a decision here: ``last_used_at``, metrics, the audit trail."""
        if self.metrics is not None:
            self.metrics.observe_decision(decision)
        if type(decision) is Admit:
            if decision.used_at is not None and decision.principal is not None:
                self._last_used.note(decision.principal.id, decision.used_at)
        elif isinstance(decision, Refusal) and decision.status in (401, 403, 429):
            if decision.key_id is not None and self.counting:
                self.count_use(decision.key_id, decision.route or UNMATCHED, decision.status)
            self.audit.record(
                AuditEvent(
                    "request.refused",
                    self.now(),
                    key_id=decision.key_id,
                    key_prefix=decision.key_prefix,
                    org=decision.org,
                    reason=f"{decision.code}: {decision.message}",
                    client=client_address(
                        view, self.config.trusted_proxies, unix=self.config.trust_unix_socket
                    ),
                    status=decision.status,
                )
            )
        return decision

    def _write_audit(self, events: list[AuditEvent]) -> None:
        self.store.execute("audit", events)

    # -- last_used_at, written behind -------------------------------------------------

    def note_use(self, key_id: str, when: datetime | None = None) -> None:
        """Remember that a key was used; written to the store in batches."""
        self._last_used.note(key_id, self.now() if when is None else when)

    def count_use(self, key_id: str, route: str, status: int) -> None:
        """Add one request of ``key_id`` on ``route`` answered ``status`` (SPEC section 8).

        A dict increment; the count reaches the store with the next flush.
        """
        if self.lookups.clock is utcnow:  # the real clock: a day number needs no datetime
            day = int(time.time() // 86400)
        else:
            day = self.now().date().toordinal() - EPOCH_ORDINAL
        self._last_used.count((key_id, day, route, status))

    def _write_counts(self, counts: dict[tuple[str, int, str, int], int]) -> None:
        today = self.now().date().toordinal() - EPOCH_ORDINAL
        keep_days = int(self.config.usage.retention // 86400)
        self.store.execute("add_usage", counts, today - keep_days + 1)

    def flush(self) -> None:
        """Write pending ``last_used_at`` values and usage counts now (batched statements)."""
        self._last_used.flush()

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush pending writes and release connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._last_used.close()
        self.audit.close()
        if self.invalidator is not None:
            self.invalidator.close()
        if self._store is not None:
            self._store.close()
        if self._limiter is not None:
            self._limiter.close()

    async def arelease(self) -> None:
        """Flush, and close the connections the running event loop opened.

        The ASGI middleware calls this at lifespan shutdown; the engine stays
        usable (a later call on another loop opens new connections).
        """
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.flush)
        store = self._astores.pop(asyncio.get_running_loop(), None)
        if store is not None:
            await store.aclose()
        if self._limiter is not None:
            await self._limiter.aclose()  # the running loop's limiter connections

    async def aclose(self) -> None:
        import anyio.to_thread

        await self.arelease()
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> Keystile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Keystile:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


OUTAGE_REPORT_EVERY = 1.0  # seconds between two log lines (and events) of one outage


def _log_cold_limiter(exc: LimiterUnavailable) -> None:
    logger.warning("keystile: the rate limiter could not be prepared at start (%s)", exc)


def _backend_of(effect: Any) -> str:
    """The ``backend`` metrics label of a pipeline effect."""
    if isinstance(effect, StoreCall):
        return "store"
    if isinstance(effect, LimitCall):
        return "limiter"
    return "imported_hash"


def engine_for(config: Any, engine: Keystile | None = None) -> Keystile:
    """The engine a door runs on: given, passed as ``config``, or built from it.

    ``config=None`` reads ``$KEYSTILE_CONFIG``, then ``./keystile.yaml``.
    """
    if engine is not None:
        return engine
    if isinstance(config, Keystile):
        return config
    return Keystile(config if config is not None else str(config_path_from_env()))


def _close_at_exit(ref: weakref.ref[Keystile]) -> None:
    engine = ref()
    if engine is not None:
        try:
            engine.close()
        except Exception:  # at exit, a failing flush must not mask the real exit
            logger.exception("keystile: flushing at exit failed")


def config_path_from_env(explicit: str | None = None) -> Path:
    """``--config``, else ``$KEYSTILE_CONFIG``, else ``./keystile.yaml``."""
    return Path(explicit or os.environ.get("KEYSTILE_CONFIG") or "keystile.yaml")
