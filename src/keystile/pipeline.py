"""The one decision: given a request, admit it (with a principal) or refuse it.

``decide`` is SPEC section 4, written once and free of I/O. It reads a
compiled ``Policy`` (routes, key formats, scopes, limits) and the run-time
``Lookups`` (the verified-key cache, the lookups in flight, the clock), and
never the engine. It is a generator: it yields the I/O it needs
(``StoreCall`` for the key store, ``LimitCall`` for the limiter,
``VerifyImported`` for a slow imported hash, ``Event`` for the audit trail)
and receives the answers; a service that fails is thrown into it as
``StoreUnavailable`` / ``LimiterUnavailable`` at that yield. ``_flow.drive``
and ``_flow.adrive`` are the two drivers; the engine performs the effects,
and the ASGI and WSGI middleware only translate a request into a
``RequestView`` and a ``Decision`` back into a response.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from keystile.cache import KeyCache
from keystile.config import Config
from keystile.errors import LimiterUnavailable, StoreUnavailable
from keystile.limiting import (
    LimitCall,
    LimitResult,
    LimitSpec,
    failed_auth_specs,
    rate_limit_headers,
    retry_after,
)
from keystile.policy import KeyContext, Policy, Principal
from keystile.routes import RouteMatch
from keystile.sansio import (
    BadCredential,
    RequestView,
    client_address,
    client_ip,
    origin_allowed,
    origin_host,
    read_credential,
)
from keystile.stores.base import KeyRecord, StoreCall

__all__ = [
    "UNMATCHED",
    "Admit",
    "Decision",
    "Event",
    "KeyContext",
    "Lookups",
    "Principal",
    "Refusal",
    "VerifyImported",
    "decide",
    "express",
    "route_of",
]

logger = logging.getLogger("keystile")

STORE_RETRY_AFTER = 5
TOO_MANY_FAILURES = "too many failed authentication attempts"
UNMATCHED = "(unmatched)"  # the route of a request no rule matched, in usage counts


class Lookups:
    """What the decisions of one engine share at run time.

    The verified-key cache, the digests whose store lookup a request leads
    now, and the clock that expiry is read on. Memory only: no I/O.
    """

    __slots__ = ("_claims", "cache", "clock")

    def __init__(self, cache: KeyCache, clock: Callable[[], datetime]) -> None:
        self.cache = cache
        self.clock = clock
        self._claims: set[str] = set()

    def claim(self, digest: str) -> bool:
        """Whether this request leads the lookup of ``digest``; False if another already does.

        A claim spans the failed-auth unit spent before the lookup and the
        lookup itself, so requests arriving while either runs know to share
        it. Two threads may both lead in a rare race: each then spends a
        unit, as without the claim. ``release`` ends it.
        """
        claims = self._claims
        if digest in claims:
            return False
        claims.add(digest)
        return True

    def release(self, digest: str) -> None:
        self._claims.discard(digest)


@dataclass(slots=True)
class Admit:
    """Let the request through; ``headers`` go on the response.

    Made on every admitted request, so a plain slotted class rather than a
    frozen dataclass (which pays ``object.__setattr__`` per field); nothing
    changes one after the pipeline returns it.
    """

    principal: Principal | None = None
    headers: Sequence[tuple[str, str]] = ()
    strip_embed_token: bool = False
    route: RouteMatch | None = None
    # When the key was found valid: the engine notes it as ``last_used_at``.
    used_at: datetime | None = None


def route_of(decision: Admit) -> str:
    """The pattern of the rule that admitted a request, for usage counts."""
    match = decision.route
    return match.rule.path if match is not None else UNMATCHED


@dataclass(frozen=True)
class Refusal:
    """Answer the request here with ``status`` and a JSON body (SPEC section 5)."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    # For the audit trail and usage counts, when the key was identified;
    # never in the body.
    key_id: str | None = None
    org: str | None = None
    key_prefix: str | None = None
    route: str | None = None  # the matched rule's pattern


Decision = Admit | Refusal


