"""Send one raw request through the ASGI or the WSGI middleware, the same way.

Requests are built by hand (no HTTP client in between) so that hostile
paths and repeated headers reach the middleware exactly as a server would
hand them over.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.wsgi import ENVIRON_KEY
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware

DOORS = ["asgi", "wsgi"]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seen: dict[str, Any] = field(default_factory=dict)  # what the app saw

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _principal_id(principal: Any) -> str | None:
    return None if principal is None else principal.id


async def echo_asgi(scope: Any, receive: Any, send: Any) -> None:
    principal = scope.get("state", {}).get("api_key")
    body = json.dumps(
        {
            "key": _principal_id(principal),
            "query": scope.get("query_string", b"").decode(),
            "headers": sorted(n.decode() for n, _ in scope.get("headers", ())),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps(
        {
            "key": _principal_id(environ.get(ENVIRON_KEY)),
            "query": environ.get("QUERY_STRING", ""),
            "headers": sorted(
                k[5:].replace("_", "-").lower() for k in environ if k.startswith("HTTP_")
            ),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Door:
    """One middleware over an echo app, called with raw requests."""

    def __init__(self, kind: str, engine: Any) -> None:
        self.kind = kind
        self.engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        if kind == "asgi":
            self.app: Any = ASGIMiddleware(echo_asgi, engine)
        else:
            self.app = WSGIMiddleware(echo_wsgi, engine)

    def close(self) -> None:
        """Close the connections the door's event loop opened (as lifespan shutdown does)."""
        if self._loop is not None:
            self._loop.run_until_complete(self.engine.arelease())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Door:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(
        self,
        method: str,
        path: bytes | str,
        headers: list[tuple[str, str]] | None = None,
        *,
        query: str = "",
        client: str | None = "127.0.0.1",  # None: a Unix socket peer, with no address
        key: str | None = None,
        root: str = "",
    ) -> Reply:
        """Send one request; ``root`` mounts the app under that prefix (raw, as sent).

        With ``root``, ``path`` is the path under the mount point: the ASGI
        door sends ``root_path`` and a ``path`` that includes it, as the
        ASGI spec says; the WSGI door sends ``SCRIPT_NAME`` and ``PATH_INFO``.
        """
        raw = path.encode("latin-1") if isinstance(path, str) else path
        headers = list(headers or [])
        if key is not None:
            headers.append(("Authorization", f"Bearer {key}"))
        if self.kind == "asgi":
            if self._loop is None:
                # One loop for the door's life, as a server has: the async
                # store's pooled connections belong to it.
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(
                self._asgi(method, raw, headers, query, client, root)
            )
        return self._wsgi(method, raw, headers, query, client, root)

    async def _asgi(
        self,
        method: str,
        raw: bytes,
        headers: list[tuple[str, str]],
        query: str,
        client: str | None,
        root: str = "",
    ) -> Reply:
        full = root.encode("latin-1") + raw
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote_to_bytes(full).decode("utf-8", "replace"),
            "raw_path": full,
            "root_path": unquote_to_bytes(root).decode("utf-8", "replace"),
            "query_string": query.encode("latin-1"),
            "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            "client": None if client is None else (client, 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        hdrs = {n.decode("latin-1"): v.decode("latin-1") for n, v in start["headers"]}
        return Reply(start["status"], hdrs, body, _seen(body, start["status"]))

    def burst(self, requests: list[dict[str, Any]]) -> list[Reply]:
        """Send every request at once: threads through WSGI, tasks on one loop through ASGI.

        Each item holds ``__call__``'s arguments (``method`` and ``path``
        default to ``GET /api/v1/events``).
        """
        calls = [
            (
                r.get("method", "GET"),
                str(r.get("path", "/api/v1/events")).encode("latin-1"),
                list(r.get("headers", []))
                + ([("Authorization", f"Bearer {r['key']}")] if r.get("key") else []),
                str(r.get("query", "")),
                r.get("client", "127.0.0.1"),
                str(r.get("root", "")),
            )
            for r in requests
        ]
        if self.kind == "asgi":
            if self._loop is None:
                self._loop = asyncio.new_event_loop()

            async def gather() -> list[Reply]:
                return list(await asyncio.gather(*(self._asgi(*c) for c in calls)))

            return self._loop.run_until_complete(gather())
        start = threading.Barrier(len(calls))

        def one(call: tuple[str, bytes, list[tuple[str, str]], str, str | None, str]) -> Reply:
            start.wait()
            return self._wsgi(*call)

        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(one, calls))

    def _wsgi(
        self,
        method: str,
        raw: bytes,
        headers: list[tuple[str, str]],
        query: str,
        client: str | None,
        root: str = "",
    ) -> Reply:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": unquote_to_bytes(root).decode("latin-1"),
            "PATH_INFO": unquote_to_bytes(raw).decode("latin-1"),
            "RAW_URI": root + raw.decode("latin-1") + (f"?{query}" if query else ""),
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": client or "",  # as servers on a Unix socket leave it
            "wsgi.url_scheme": "http",
        }
        for name, value in headers:
            key = "HTTP_" + name.upper().replace("-", "_")
            # As WSGI servers do: a repeated header arrives joined by commas.
            environ[key] = f"{environ[key]}, {value}" if key in environ else value
        status: list[Any] = []

        def start_response(line: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            status[:] = [int(line.split()[0]), {n.lower(): v for n, v in hdrs}]

        body = b"".join(self.app(environ, start_response))
        return Reply(status[0], status[1], body, _seen(body, status[0]))


def _seen(body: bytes, status: int) -> dict[str, Any]:
    if status != 200:
        return {}
    try:
        return dict(json.loads(body))
    except ValueError:
        return {}


# -- a request as the server's own dict, to look at after the call ---------------------
#
# ``Door`` hides the scope and the environ it builds; a test of what keystile
# leaves in the server's own dict (which the server's access log reads) builds
# them with these and keeps them.


def scope_for(target: bytes, headers: list[tuple[str, str]], query: str = "") -> dict[str, Any]:
    """An HTTP GET scope whose ``raw_path`` is ``target`` (and ``path`` too, undecoded)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target.decode("latin-1"),
        "raw_path": target,
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def environ_for(path: str, headers: list[tuple[str, str]], query: str = "") -> dict[str, Any]:
    """A GET environ with ``RAW_URI`` and ``REQUEST_URI`` as gunicorn and uWSGI set them."""
    target = path + (f"?{query}" if query else "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": target,
        "REQUEST_URI": target,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }
    for name, value in headers:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def call_asgi(app: Any, scope: dict[str, Any]) -> int:
    """Run ``app`` on ``scope`` (which the test keeps); the response status."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return statuses[0]


def call_wsgi(app: Any, environ: dict[str, Any]) -> int:
    """Run ``app`` on ``environ`` (which the test keeps); the response status."""
    statuses: list[int] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(int(line.split()[0]))

    b"".join(app(environ, start_response))
    return statuses[0]


def recording_apps(seen: dict[str, Any]) -> tuple[Any, Any]:
    """An ASGI and a WSGI app that note everything they were handed."""

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        seen["query"] = scope["query_string"].decode("latin-1")
        seen["text"] = repr({k: v for k, v in scope.items() if k != "state"})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        seen["query"] = environ["QUERY_STRING"]
        seen["text"] = repr(environ)
        start_response("200 OK", [])
        return [b""]

    return asgi_app, wsgi_app
