"""FastAPI conveniences over the ASGI middleware.

Three, each optional::

    from keystile.asgi import KeystileMiddleware
    from keystile.fastapi import install_error_handler, require_scopes, with_public_docs

    app = FastAPI()
    app.add_middleware(KeystileMiddleware, config=with_public_docs(app, "keystile.yaml"))
    install_error_handler(app)

    @app.post("/api/v1/events/{event_id}/results")
    def upload(principal = Depends(require_scopes("results"))):
        return {"by": principal.id}

- ``with_public_docs(app, config)`` is the keystile config with FastAPI's
  own documentation routes (``/docs``, ``/redoc``, ``/openapi.json``) made
  public, so that ``default: deny`` does not refuse them.
- ``require_scopes(...)`` is a dependency that returns the principal the
  middleware verified and checks extra scopes in code. It declares the
  API-key security schemes, with those scopes, in the OpenAPI document, so
  ``/docs`` shows the lock and the "Authorize" button.
- ``install_error_handler(app)`` renders the dependency's refusals as
  keystile's JSON body (not FastAPI's ``{"detail": ...}``), and documents
  the 401, 403 and 429 answers, with that body's schema, on every operation
  that depends on ``require_scopes``.

The key is verified once, by ``KeystileMiddleware``; the dependency never
reads a secret. Security caveat: the dependency trusts only the principal
the middleware left in the request state. Used without the middleware (or
on a route the config lets through without a key) it cannot check a key,
so it answers 500 and logs why: the developer's mistake, never the
client's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer

from keystile.config import Config, RouteConfig, load_config
from keystile.pipeline import Principal

__all__ = ["KeystileHTTPException", "install_error_handler", "require_scopes", "with_public_docs"]

logger = logging.getLogger("keystile")

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="BearerKey", description="Authorization: Bearer <API key>"
)
header_scheme = APIKeyHeader(
    name="x-api-key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="x-api-key: <API key>",
)

# Set on each dependency that require_scopes makes: its scopes, for the
# OpenAPI document (FastAPI keeps the dependency callables in its routes).
_SCOPES_MARK = "__keystile_scopes__"


class KeystileHTTPException(HTTPException):
    """A refusal from a keystile dependency; carries keystile's JSON body."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.body = {"error": message, "code": code, "status": status, **extra}
        headers = {"Cache-Control": "no-store"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        elif code == "INSUFFICIENT_SCOPE":
            scopes = " ".join(extra.get("required_scopes", ()))
            headers["WWW-Authenticate"] = f'Bearer error="insufficient_scope", scope="{scopes}"'
        super().__init__(status_code=status, detail=message, headers=headers)


def require_scopes(*scopes: str) -> Callable[..., Principal]:
    """A dependency: the verified principal, refused with 403 unless it has ``scopes``.

    The scopes appear in the operation's security requirement in the
    OpenAPI document. Without a principal from ``KeystileMiddleware`` the
    dependency answers 500 and logs the reason (see the module docstring).
    """
    wanted = list(scopes)

    def dependency(
        request: Request,
        _bearer: Any = Security(bearer_scheme, scopes=wanted),
        _header: Any = Security(header_scheme, scopes=wanted),
    ) -> Principal:
        state = request.scope.get("state") or {}
        principal = state.get("api_key")
        if not isinstance(principal, Principal):
            _misconfigured(request, scopes, "api_key" in state)
        missing = principal.missing_scopes(*scopes)
        if missing:
            raise KeystileHTTPException(
                403,
                "INSUFFICIENT_SCOPE",
                f"API key lacks the required scope: {', '.join(missing)}",
                required_scopes=list(missing),
            )
        return principal

    setattr(dependency, _SCOPES_MARK, tuple(scopes))
    return dependency


def _misconfigured(request: Request, scopes: Sequence[str], seen: bool) -> NoReturn:
    """Answer 500 for a dependency that has no verified key to read, and say why.

    ``seen``: the middleware handled the request, but let it through
    without reading a key (the WSGI door and the ASGI door both leave
    ``api_key`` at None then); otherwise no middleware ever saw it.
    """
    where = f"require_scopes({', '.join(map(repr, scopes))}) on {request.method} {request.url.path}"
    if seen:
        logger.error(
            "%s: KeystileMiddleware let this request through without reading a key (the "
            "route is public: true, or unmatched under default: public); give the route a "
            "rule in the keystile config so that its key is verified",
            where,
        )
    else:
        logger.error(
            "%s: KeystileMiddleware is missing, so no key was verified; add it to this app: "
            "app.add_middleware(KeystileMiddleware, config=...)",
            where,
        )
    raise KeystileHTTPException(
        500, "INTERNAL_ERROR", "server misconfigured: the API key check is not in place"
    )


def install_error_handler(app: FastAPI) -> None:
    """Render keystile dependency refusals as keystile's JSON body, and document them.

    Each operation that depends on ``require_scopes`` gets the 401, 403 and
    429 responses in the OpenAPI document, with the body's schema
    (``KeystileRefusal``) and the headers that come with them. A response
    the operation already declares for one of those statuses is kept. The
    schema is of ``errors: json``; under ``errors: problem`` the middleware
    answers RFC 9457 bodies instead.
    """

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, KeystileHTTPException):  # registered for that class only
            raise exc
        return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(KeystileHTTPException, handler)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            _document_refusals(app, schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def with_public_docs(
    app: FastAPI, config: Config | Mapping[str, Any] | str | os.PathLike[str]
) -> Config:
    """``config`` (a path, a mapping or a ``Config``) with ``app``'s docs routes public.

    FastAPI serves its OpenAPI document at ``app.openapi_url``, Swagger UI
    at ``app.docs_url`` (and its OAuth2 redirect), ReDoc at
    ``app.redoc_url``; each that the app serves becomes a public ``GET``
    rule. A path the config already has a rule for keeps that rule: write
    one to protect the docs instead. ``keystile check`` and ``explain`` read
    the YAML alone and do not see these rules.
    """
    if not isinstance(config, (Config, Mapping, str, os.PathLike)):
        raise TypeError(
            "with_public_docs takes the config (a path, a mapping or a Config), not "
            f"{type(config).__name__}; for a shared engine, build it from the result: "
            "Keystile(with_public_docs(app, 'keystile.yaml'))"
        )
    cfg = config if isinstance(config, Config) else load_config(config)
    ruled = {_bare(rule.path) for rule in cfg.routes}
    extra = tuple(
        RouteConfig(path=path, methods=("GET",), public=True)
        for path in dict.fromkeys(_docs_paths(app))
        if _bare(path) not in ruled
    )
    return dataclasses.replace(cfg, routes=cfg.routes + extra) if extra else cfg


def _docs_paths(app: FastAPI) -> Iterator[str]:
    """The paths FastAPI's ``setup()`` serves its documentation on, as it decides them."""
    if not app.openapi_url:
        return  # no document: FastAPI serves neither UI
    yield app.openapi_url
    if app.docs_url:
        yield app.docs_url
        if app.swagger_ui_oauth2_redirect_url:
            yield app.swagger_ui_oauth2_redirect_url
    if app.redoc_url:
        yield app.redoc_url


def _bare(path: str) -> str:
    return path.rstrip("/") or "/"  # a trailing slash matches the same rule


# -- the OpenAPI document --------------------------------------------------------------

REFUSAL_SCHEMA: dict[str, Any] = {
    "title": "KeystileRefusal",
    "type": "object",
    "description": "keystile's refusal body (errors: json).",
    "required": ["error", "code", "status"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, for a person to read."},
        "code": {
            "type": "string",
            "enum": [
                "BAD_REQUEST",
                "UNAUTHORIZED",
                "INSUFFICIENT_SCOPE",
                "FORBIDDEN",
                "RATE_LIMITED",
                "UNAVAILABLE",
            ],
        },
        "status": {"type": "integer", "description": "The HTTP status, repeated."},
        "required_scopes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "With INSUFFICIENT_SCOPE: the scopes the key lacks.",
        },
        "retry_after": {
            "type": "integer",
            "description": "With RATE_LIMITED: seconds until the limit allows a request.",
        },
    },
}
_BODY_REF = {"$ref": "#/components/schemas/KeystileRefusal"}
_TEXT = {"type": "string"}
_INTEGER = {"type": "integer"}