@dataclass(frozen=True)
class VerifyImported:
    """Check a credential against a slow imported hash (run off the event loop)."""

    hash: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Event:
    """Record an audit event about ``record`` (``key.upgraded``); answered with None."""

    name: str
    record: KeyRecord


Flow = Generator[Any, Any, Decision]

_PASS = Admit()


def _bad_request(message: str, *, credential: bool = True) -> Refusal:
    if not credential:
        return Refusal(400, "BAD_REQUEST", message)
    challenge = 'Bearer realm="api", error="invalid_request"'  # RFC 6750 section 3.1
    return Refusal(400, "BAD_REQUEST", message, (("WWW-Authenticate", challenge),))


def _unavailable(message: str) -> Refusal:
    return Refusal(503, "UNAVAILABLE", message, (("Retry-After", str(STORE_RETRY_AFTER)),))


def _forbidden(message: str) -> Refusal:
    return Refusal(403, "FORBIDDEN", message)


def decide(policy: Policy, lookups: Lookups, view: RequestView) -> Flow:
    """SPEC section 4, steps 2 to 12."""
    cfg = policy.config
    # 2. CORS preflight passes without a key.
    if (
        view.method == "OPTIONS"
        and "origin" in view.headers
        and "access-control-request-method" in view.headers
    ):
        return _PASS

    # 3. The route, on the path the app routes on.
    method, match = policy.route(view)
    if method is None:
        return _bad_request("malformed request path", credential=False)
    rule = match.rule if match else None
    if rule is None:
        if cfg.default == "public":
            return _PASS
        if cfg.default == "deny":
            return _forbidden("no route allows this request")
    elif rule.public:
        return Admit(route=match)

    # 4. The failed-auth budget of the caller's address. It is never peeked at
    # on its own: each step below that can end in a 401 spends it in the
    # same atomic call that answers whether any is left (so an address that
    # spent it gets 429, whatever it sends next), and a key the cache
    # vouches for guards on it in the call that counts its limits.
    auth: tuple[LimitSpec, ...] = ()
    if cfg.limits.failed_auth:
        address = client_address(view, cfg.trusted_proxies, unix=cfg.trust_unix_socket)
        auth = failed_auth_specs(cfg, address)

    # 5-7. The credential and the key it names.
    embed_route = bool(rule and rule.embed)
    try:
        credential = read_credential(view, cfg.credentials, embed_route=embed_route)
    except BadCredential as exc:
        if auth:  # rare: a spent address hears 429 before what is wrong with its request
            refusal, _ = yield from _count(cfg, LimitCall(auth, peek=True), TOO_MANY_FAILURES)
            if refusal is not None:
                return refusal
        return _bad_request(str(exc))
    if credential is None:
        return (yield from _unauthorized(cfg, auth, "API key required", sent=False))
    secret = credential.value
    digest = policy.digest(secret)
    cached = lookups.cache.get(digest)
    record: KeyRecord | None = None
    # The failed-auth unit spent before asking the store (None: none spent).
    spent: LimitResult | None = None
    sharing = False  # joined another request's lookup of this digest, spending nothing
    key_type: str | None
    if isinstance(cached, KeyRecord):
        # This exact credential passed the format and checksum check when it
        # was cached, and its digest is the cache key: skip both.
        record, key_type = cached, cached.type
    else:
        key_type = policy.key_type_of(secret)
        imported = key_type is None and policy.imports_enabled and not policy.has_own_prefix(secret)
        if cached is not None and (key_type is not None or imported):
            # The store (or a slow hash) must answer. Spend a unit of the
            # budget first, so that N concurrent guesses from one address
            # ask the store at most ``failed_auth`` times, never N; the unit
            # comes back if the key proves valid. A request whose digest is
            # already being looked up shares that lookup and spends nothing
            # (a 401 still spends, below): one client's burst of one key at a
            # cache expiry is one lookup, not a budget's worth of 429s.
            leads = key_type is None or lookups.claim(digest)
            sharing = not leads
            try:
                if auth and leads:
                    call = LimitCall(auth)
                    if policy.refunds:
                        refusal, spent = yield from _count(cfg, call, TOO_MANY_FAILURES)
                    else:  # this storage counts each 401 after the fact
                        call.peek = True
                        refusal, _ = yield from _count(cfg, call, TOO_MANY_FAILURES)
                    if refusal is not None:
                        return refusal
                try:
                    if key_type is not None:
                        record = yield from _lookup(lookups.cache, digest)
                    else:
                        record = yield from _lookup_imported(policy, lookups.cache, secret)
                except StoreUnavailable:
                    yield from _give_back(spent, auth)
                    return _unavailable("the key store is unavailable; try again shortly")
            finally:
                if leads and key_type is not None:
                    lookups.release(digest)
            # The store found the row by its digest; compare again in constant
            # time so no code path depends on a partial match.
            if record is not None and not hmac.compare_digest(record.digest or "", digest):
                record = None
    if record is None or (key_type is not None and record.type != key_type):
        # One message for unknown keys and bad checksums alike.
        return (yield from _unauthorized(cfg, auth, "invalid API key", spent=spent))
    now = lookups.clock()
    gone = None
    if record.revoked_at is not None:
        gone = "API key has been revoked"
    elif record.expires_at is not None and record.expires_at <= now:
        gone = "API key has expired"
    if gone is not None:
        refusal = yield from _unauthorized(cfg, auth, gone, spent=spent)
        return _of_key(refusal, record, match) if refusal.status == 401 else refusal
    # The key is valid: the unit spent on its lookup comes back; a key the
    # cache answered for instead makes sure its address has budget left.
    refund = auth if spent is not None else ()
    guard = auth if record is cached or sharing else ()

    context = policy.context(record)
    refusal = _key_refusal(policy, view, match, method, record, context, credential.source)
    if refusal is not None:
        if guard or refund:
            check = LimitCall((), guard=guard, refund=refund)
            limited, _ = yield from _count(cfg, check, TOO_MANY_FAILURES)
            if limited is not None and limited.status == 429:
                refusal = limited
        return _of_key(refusal, record, match)

    # 11. Limits, all or nothing.
    headers: Sequence[tuple[str, str]] = ()
    if refund:
        call = LimitCall(policy.limit_call(rule, context).specs, guard=guard, refund=refund)
    elif guard:
        call = policy.guarded_call(rule, context, guard)
    else:
        call = policy.limit_call(rule, context)
    if not call.empty:
        refusal, result = yield from _count(cfg, call, "rate limit exceeded")
        if refusal is not None:
            return _of_key(refusal, record, match)
        if result is not None and result.states:  # None: on_error open let it through
            headers = rate_limit_headers(result, cfg.limiter.headers)

    # 12. The app runs with the principal (and the engine notes its use).
    embedded = credential.source.startswith("embed-")
    return Admit(context.principal, headers, embedded, match, now)


