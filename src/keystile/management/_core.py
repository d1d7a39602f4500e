"""The key-management API, written once and free of I/O.

``KeyAPI.handle`` is a generator (a *flow*, as in ``keystile.lifecycle``):
it yields the I/O it needs (the effects of ``_effects``: ``Authenticate``,
``ReadBody``, ``KeyCall``, ``AuditCall``) and receives the answers. The
ASGI door answers with awaits, the WSGI door with plain calls; validation,
the mapping to ``ks.keys`` and ``ks.audit``, and every error are decided
here and nowhere else (the JSON shapes in ``_output``), so the two doors
cannot drift apart. A door that fails to answer an effect throws the
exception into the flow (``run_sync``/``run_async``), where keystile's own
errors become HTTP refusals and anything else propagates as a bug.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from keystile.errors import KeyConflict, KeyInputError, KeyNotFound, ServiceUnavailable
from keystile.lifecycle import check_allowed_ips, check_grace, check_name
from keystile.management._effects import (
    MAX_BODY,
    AuditCall,
    Authenticate,
    Effect,
    Flow,
    KeyCall,
    ReadBody,
    Reply,
)
from keystile.management._input import (
    JSON_BODY_METHODS,
    NOT_FOUND,
    ApiError,
    ApiRequest,
    Caller,
    ScopeRules,
    bad_request,
    check_media_type,
    key_id,
    optional_key_id,
    parse_object,
    query_days,
)
from keystile.management._output import present, present_day, present_event, total_of
from keystile.pipeline import Refusal
from keystile.responses import render_refusal
from keystile.stores.base import KeyRecord

if TYPE_CHECKING:
    from keystile.audit import AuditEvent
    from keystile.engine import Keystile
    from keystile.lifecycle import NewKey
    from keystile.usage import UsageDay

__all__ = ["KeyAPI"]

logger = logging.getLogger("keystile.management")

SAVE_NOW = "Save this API key now — it won't be shown again."
MOST_DAYS = 90
"""The longest look-back of a read over HTTP: ``usage.retention``'s default, so every
day asked for is one the store still keeps (Python and the CLI allow more)."""
RECENT_DAYS = 30  # a key object's requests30d
# The methods each endpoint takes (ENDPOINTS: "" is the collection itself).
ALLOWED = {"": "GET, POST, PATCH, DELETE", "rotate": "POST", "usage": "GET", "events": "GET"}
# Body fields whose JSON name differs from the key API's argument name.
_JSON_FIELD = {
    "expires_in_days": "expiresInDays",
    "rate_limit": "rateLimit",
    "grace": "gracePeriod",
}
_CREATE_FIELDS = frozenset({"name", "scopes", "expiresInDays", "kind", "allowedIps"})
_PATCH_FIELDS = frozenset({"name", "scopes", "allowedIps"})
_ROTATE_FIELDS = frozenset({"gracePeriod"})
Operation = Generator[Effect, Any, Reply]


# -- the API ---------------------------------------------------------------------------


class KeyAPI:
    """The management API of one engine; built once per app, then stateless.

    What the config says (known scopes, the default scopes, the error
    format, whether usage is counted and the audit trail kept) is read
    here, once, never per request.
    """

    def __init__(self, ks: Keystile) -> None:
        self.ks = ks
        self.scopes = ScopeRules(ks.config.known_scopes(), ks.scopes)
        self.default_scopes = tuple(ks.config.scopes.default)
        self.error_mode = ks.config.errors
        self.counting = ks.counting
        self.audit_kept = ks.config.audit.store
        self.operations: dict[tuple[str, str], Callable[[ApiRequest, Caller], Operation]] = {
            ("", "GET"): self._read,
            ("", "POST"): self._create,
            ("", "PATCH"): self._update,
            ("", "DELETE"): self._revoke,
            ("rotate", "POST"): self._rotate,
            ("usage", "GET"): self._usage,
            ("events", "GET"): self._events,
        }

    def handle(self, request: ApiRequest) -> Flow:
        """Answer one request at one of the endpoints (``request.endpoint``)."""
        caller = Caller.of((yield Authenticate()))
        if caller is None:
            # The session is the only way in: a key must not manage keys,
            # or one leaked key could mint itself successors.
            message = (
                "API keys cannot manage API keys; sign in"
                if request.carries_api_key
                else "Sign in to manage API keys"
            )
            return Refusal(401, "UNAUTHORIZED", message)
        operation = self.operations.get((request.endpoint, request.method))
        if operation is None:
            allowed = ALLOWED[request.endpoint]
            return Refusal(
                405,
                "METHOD_NOT_ALLOWED",
                "method not allowed; use " + allowed,
                (("Allow", allowed),),
            )
        try:
            if request.method in JSON_BODY_METHODS:
                # Every POST and PATCH, whichever operation it names, before
                # any body is read or key looked up: see check_media_type.
                check_media_type(request.method, request.content_type)
            return (yield from operation(request, caller))
        except ApiError as err:
            return err.refusal
        except KeyInputError as err:
            field = _JSON_FIELD.get(err.field or "", err.field)
            return ApiError(400, "BAD_REQUEST", str(err), field=field).refusal
        except KeyNotFound:
            return NOT_FOUND
        except KeyConflict:  # create's one user key per user and org (rotate has its own)
            return Refusal(
                409,
                "CONFLICT",
                "you already have a personal API key in this "
                "organization; revoke it first, or create a bot key",
            )
        except ServiceUnavailable:
            logger.warning("key store unavailable during a management request")
            return Refusal(
                503,
                "UNAVAILABLE",
                "the key store is unavailable; retry shortly",
                (("Retry-After", "1"),),
            )

    # -- operations ------------------------------------------------------------------

    def _read(self, request: ApiRequest, caller: Caller) -> Operation:
        """``GET``: the org's active keys, or with ``?id=`` one of them.

        The counts are read first: reading them flushes this process's
        pending writes, so ``lastUsedAt`` below is as fresh as ``requests30d``.
        """
        target = optional_key_id(request.query)
        if target is not None:
            # (An unknown key is 404 here already; another org's is 404
            # below, its count never shown.)
            count = yield from self._recent(target)
            record = yield from self._org_key(target, caller)
            return Reply(200, {"data": present(record, count)})
        totals: dict[str, int] | None = None
        if self.counting:
            # One read for the whole list, never one per key.
            totals = yield KeyCall("usage_totals", (caller.org, RECENT_DAYS))
        records: list[KeyRecord] = yield KeyCall("list", (caller.org,))
        shown = [present(r, None if totals is None else totals.get(r.id, 0)) for r in records]
        return Reply(200, {"data": shown})

    def _create(self, request: ApiRequest, caller: Caller) -> Operation:
        body = yield from self._body(request, _CREATE_FIELDS)
        if "name" not in body:
            raise bad_request("name is required", "name")
        name = check_name(body["name"])
        scopes = self.scopes.check(
            body.get("scopes", self.default_scopes), caller, explicit="scopes" in body
        )
        days = body.get("expiresInDays")
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365
        ):
            raise bad_request("expiresInDays must be a whole number from 1 to 365", "expiresInDays")
        kind = body.get("kind", "bot")
        if kind not in ("bot", "user"):
            raise bad_request("kind must be 'bot' or 'user'", "kind")
        ips = _allowed_ips(body.get("allowedIps"))
        new = yield KeyCall(
            "create",
            (name,),
            {
                "scopes": scopes,
                "org": caller.org,
                "kind": kind,
                "created_by": caller.user,
                "user": caller.user if kind == "user" else None,
                "expires_in_days": days,
                "allowed_ips": ips,
            },
        )
        return self._made(new)

    def _update(self, request: ApiRequest, caller: Caller) -> Operation:
        target = key_id(request.query)
        body = yield from self._body(request, _PATCH_FIELDS)
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = check_name(body["name"])
        if "scopes" in body:
            changes["scopes"] = self.scopes.check(body["scopes"], caller, explicit=True)
        if "allowedIps" in body:
            changes["allowed_ips"] = _allowed_ips(body["allowedIps"])
        if not changes:
            raise bad_request("nothing to change: send name, scopes and/or allowedIps")
        yield from self._own_key(target, caller)
        count = yield from self._recent(target)
        record = yield KeyCall("update", (target,), changes)
        return Reply(200, {"data": present(record, count)})

    def _revoke(self, request: ApiRequest, caller: Caller) -> Operation:
        target = key_id(request.query)
        yield from self._own_key(target, caller)
        yield KeyCall("revoke", (target,))
        return Reply(200, {"message": "API key revoked"})

    def _rotate(self, request: ApiRequest, caller: Caller) -> Operation:
        """``POST rotate?id=``: a successor, shown once; the old key lives ``gracePeriod``."""
        target = key_id(request.query)
        # The body is optional: `{}`, or nothing at all, rotates with no grace.
        body = yield from self._body(request, _ROTATE_FIELDS, optional=True)
        grace = body.get("gracePeriod")
        try:
            if grace is not None and not isinstance(grace, str):
                raise TypeError(grace)
            check_grace(grace)
        except (TypeError, KeyInputError):
            raise bad_request(
                "gracePeriod must be a duration from '0s' to '365d', such as '24h'",
                "gracePeriod",
            ) from None
        yield from self._own_key(target, caller)
        try:
            new = yield KeyCall("rotate", (target,), {"grace": grace})
        except KeyConflict as err:
            # The key is in its grace with an active successor (the store
            # decides, so of two racing rotations one gets this): its
            # message names the successor to rotate instead, never a secret.
            raise ApiError(409, "CONFLICT", str(err)) from None
        return self._made(new)

    def _usage(self, request: ApiRequest, caller: Caller) -> Operation:
        """``GET usage?id=&days=``: one entry per UTC day, oldest first, zeros included."""
        target = key_id(request.query)
        days = query_days(request.query, RECENT_DAYS, MOST_DAYS)
        # Revoked and expired keys answer too: their last weeks are what one
        # reads after a leak.
        yield from self._org_key(target, caller, active=False)
        usage: list[UsageDay] = yield KeyCall("usage", (target, days))
        return Reply(200, {"data": [present_day(day) for day in usage]})

    def _events(self, request: ApiRequest, caller: Caller) -> Operation:
        """``GET events?id=&days=``: the org's audit trail (or one key's), newest first."""
        target = optional_key_id(request.query)
        days = query_days(request.query, 7, MOST_DAYS)
        if not self.audit_kept:
            raise ApiError(
                501,
                "NOT_IMPLEMENTED",
                "this server does not keep the audit trail (audit.store is false)",
            )
        if target is not None:
            yield from self._org_key(target, caller, active=False)
        events: list[AuditEvent] = yield AuditCall("events", (caller.org, target, days))
        return Reply(200, {"data": [present_event(e) for e in events]})

    # -- shared steps ----------------------------------------------------------------

    def _org_key(
        self, target: str, caller: Caller, *, active: bool = True
    ) -> Generator[Effect, Any, KeyRecord]:
        """The key ``target`` of the caller's org (and ``active``, unless told otherwise)."""
        record: KeyRecord = yield KeyCall("get", (target,))
        # Another org's key answers exactly as an unknown one: ids must not
        # be probeable across tenants. Revoked and expired keys are gone too,
        # except to the reads of what a key did (usage, events).
        if record.org != caller.org or (active and not record.is_active(self.ks.now())):
            raise KeyNotFound(target)
        return record

    def _own_key(self, target: str, caller: Caller) -> Generator[Effect, Any, KeyRecord]:
        """The key ``target`` if ``caller`` may change it; the gate of every write to one key."""
        record = yield from self._org_key(target, caller)
        # Only then who may act on it: a 403 here tells nothing the caller's
        # own org listing does not already show.
        if not caller.may_change(record):
            raise ApiError(
                403, "FORBIDDEN", "only an admin or the key's creator or owner may change it"
            )
        return record

    def _recent(self, target: str) -> Generator[Effect, Any, int | None]:
        """A key's ``requests30d`` (``None`` if usage is not counted); flushes pending writes."""
        if not self.counting:
            return None
        usage: list[UsageDay] = yield KeyCall("usage", (target, RECENT_DAYS))
        return total_of(usage)

    def _made(self, new: NewKey) -> Reply:
        """A key just created or rotated: its secret, shown this once, and nothing served yet."""
        data = {**present(new.record, 0 if self.counting else None), "apiKey": new.secret}
        return Reply(201, {"data": data, "message": SAVE_NOW})

    def _body(
        self, request: ApiRequest, allowed: frozenset[str], *, optional: bool = False
    ) -> Generator[Effect, Any, dict[str, Any]]:
        raw: bytes = yield ReadBody(MAX_BODY)
        if optional and not raw.strip():
            return {}
        # A field of another operation's body is named as one that cannot change.
        return parse_object(raw, allowed, _CREATE_FIELDS | allowed)

    # -- output ------------------------------------------------------------------------

    def render(self, answer: Reply | Refusal) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body; every answer is ``no-store`` (some hold a secret)."""
        if isinstance(answer, Refusal):
            return render_refusal(answer, self.error_mode)
        body = json.dumps(answer.payload, separators=(",", ":")).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        return answer.status, headers, body


def _allowed_ips(value: Any) -> tuple[str, ...]:
    """``allowedIps`` as the lifecycle checks it, the error naming the JSON field."""
    if value is None:
        return ()
    try:
        return check_allowed_ips(value)
    except KeyInputError as exc:
        raise bad_request(str(exc), "allowedIps") from None
