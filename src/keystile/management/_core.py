"""The key-management API, written once and free of I/O.

``KeyAPI.handle`` is a generator (a *flow*, as in ``keystile.lifecycle``):
it yields the I/O it needs (``Authenticate``, ``ReadBody``, ``KeyCall``)
and receives the answers. The ASGI door answers with awaits, the WSGI door
with plain calls; validation, the mapping to ``ks.keys``, the JSON shapes
and every error are decided here and nowhere else, so the two doors cannot
drift apart. A door that fails to answer an effect throws the exception
into the flow (``run_sync``/``run_async``), where keystile's own errors
become HTTP refusals and anything else propagates as a bug.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keystile._flow import adrive, drive
from keystile.errors import KeyConflict, KeyInputError, KeyNotFound, ServiceUnavailable
from keystile.lifecycle import check_name
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
    parse_object,
    present,
)
from keystile.pipeline import Refusal
from keystile.responses import render_refusal
from keystile.stores.base import KeyRecord

if TYPE_CHECKING:
    from keystile.engine import Keystile
    from keystile.lifecycle import KeyManager

__all__ = [
    "MAX_BODY",
    "Authenticate",
    "Effect",
    "KeyAPI",
    "KeyCall",
    "ReadBody",
    "Reply",
    "run_async",
    "run_sync",
]

logger = logging.getLogger("keystile.management")

MAX_BODY = 64 * 1024
"""Largest request body read (bytes): a key request is a few hundred bytes."""
ALLOWED = "GET, POST, PATCH, DELETE"
SAVE_NOW = "Save this API key now — it won't be shown again."
# Body fields whose JSON name differs from the key API's argument name.
_JSON_FIELD = {"expires_in_days": "expiresInDays", "rate_limit": "rateLimit"}
_CREATE_FIELDS = frozenset({"name", "scopes", "expiresInDays", "kind"})
_PATCH_FIELDS = frozenset({"name", "scopes"})


# -- effects: what the flow asks its door to do ----------------------------------


@dataclass(frozen=True)
class Authenticate:
    """Call the host's ``authenticate(request)``; answer with what it returns."""


@dataclass(frozen=True)
class ReadBody:
    """Read the request body, at most ``limit`` bytes (raise ``ApiError`` beyond)."""

    limit: int = MAX_BODY


@dataclass(frozen=True)
class KeyCall:
    """One ``ks.keys`` operation; the async door calls its ``a``-prefixed twin."""

    op: str  # create | list | get | update | revoke
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def run(self, keys: KeyManager) -> Any:
        return getattr(keys, self.op)(*self.args, **self.kwargs)

    async def arun(self, keys: KeyManager) -> Any:
        return await getattr(keys, "a" + self.op)(*self.args, **self.kwargs)


Effect = Authenticate | ReadBody | KeyCall


@dataclass(frozen=True)
class Reply:
    """A successful answer: status and JSON payload."""

    status: int
    payload: Mapping[str, Any]


Flow = Generator[Effect, Any, Reply | Refusal]


# -- the API ---------------------------------------------------------------------------


class KeyAPI:
    """The management API of one engine; built once per app, then stateless.

    What the config says (known scopes, the default scopes, the error
    format) is read here, once, never per request.
    """

    def __init__(self, ks: Keystile) -> None:
        self.ks = ks
        self.scopes = ScopeRules(ks.config.known_scopes(), ks.scopes)
        self.default_scopes = tuple(ks.config.scopes.default)
        self.error_mode = ks.config.errors

    def handle(self, request: ApiRequest) -> Flow:
        """Answer one request at the collection's path."""
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
        try:
            if request.method in JSON_BODY_METHODS:
                # Every POST and PATCH, whichever operation it names, before
                # any body is read or key looked up: see check_media_type.
                check_media_type(request.method, request.content_type)
            if request.method == "GET":
                records = yield KeyCall("list", (caller.org,))
                return Reply(200, {"data": [present(r) for r in records]})
            if request.method == "POST":
                return (yield from self._create(request, caller))
            if request.method == "PATCH":
                return (yield from self._update(request, caller))
            if request.method == "DELETE":
                target = key_id(request.query)
                yield from self._own_key(target, caller)
                yield KeyCall("revoke", (target,))
                return Reply(200, {"message": "API key revoked"})
            return Refusal(
                405,
                "METHOD_NOT_ALLOWED",
                "method not allowed; use " + ALLOWED,
                (("Allow", ALLOWED),),
            )
        except ApiError as err:
            return err.refusal
        except KeyInputError as err:
            field = _JSON_FIELD.get(err.field or "", err.field)
            return ApiError(400, "BAD_REQUEST", str(err), field=field).refusal
        except KeyNotFound:
            return NOT_FOUND
        except KeyConflict:
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

    def _create(self, request: ApiRequest, caller: Caller) -> Generator[Effect, Any, Reply]:
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
            },
        )
        data = {**present(new.record), "apiKey": new.secret}
        return Reply(201, {"data": data, "message": SAVE_NOW})

    def _update(self, request: ApiRequest, caller: Caller) -> Generator[Effect, Any, Reply]:
        target = key_id(request.query)
        body = yield from self._body(request, _PATCH_FIELDS)
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = check_name(body["name"])
        if "scopes" in body:
            changes["scopes"] = self.scopes.check(body["scopes"], caller, explicit=True)
        if not changes:
            raise bad_request("nothing to change: send name and/or scopes")
        yield from self._own_key(target, caller)
        record = yield KeyCall("update", (target,), changes)
        return Reply(200, {"data": present(record)})

    def _own_key(self, target: str, caller: Caller) -> Generator[Effect, Any, KeyRecord]:
        """The key ``target`` if ``caller`` may change it; the gate of every write to one key."""
        record: KeyRecord = yield KeyCall("get", (target,))
        # Another org's key answers exactly as an unknown one: ids must not
        # be probeable across tenants. Revoked and expired keys are gone too.
        if record.org != caller.org or not record.is_active(self.ks.now()):
            raise KeyNotFound(target)
        # Only then who may act on it: a 403 here tells nothing the caller's
        # own org listing does not already show.
        if not caller.may_change(record):
            raise ApiError(
                403, "FORBIDDEN", "only an admin or the key's creator or owner may change it"
            )
        return record

    def _body(
        self, request: ApiRequest, allowed: frozenset[str]
    ) -> Generator[Effect, Any, dict[str, Any]]:
        raw: bytes = yield ReadBody(MAX_BODY)
        return parse_object(raw, allowed, _CREATE_FIELDS)

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


# -- drivers: the only place sync and async differ ------------------------------------------


def run_sync(flow: Flow, keys: KeyManager, answer: Callable[[Effect], Any]) -> Reply | Refusal:
    """Drive a flow with blocking calls (``answer`` handles the door's own effects)."""

    def perform(effect: Effect) -> Any:
        return effect.run(keys) if isinstance(effect, KeyCall) else answer(effect)

    # Every exception goes back into the flow, which decides what becomes a refusal.
    return drive(flow, perform, Exception)


async def run_async(
    flow: Flow, keys: KeyManager, answer: Callable[[Effect], Awaitable[Any]]
) -> Reply | Refusal:
    """Drive a flow with awaits, so the event loop never blocks on the store."""

    async def perform(effect: Effect) -> Any:
        return await (effect.arun(keys) if isinstance(effect, KeyCall) else answer(effect))

    return await adrive(flow, perform, Exception)