def express(
    policy: Policy, lookups: Lookups, view: RequestView, hit: Callable[[LimitCall], LimitResult]
) -> Decision | None:
    """``decide`` for the request the cache and an in-process limiter answer alone, or None.

    Nearly every request names a key the cache vouches for, on a rule that
    needs one, and is admitted; with a limiter that does no I/O (``hit``
    answers at once), no step of SPEC section 4 needs to yield for it. This
    is that path as a plain call: the same steps as ``decide`` and the same
    helpers, without a generator, its driver and the effect objects. It
    answers None, before spending anything, for any request it does not
    cover (a preflight, a public default, an embed route, a key the cache
    does not hold, a key that is gone or refused by a rule), and
    ``decide`` answers those.
    """
    if view.method == "OPTIONS":
        return None
    method, match = policy.route(view)
    if method is None or match is None:
        return None
    rule = match.rule
    if rule.public:
        return Admit(route=match)
    if rule.embed:
        return None
    cfg = policy.config
    try:
        credential = read_credential(view, cfg.credentials)
    except BadCredential:
        return None
    if credential is None:
        return None
    record = lookups.cache.get(policy.digest(credential.value))
    if type(record) is not KeyRecord or record.revoked_at is not None:
        return None
    now = lookups.clock()
    if record.expires_at is not None and record.expires_at <= now:
        return None
    context = policy.context(record)
    if _key_refusal(policy, view, match, method, record, context, credential.source):
        return None
    # 4 and 11: a key the cache vouched for guards on its address's budget
    # in the call that counts its limits.
    auth: tuple[LimitSpec, ...] = ()
    if cfg.limits.failed_auth:
        address = client_address(view, cfg.trusted_proxies, unix=cfg.trust_unix_socket)
        auth = failed_auth_specs(cfg, address)
    call = policy.guarded_call(rule, context, auth) if auth else policy.limit_call(rule, context)
    headers: Sequence[tuple[str, str]] = ()
    if not call.empty:
        result = hit(call)
        if not result.admitted:
            return _of_key(_limited(cfg, result, "rate limit exceeded"), record, match)
        if result.states:
            headers = rate_limit_headers(result, cfg.limiter.headers)
    return Admit(context.principal, headers, False, match, now)


