"""FastAPI conveniences over the ASGI middleware.

``require_scopes`` is a dependency that returns the principal the middleware
verified, checks extra scopes in code, and declares the API-key security
schemes (Bearer and ``x-api-key``) in the OpenAPI document, so ``/docs``
shows the lock and the "Authorize" button::

    from keystile.fastapi import require_scopes

    @app.post("/api/v1/events/{event_id}/results")
    def upload(principal = Depends(require_scopes("results"))):
        return {"by": principal.id}

The key is verified once, by ``KeystileMiddleware``; the dependency never
reads a secret. Refusals raise ``HTTPException`` (FastAPI's own
``{"detail": ...}`` body); call ``install_error_handler(app)`` to render them
as keystile's JSON refusals instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer

from keystile.pipeline import Principal

__all__ = ["KeystileHTTPException", "install_error_handler", "require_scopes"]

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="BearerKey", description="Authorization: Bearer <API key>"
)
header_scheme = APIKeyHeader(
    name="x-api-key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="x-api-key: <API key>",
)


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
    """A dependency: the verified principal, refused with 403 unless it has ``scopes``."""

    def dependency(
        request: Request,
        _bearer: Any = Depends(bearer_scheme),
        _header: Any = Depends(header_scheme),
    ) -> Principal:
        principal = request.scope.get("state", {}).get("api_key")
        if not isinstance(principal, Principal):
            raise KeystileHTTPException(401, "UNAUTHORIZED", "API key required")
        missing = principal.missing_scopes(*scopes)
        if missing:
            raise KeystileHTTPException(
                403,
                "INSUFFICIENT_SCOPE",
                f"API key lacks the required scope: {', '.join(missing)}",
                required_scopes=list(missing),
            )
        return principal

    return dependency


def install_error_handler(app: FastAPI) -> None:
    """Render keystile dependency refusals as keystile's JSON body."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KeystileHTTPException)
        return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(KeystileHTTPException, handler)