def _refusals(scopes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The 401, 403 and 429 responses of an operation that needs ``scopes``."""

    def response(description: str, example: dict[str, Any], **headers: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": _BODY_REF, "example": example}},
        }
        if headers:
            out["headers"] = {name.replace("_", "-"): value for name, value in headers.items()}
        return out

    if scopes:
        needs = f" (this operation needs {', '.join(scopes)})"
        forbidden = {
            "error": f"API key lacks the required scope: {', '.join(scopes)}",
            "code": "INSUFFICIENT_SCOPE",
            "status": 403,
            "required_scopes": list(scopes),
        }
    else:
        needs = ""
        forbidden = {
            "error": "this key belongs to another organization",
            "code": "FORBIDDEN",
            "status": 403,
        }
    return {
        "401": response(
            "UNAUTHORIZED: no valid API key (none sent, or malformed, unknown, revoked or "
            "expired).",
            {"error": "API key required", "code": "UNAUTHORIZED", "status": 401},
            WWW_Authenticate={"schema": _TEXT, "description": "A Bearer challenge (RFC 6750)."},
        ),
        "403": response(
            f"INSUFFICIENT_SCOPE: the key lacks a scope{needs}, listed in required_scopes. "
            "FORBIDDEN: the key may not make this request (another organization, origin or "
            "address).",
            forbidden,
        ),
        "429": response(
            "RATE_LIMITED: a limit is spent; try again after retry_after seconds.",
            {
                "error": "rate limit exceeded",
                "code": "RATE_LIMITED",
                "status": 429,
                "retry_after": 30,
            },
            Retry_After={"schema": _INTEGER, "description": "Seconds to wait."},
            X_RateLimit_Limit={"schema": _INTEGER},
            X_RateLimit_Remaining={"schema": _INTEGER},
            X_RateLimit_Reset={"schema": _INTEGER, "description": "Unix seconds."},
        ),
    }


def _document_refusals(app: FastAPI, schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    documented = False
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        scopes = _required_scopes(route.dependant)
        if scopes is None:
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, response in _refusals(scopes).items():
                responses.setdefault(status, response)
            documented = True
    if documented:
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("KeystileRefusal", REFUSAL_SCHEMA)


def _required_scopes(dependant: Dependant) -> tuple[str, ...] | None:
    """Every scope the ``require_scopes`` dependencies of an operation ask for.

    None when the operation has no such dependency (it is not documented).
    """
    found: dict[str, None] | None = None
    pending = list(dependant.dependencies)
    while pending:
        current = pending.pop()
        scopes = getattr(current.call, _SCOPES_MARK, None)
        if scopes is not None:
            found = found if found is not None else {}
            found.update(dict.fromkeys(scopes))
        pending.extend(current.dependencies)
    return None if found is None else tuple(found)