def _of_key(refusal: Refusal, record: KeyRecord, match: RouteMatch | None) -> Refusal:
    """``refusal``, marked with the key it refused (for the audit trail and usage)."""
    route = match.rule.path if match is not None else UNMATCHED
    return replace(refusal, key_id=record.id, org=record.org, key_prefix=record.prefix, route=route)


def _key_refusal(
    policy: Policy,
    view: RequestView,
    match: RouteMatch | None,
    method: str,
    record: KeyRecord,
    context: KeyContext,
    source: str,
) -> Refusal | None:
    """Steps 8 to 10, for a key that exists and is active: no I/O."""
    rule = match.rule if match else None

    # The key's address allowlist (SPEC section 3), read as step 4 reads addresses.
    if context.networks:
        cfg = policy.config
        ip = client_ip(view, cfg.trusted_proxies, unix=cfg.trust_unix_socket)
        if ip is None or not any(ip in net for net in context.networks):
            return _forbidden("API key is not allowed from this address")

    # 8. Type rules: origin-bound and embed keys.
    if context.origin_bound and not origin_allowed(origin_host(view), record.allowed_origins):
        return _forbidden("this key is not allowed from this origin")
    if record.type == "embed":
        refusal = _embed_refusal(record, match, method)
        if refusal is not None:
            return refusal
    elif source.startswith("embed-"):
        return _forbidden("only embed keys may be sent as an embed token")

    # 9. The key's org must be the one the path names.
    org_param = rule.org_param if rule is not None else None
    if match is not None and org_param and match.params.get(org_param) != record.org:
        return _forbidden("this key belongs to another organization")

    # 10. Scopes.
    if rule is not None and (rule.scopes or rule.scopes_any):
        missing = policy.missing_scopes(rule, context)
        if missing:
            return _insufficient_scope(missing, any_of=not rule.scopes)
    return None


def _lookup(cache: KeyCache, digest: str) -> Generator[Any, Any, KeyRecord | None]:
    cached = cache.get(digest)
    if cached is not KeyCache.MISSING:
        return cached  # type: ignore[return-value]
    record: KeyRecord | None = yield StoreCall("find_by_digest", (digest,))
    cache.put(digest, record)
    return record


def _lookup_imported(
    policy: Policy, cache: KeyCache, secret: str
) -> Generator[Any, Any, KeyRecord | None]:
    # An imported key is found by its digest once upgraded; before that by
    # its public lookup prefix and one slow hash check, then upgraded so the
    # slow hash never runs for it again.
    digest = policy.digest(secret)
    record = yield from _lookup(cache, digest)
    if record is not None:
        return record
    lookup = policy.import_lookup_prefix(secret)
    if lookup is None:
        return None
    candidates: list[KeyRecord] = yield StoreCall("find_imported", (lookup,))
    for candidate in candidates:
        if candidate.imported_hash and (yield VerifyImported(candidate.imported_hash, secret)):
            upgraded: KeyRecord = yield StoreCall(
                "update", (candidate.id, {"digest": digest, "imported_hash": None})
            )
            cache.put(digest, upgraded)
            yield Event("key.upgraded", upgraded)
            return upgraded
    return None


