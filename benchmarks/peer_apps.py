"""The apps the peer benchmark serves, one per variant (BENCH_VARIANT env var).

Every variant answers GET /api/v1/events with the same small JSON body and,
where it authenticates, does the same work: read a key from a header, find
it, count it against a per-key moving-window limit in memory.

- bare-starlette, bare-fastapi: no auth at all (the baseline);
- noop-starlette: a pure ASGI middleware that only calls the app: the floor
  that any middleware pays for being one more layer;
- spin-starlette: a middleware that busy-waits ``BENCH_SPIN_US`` µs (12 by
  default, about keystile's in-process overhead) and calls the app: how
  many requests a second that much plain work costs under load;
- keystile-starlette, keystile-fastapi: KeystileMiddleware, SQLite store
  (cache hits), memory limiter (sliding-window counter), key and org limits
  and the failed-auth throttle;
- keystile-noheaders-starlette: the same with ``limiter.headers: []``: what
  the three ``X-RateLimit-*`` response headers cost the server (h11 checks
  and writes each one);
- handrolled-fastapi: the usual stack: FastAPI APIKeyHeader dependency, a
  SHA-256 digest looked up in a dict, slowapi keyed by the key (moving
  window, memory);
- keygate-fastapi: fastapi-keygate with its defaults (SQLite, memory limits).

BENCH_ENDPOINTS picks how the FastAPI variants write their endpoint and
dependencies: "sync" (plain ``def``, which FastAPI runs in its thread pool)
or "async" (``async def``, on the event loop, as FastAPI's and slowapi's own
examples write them). The Starlette variants are async either way.

The key is written to the file named by BENCH_KEY_FILE for the load generator.
No `from __future__ import annotations` here: FastAPI must resolve the
dependencies' annotations (Request, Depends) at runtime.
"""

import hashlib
import os
from pathlib import Path
from typing import Any

VARIANT = os.environ.get("BENCH_VARIANT", "bare-starlette")
ASYNC = os.environ.get("BENCH_ENDPOINTS", "sync") == "async"
WORKDIR = Path(os.environ.get("BENCH_DIR", "."))
KEY_FILE = Path(os.environ.get("BENCH_KEY_FILE", WORKDIR / "key.txt"))
BIG = "1000000000/minute"  # never refuses during a run, but every request is counted
BODY = {"events": [], "ok": True}


def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def events(request: Any) -> JSONResponse:
        return JSONResponse(BODY)

    return Starlette(routes=[Route("/api/v1/events", events)])


def _fastapi(dependency: Any = None) -> Any:
    from fastapi import Depends, FastAPI

    app = FastAPI()
    deps = [Depends(dependency)] if dependency else []
    if ASYNC:

        @app.get("/api/v1/events", dependencies=deps)
        async def events_async() -> dict[str, Any]:
            return BODY

    else:

        @app.get("/api/v1/events", dependencies=deps)
        def events() -> dict[str, Any]:
            return BODY

    return app


def _noop(app: Any) -> Any:
    class Passthrough:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    app.add_middleware(Passthrough)
    return app


def _spin(app: Any) -> Any:
    import time

    spin = float(os.environ.get("BENCH_SPIN_US", "12")) / 1e6

    class Spin:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            until = time.perf_counter() + spin
            while time.perf_counter() < until:
                pass
            await self.app(scope, receive, send)

    app.add_middleware(Spin)
    return app


def _keystile(app: Any, headers: tuple[str, ...] = ("x-ratelimit",)) -> Any:
    from keystile import Keystile
    from keystile.asgi import KeystileMiddleware

    ks = Keystile(
        {
            "store": f"sqlite:///{WORKDIR / 'keystile.db'}",
            # The config SPEC section 2 shows, as users run it (issue 13).
            "limiter": {
                "storage": "memory://",
                "strategy": "sliding-window-counter",
                "headers": list(headers),
            },
            "limits": {"key": BIG, "org": BIG, "failed_auth": "20/minute"},
            "routes": [{"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]}],
        },
        pepper=b"bench-pepper-0123456789abcdef",
    )
    KEY_FILE.write_text(ks.keys.create(name="bench", scopes=["events:read"], org="acme").secret)
    app.add_middleware(KeystileMiddleware, config=ks)
    return app


def _handrolled() -> Any:
    import secrets

    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.security import APIKeyHeader
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded

    key = "sk_" + secrets.token_urlsafe(32)
    KEY_FILE.write_text(key)
    keys = {hashlib.sha256(key.encode()).hexdigest(): {"id": "key_1", "org": "acme"}}
    header = APIKeyHeader(name="x-api-key", auto_error=False)

    def principal(request: Request, api_key: str | None = Depends(header)) -> dict[str, str]:
        found = keys.get(hashlib.sha256((api_key or "").encode()).hexdigest())
        if found is None:
            raise HTTPException(401, "invalid API key")
        request.state.api_key = found
        return found

    async def principal_async(
        request: Request, api_key: str | None = Depends(header)
    ) -> dict[str, str]:
        return principal(request, api_key)

    limiter = Limiter(
        key_func=lambda request: request.headers.get("x-api-key", ""),
        strategy="moving-window",
        storage_uri="memory://",
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    if ASYNC:

        @app.get("/api/v1/events")
        @limiter.limit(BIG)
        async def events_async(
            request: Request, key: dict[str, str] = Depends(principal_async)
        ) -> dict[str, Any]:
            return BODY

    else:

        @app.get("/api/v1/events")
        @limiter.limit(BIG)
        def events(request: Request, key: dict[str, str] = Depends(principal)) -> dict[str, Any]:
            return BODY

    return app


def _keygate() -> Any:
    from fastapi import Depends, FastAPI
    from keygate import KeyGate

    app = FastAPI()
    gate = KeyGate(app, db_url=f"sqlite:///{WORKDIR / 'keygate.db'}", default_per_minute=None)
    KEY_FILE.write_text(gate.create_key("acme", per_minute=10**9).key)

    if ASYNC:

        @app.get("/api/v1/events")
        async def events_async(key: Any = Depends(gate.require)) -> dict[str, Any]:
            return BODY

    else:

        @app.get("/api/v1/events")
        def events(key: Any = Depends(gate.require)) -> dict[str, Any]:
            return BODY

    return app


def build() -> Any:
    builders = {
        "bare-starlette": _starlette,
        "noop-starlette": lambda: _noop(_starlette()),
        "spin-starlette": lambda: _spin(_starlette()),
        "bare-fastapi": _fastapi,
        "keystile-starlette": lambda: _keystile(_starlette()),
        "keystile-noheaders-starlette": lambda: _keystile(_starlette(), headers=()),
        "keystile-fastapi": lambda: _keystile(_fastapi()),
        "handrolled-fastapi": _handrolled,
        "keygate-fastapi": _keygate,
    }
    return builders[VARIANT]()


app = build()
