"""The key dashboard mounted in a host app, behind either door, for tests.

The host's session is a header (``X-Session: user:org:role``; a cookie in
real life). ``Site`` sends raw form bodies, so that forged and broken forms
reach the dashboard exactly as written.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

from keystile import Keystile
from keystile.dashboard import asgi_app, wsgi_app

MOUNT = "/dashboard/api-keys"
ADMIN = "u_9:acme:admin"
MEMBER = "u_1:acme:member"
OTHER_MEMBER = "u_2:acme:member"
RIVAL = "u_5:rival:admin"
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "scopes": {
        "implies": {"admin": ["*"], "events:write": ["events:read"]},
        "destructive": ["servers:delete"],
        "known": ["events:read", "events:write", "results", "servers:read"],
        "default": ["events:read"],
    },
    "routes": [
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/api/v1/servers/{id}", "methods": ["DELETE"], "scopes": ["servers:delete"]},
    ],
    "default": "deny",
}
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}
FORM = "application/x-www-form-urlencoded"


def session_of(header: str | None) -> tuple[str, str, bool] | None:
    if not header:
        return None
    user, org, role = header.split(":")
    return user, org, role == "admin"


async def async_authenticate(request: Request) -> tuple[str, str, bool] | None:
    return session_of(request.headers.get("x-session"))


def sync_authenticate(request: WerkzeugRequest | Request) -> tuple[str, str, bool] | None:
    return session_of(request.headers.get("x-session"))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def value(self, name: str) -> str:
        """The value of the (first) input called ``name`` on the page."""
        found = re.search(rf'name="{re.escape(name)}"[^>]*value="([^"]*)"', self.text)
        assert found, f"no input {name!r} on the page"
        return html.unescape(found.group(1))

    def has(self, text: str) -> bool:
        return text in html.unescape(self.text)


def _not_found(environ: Any, start_response: Any) -> Any:
    return WerkzeugResponse("host app", status=418)(environ, start_response)


class Site:
    """The dashboard at ``MOUNT`` in a host app, through one door."""

    def __init__(self, kind: str, ks: Keystile, **options: Any) -> None:
        self.kind, self.ks = kind, ks
        options.setdefault("login_url", "/login")
        if kind == "asgi":
            self.app: Any = asgi_app(ks, authenticate=async_authenticate, **options)
            host = Starlette(routes=[Mount(MOUNT, app=self.app)])
            self.client: Any = TestClient(host, follow_redirects=False)
            self.origin = "http://testserver"
        else:
            self.app = wsgi_app(ks, authenticate=sync_authenticate, **options)
            self.client = Client(DispatcherMiddleware(_not_found, {MOUNT: self.app}))
            self.origin = "http://localhost"

    def request(
        self,
        method: str,
        path: str,
        *,
        session: str | None = ADMIN,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        url = MOUNT + path
        hdrs = dict(headers or {})
        if session:
            hdrs["X-Session"] = session
        if self.kind == "asgi":
            r = self.client.request(method, url, content=body, headers=hdrs)
            text, got = r.text, dict(r.headers)
        else:
            r = self.client.open(url, method=method, data=body, headers=hdrs)
            text, got = r.get_data(as_text=True), dict(r.headers)
        return Reply(r.status_code, {k.lower(): v for k, v in got.items()}, text)

    def get(self, path: str, session: str | None = ADMIN, **kw: Any) -> Reply:
        return self.request("GET", path, session=session, **kw)

    def token(self, session: str = ADMIN) -> str:
        return self.get("/new", session=session).value("csrf_token")

    def post(
        self,
        path: str,
        fields: dict[str, Any] | list[tuple[str, str]] | None = None,
        *,
        session: str | None = ADMIN,
        token: str | None = "fetch",
        origin: str | None = None,
        content_type: str | None = FORM,
        body: bytes | None = None,
    ) -> Reply:
        """POST a form; ``token="fetch"`` takes a fresh one from the page, ``None`` sends none."""
        pairs: list[tuple[str, str]] = []
        items = fields.items() if isinstance(fields, dict) else (fields or [])
        for name, value in items:
            for one in value if isinstance(value, list) else [value]:
                pairs.append((name, str(one)))
        if token == "fetch":
            token = self.token(session or ADMIN)
        if token is not None:
            pairs.append(("csrf_token", token))
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if origin is not None:
            headers["Origin"] = origin
        raw = urlencode(pairs).encode() if body is None else body
        return self.request("POST", path, session=session, headers=headers, body=raw)

    def create(self, session: str = ADMIN, **fields: Any) -> Reply:
        form_id = self.get("/new", session=session).value("form_id")
        data = {
            "form_id": form_id,
            "name": "CI upload",
            "kind": "bot",
            "permissions": "read-only",
            "expires": "never",
            **fields,
        }
        return self.post("/new", data, session=session)


def snapshot(ks: Keystile, org: str = "acme") -> list[tuple[Any, ...]]:
    """Every key of ``org`` as stored, to compare before and after a refused request."""
    return [
        (r.id, r.name, r.scopes, r.revoked_at, r.expires_at, r.allowed_ips)
        for r in ks.keys.list_all(org)
    ]


def secret_on(reply: Reply) -> str:
    found = re.search(r'id="api-key"[^>]*value="([^"]+)"', reply.text)
    assert found, "no API key field on the page"
    return found.group(1)
