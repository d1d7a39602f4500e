"""``keystile demo``: the example Starlette app on embedded defaults, with a minted key.

Keys live in SQLite under ``./keystile-demo/``; the limiter is in memory. The
pepper is generated for the run unless ``KEYSTILE_PEPPER`` is set. The key
dashboard is mounted at ``/dashboard/api-keys`` with a demo session that
signs every visitor in as an admin of the org ``demo``: keep the demo on
loopback. Needs uvicorn and Jinja2 (``pip install 'keystile[demo]'``).
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from keystile.engine import Keystile

__all__ = ["DASHBOARD_PATH", "DEMO_CONFIG", "DEMO_SESSION", "build_app", "run"]

DASHBOARD_PATH = "/dashboard/api-keys"
DEMO_SESSION = ("demo-admin", "demo", True)
"""Who the demo's dashboard says every visitor is: (user, org, is_admin)."""

DEMO_CONFIG: dict[str, Any] = {
    "limiter": {"storage": "memory://", "strategy": "moving-window"},
    "limits": {"key": "100/minute"},
    "scopes": {"implies": {"admin": ["*"], "events:write": ["events:read"]}, "known": ["results"]},
    "routes": [
        {"path": "/health", "public": True},
        # The dashboard checks its own (demo) session, never an API key.
        {"path": DASHBOARD_PATH, "public": True},
        {"path": DASHBOARD_PATH + "/{page:path}", "public": True},
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {
            "path": "/api/v1/events/{event_id}",
            "methods": ["PUT", "PATCH"],
            "scopes": ["events:write"],
        },
        {
            "path": "/api/v1/events/{event_id}/results",
            "methods": ["POST"],
            "scopes_any": ["results", "admin"],
            "limit": "100/minute",
        },
    ],
    "default": "deny",
}


def build_app(ks: Keystile) -> Any:
    """The example app (as examples/starlette_app.py) behind ``ks``, with the dashboard."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from keystile.asgi import KeystileMiddleware
    from keystile.dashboard import asgi_app

    async def demo_session(request: Request) -> tuple[str, str, bool]:
        return DEMO_SESSION

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def list_events(request: Request) -> JSONResponse:
        key = request.state.api_key
        return JSONResponse({"events": [], "org": key.org, "key": key.id})

    async def update_event(request: Request) -> JSONResponse:
        return JSONResponse({"updated": request.path_params["event_id"]})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/v1/events", list_events),
            Route("/api/v1/events/{event_id}", update_event, methods=["PUT", "PATCH"]),
            Mount(DASHBOARD_PATH, app=asgi_app(ks, authenticate=demo_session)),
        ],
        middleware=[Middleware(KeystileMiddleware, config=ks)],
    )


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    directory: str = "keystile-demo",
    out: TextIO = sys.stdout,
) -> int:
    try:
        import jinja2  # noqa: F401  (the dashboard's templates)
        import uvicorn
    except ImportError:
        print(
            "keystile: error: the demo needs uvicorn and Jinja2: pip install 'keystile[demo]'",
            file=sys.stderr,
        )
        return 2
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    pepper = os.environ.get("KEYSTILE_PEPPER")
    if not pepper:
        pepper = secrets.token_urlsafe(32)
        print("demo: KEYSTILE_PEPPER is not set; generated a random pepper for this run", file=out)
    config = {**DEMO_CONFIG, "store": f"sqlite:///{(folder / 'demo.db').resolve()}"}
    ks = Keystile(config, pepper=pepper)
    key = ks.keys.create(name="demo reader", scopes=["events:read"], org=DEMO_SESSION[1])
    base = f"http://{host}:{port}"
    auth = shlex.quote(f"Authorization: Bearer {key.secret}")
    print(f"demo: keys in {folder / 'demo.db'}; minted {key.id} with scope events:read", file=out)
    print("demo: try these (the key is shown once):", file=out)
    print(f"curl -i {base}/api/v1/events -H {auth}    # 200", file=out)
    print(f"curl -i {base}/api/v1/events    # 401", file=out)
    print(f"curl -i -X PUT {base}/api/v1/events/1 -H {auth}    # 403", file=out)
    print(f"demo: manage the keys in a browser: {base}{DASHBOARD_PATH}/", file=out)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"demo: warning: the dashboard signs in everyone who reaches {host}:{port} "
            "as an admin; keep the demo on 127.0.0.1",
            file=out,
        )
    out.flush()
    try:
        uvicorn.run(build_app(ks), host=host, port=port, log_level="warning")
    finally:
        ks.close()
    return 0
