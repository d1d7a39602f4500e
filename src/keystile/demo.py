"""``keystile demo``: the example Starlette app on embedded defaults, with a minted key.

Keys live in SQLite under ``./keystile-demo/``; the limiter is in memory. The
pepper (the HMAC key of the stored digests) is ``KEYSTILE_PEPPER`` when set;
otherwise it is made once into ``./keystile-demo/pepper`` (mode 0600) and
read back on the next run, so the keys minted by one run still work in the
next. Every request prints one line (method, path, status, key id; never a
secret or a query string), so the curl lines show keystile deciding. The key
dashboard is mounted at ``/dashboard/api-keys`` with a demo session that
signs every visitor in as an admin of the org ``demo``: keep the demo on
loopback. Needs uvicorn and Jinja2 (``pip install 'keystile[demo]'``).
"""

from __future__ import annotations

import contextvars
import os
import secrets
import shlex
import stat
import sys
from pathlib import Path
from typing import Any, TextIO

from keystile.audit import AuditEvent
from keystile.engine import Keystile

__all__ = ["DASHBOARD_PATH", "DEMO_CONFIG", "DEMO_SESSION", "build_app", "demo_pepper", "run"]

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


PEPPER_FILE = "pepper"

# The key id a request was decided for, filled in by whoever learns it (the
# app for an admitted key, the audit callback for a refused one): each
# request's log middleware sets a fresh dict, and the ASGI middlewares and the
# audit callback run in that request's task.
_SEEN: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("keystile_demo_seen")


def demo_pepper(folder: Path, out: TextIO) -> str:
    """``KEYSTILE_PEPPER``, else the pepper kept in ``folder/pepper``, made (0600) on first use.

    A new pepper per run would orphan every key minted before it: their
    digests no longer match. The file is created with ``O_EXCL`` and mode
    0600 in one call, so it is never readable by others, not even briefly.
    """
    given = os.environ.get("KEYSTILE_PEPPER")
    if given:
        return given
    path = folder / PEPPER_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pepper = path.read_text(encoding="ascii").strip()
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            print(f"demo: warning: {path} is readable by others; chmod 600 it", file=out)
        print(f"demo: KEYSTILE_PEPPER is not set; using the pepper kept in {path}", file=out)
        return pepper
    pepper = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(pepper + "\n")
    print(f"demo: KEYSTILE_PEPPER is not set; made a pepper in {path} (mode 0600)", file=out)
    return pepper


class RequestLog:
    """Prints ``demo: METHOD PATH -> STATUS key_id`` once per HTTP request, to ``out``.

    Outermost, so it also sees the refusals keystile answers itself. The
    query string is left out: a key sent as a query parameter would be in it.
    """

    def __init__(self, app: Any, out: TextIO) -> None:
        self.app = app
        self.out = out

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: dict[str, str] = {}
        token = _SEEN.set(seen)

        async def noting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            _SEEN.reset(token)
            line = f"demo: {scope['method']} {scope['path']} -> {seen.get('status', '-')}"
            print(f"{line} {seen.get('key', '(no key)')}", file=self.out, flush=True)


class _NoteKey:
    """Inside KeystileMiddleware: notes the admitted key's id for the request's log line."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        key = (scope.get("state") or {}).get("api_key")
        seen = _SEEN.get(None)
        if key is not None and seen is not None:
            seen["key"] = key.id
        await self.app(scope, receive, send)


def _note_refused_key(event: AuditEvent) -> None:
    seen = _SEEN.get(None)
    if event.event == "request.refused" and event.key_id and seen is not None:
        seen["key"] = event.key_id


def build_app(ks: Keystile, out: TextIO | None = None) -> Any:
    """The example app (as examples/starlette_app.py) behind ``ks``, with the dashboard.

    With ``out``, each request prints a line there (see ``RequestLog``).
    """
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

    logging: list[Middleware] = []
    if out is not None:
        ks.audit.subscribe(_note_refused_key)
        logging = [Middleware(RequestLog, out=out)]
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/api/v1/events", list_events),
            Route("/api/v1/events/{event_id}", update_event, methods=["PUT", "PATCH"]),
            Mount(DASHBOARD_PATH, app=asgi_app(ks, authenticate=demo_session)),
        ],
        middleware=[*logging, Middleware(KeystileMiddleware, config=ks), Middleware(_NoteKey)],
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
    pepper = demo_pepper(folder, out)
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
    print("demo: each request prints a line: method, path, status, key id", file=out)
    print(f"demo: manage the keys in a browser: {base}{DASHBOARD_PATH}/", file=out)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"demo: warning: the dashboard signs in everyone who reaches {host}:{port} "
            "as an admin; keep the demo on 127.0.0.1",
            file=out,
        )
    out.flush()
    try:
        uvicorn.run(build_app(ks, out), host=host, port=port, log_level="warning")
    finally:
        ks.close()
    return 0