def _unauthorized(
    cfg: Config,
    auth: tuple[LimitSpec, ...],
    message: str,
    *,
    sent: bool = True,
    spent: LimitResult | None = None,
) -> Generator[Any, Any, Refusal]:
    """401, after spending a unit of the address's budget (unless ``spent`` already did).

    When nothing is left to spend, the answer is 429 instead: the address
    has spent its budget, which SPEC section 4 puts before everything else.
    """
    challenge = 'Bearer realm="api", error="invalid_token"' if sent else 'Bearer realm="api"'
    headers = [("WWW-Authenticate", challenge)]
    counted = spent
    if auth and counted is None:
        refusal, counted = yield from _count(cfg, LimitCall(auth), TOO_MANY_FAILURES)
        if refusal is not None:
            return refusal
    if counted is not None:
        # A counted response says how much of the budget is left (SPEC section 5);
        # Retry-After belongs to the 429 that follows, not to this 401.
        styles = cfg.limiter.headers
        headers += [h for h in rate_limit_headers(counted, styles) if h[0] != "Retry-After"]
    return Refusal(401, "UNAUTHORIZED", message, tuple(headers))


def _give_back(spent: LimitResult | None, auth: tuple[LimitSpec, ...]) -> Generator[Any, Any, None]:
    """Return a failed-auth unit spent before a lookup that could not be made.

    The store being down is no failed authentication; a refund the limiter
    cannot take is logged, never a second refusal.
    """
    if spent is None:
        return
    try:
        yield LimitCall((), refund=auth)
    except LimiterUnavailable:
        logger.warning("could not give back a failed-auth unit: limiter unavailable")


def _insufficient_scope(missing: tuple[str, ...], *, any_of: bool) -> Refusal:
    joined = ", ".join(missing)
    text = f"one of: {joined}" if any_of and len(missing) > 1 else joined
    return Refusal(
        403,
        "INSUFFICIENT_SCOPE",
        f"API key lacks the required scope: {text}",
        (("WWW-Authenticate", f'Bearer error="insufficient_scope", scope="{" ".join(missing)}"'),),
        {"required_scopes": list(missing)},
    )


def _embed_refusal(record: KeyRecord, match: RouteMatch | None, method: str) -> Refusal | None:
    if match is None or not match.rule.embed:
        return _forbidden("embed keys are accepted on embed routes only")
    if method != "GET":
        return _forbidden("embed keys may only read")
    for name, allowed in record.restrictions.items():
        value = match.params.get(name)
        if value is not None and value not in allowed:
            return _forbidden(f"this embed key does not allow this {name}")
    return None


def _count(
    cfg: Config, call: LimitCall, message: str
) -> Generator[Any, Any, tuple[Refusal | None, LimitResult | None]]:
    """Ask the limiter; a refusal if a limit is spent or the limiter is down (closed).

    ``(None, None)`` means the limiter is down and ``on_error: open`` lets the
    request through uncounted.
    """
    try:
        result: LimitResult = yield call
    except LimiterUnavailable:
        if cfg.limiter.on_error == "open":
            return None, None
        return _unavailable("the rate limiter is unavailable; try again shortly"), None
    if not result.admitted:
        return _limited(cfg, result, message), None
    return None, result


def _limited(cfg: Config, result: LimitResult, message: str) -> Refusal:
    """The 429 of a call the limiter refused: a guard's (the failed-auth budget) or a limit's."""
    return _too_many(cfg, result, TOO_MANY_FAILURES if result.guarded else message)


def _too_many(cfg: Config, result: LimitResult, message: str) -> Refusal:
    headers = rate_limit_headers(result, cfg.limiter.headers)
    state = result.tightest()
    wait = retry_after(state) if state else 1
    if not any(name == "Retry-After" for name, _ in headers):
        headers.append(("Retry-After", str(wait)))
    return Refusal(429, "RATE_LIMITED", message, tuple(headers), {"retry_after": wait})
