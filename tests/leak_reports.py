"""Signed secret-scanning reports, sent through the leak endpoint's ASGI or WSGI door.

``Signer`` plays GitHub: a P-256 key generated per test, its PEM under an
identifier, and ``sign(body)`` as GitHub signs (base64 of a DER ECDSA
signature over the raw body with SHA-256). ``LeakDoor`` sends raw requests,
as a server would hand them over, and can stream a body in chunks with or
without a declared length, counting what the app read.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keystile.leaks import asgi_app, wsgi_app

DOORS = ["asgi", "wsgi"]


class Signer:
    """A secret-scanning signing key, as GitHub holds one."""

    def __init__(self, identifier: str = "github-test-key-1") -> None:
        self.identifier = identifier
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.pem = (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> list[tuple[str, str]]:
        return [
            ("Github-Public-Key-Identifier", self.identifier),
            ("Github-Public-Key-Signature", self.sign(body)),
        ]


def report_body(*entries: dict[str, Any]) -> bytes:
    return json.dumps(list(entries)).encode()


def entry(
    token: str, *, type: str = "keystile_secret", url: str = "", source: str = "content"
) -> dict[str, Any]:
    return {
        "token": token,
        "type": type,
        "url": url or "https://github.com/acme/app/blob/0123abc/settings.py",
        "source": source,
    }


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    read: int  # body bytes the app took from the stream

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class LeakDoor:
    """The leak endpoint of one engine through one door, called with raw requests."""

    def __init__(self, kind: str, ks: Any, *, public_keys: Any = None, app: Any = None) -> None:
        self.kind, self.ks = kind, ks
        make = asgi_app if kind == "asgi" else wsgi_app
        self.app: Any = app if app is not None else make(ks, public_keys=public_keys)
        self._loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self.ks.arelease())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> LeakDoor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report(self, signer: Signer, *entries: dict[str, Any]) -> Reply:
        body = report_body(*entries)
        return self(body=body, headers=signer.headers(body))

    def __call__(
        self,
        method: str = "POST",
        path: str = "/",
        *,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        chunks: Iterable[bytes] | None = None,
        declare_length: bool = True,
        root: str = "",
    ) -> Reply:
        """One request; ``chunks`` streams the body (then ``declare_length`` says if
        a Content-Length goes with it)."""
        parts = list(chunks) if chunks is not None else [body]
        headers = list(headers or [])
        if declare_length and not any(n.lower() == "content-length" for n, _ in headers):
            headers.append(("Content-Length", str(sum(len(p) for p in parts))))
        if self.kind == "asgi":
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(self._asgi(method, root, path, headers, parts))
        return self._wsgi(method, root, path, headers, parts)

    async def _asgi(
        self, method: str, root: str, path: str, headers: list[tuple[str, str]], parts: list[bytes]
    ) -> Reply:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": root + path,
            "raw_path": (root + path).encode(),
            "root_path": root,
            "query_string": b"",
            "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            "client": ("192.0.2.10", 50000),
            "server": ("127.0.0.1", 443),
        }
        pending = list(parts)
        read = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal read
            if not pending:
                return {"type": "http.disconnect"}
            chunk = pending.pop(0)
            read += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = sent[0]
        hdrs = {n.decode("latin-1"): v.decode("latin-1") for n, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return Reply(start["status"], hdrs, body, read)

    def _wsgi(
        self, method: str, root: str, path: str, headers: list[tuple[str, str]], parts: list[bytes]
    ) -> Reply:
        stream = _CountingStream(parts)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": root,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "192.0.2.10",
            "wsgi.url_scheme": "https",
            "wsgi.input": stream,
            "wsgi.errors": io.StringIO(),
            # As servers that de-chunk a body for the app say so (gunicorn, uWSGI).
            "wsgi.input_terminated": True,
        }
        for name, value in headers:
            if name.lower() == "content-length":
                environ["CONTENT_LENGTH"] = value
            elif name.lower() == "content-type":
                environ["CONTENT_TYPE"] = value
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]}, {value}" if key in environ else value
        status: list[Any] = []

        def start_response(line: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
            status[:] = [int(line.split()[0]), {n.lower(): v for n, v in hdrs}]

        body = b"".join(self.app(environ, start_response))
        return Reply(status[0], status[1], body, stream.read_bytes)


class _CountingStream(io.RawIOBase):
    """``wsgi.input`` that hands out the parts in order and counts the bytes taken."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = [p for p in parts if p]
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.parts:
            return 0
        chunk = self.parts[0]
        size = min(len(buffer), len(chunk))
        buffer[:size] = chunk[:size]
        self.parts[0] = chunk[size:]
        if not self.parts[0]:
            self.parts.pop(0)
        self.read_bytes += size
        return size
