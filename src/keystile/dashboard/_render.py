"""The flow's answer as HTTP: Jinja2 pages (autoescaped), the static files, the headers.

Every response, page, redirect, error or file, carries the same security
headers (SPEC 9): nothing is cached (a page may hold a secret), no other
host is asked for anything, no inline script or style runs, and no frame
may hold the page.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from keystile.dashboard._answers import Answer, Asset, Page, Redirect

__all__ = ["SECURITY_HEADERS", "Renderer"]

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


class Renderer:
    """Templates compiled and static files read once per process, then shared.

    Every dashboard app renders the same package templates, so building a
    second app (another mount, a test) costs nothing.
    """

    def __init__(self) -> None:
        self.env, self.assets = _load()

    def render(self, answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body of an answer."""
        headers = list(SECURITY_HEADERS)
        if isinstance(answer, Redirect):
            headers.append(("Location", answer.location))
            body = b""
            status = answer.status
        elif isinstance(answer, Asset):
            body = self.assets[answer.name]
            suffix = answer.name[answer.name.rfind(".") :]
            headers.append(("Content-Type", _TYPES[suffix]))
            status = 200
        else:
            body = self.page(answer).encode("utf-8")
            headers.append(("Content-Type", "text/html; charset=utf-8"))
            headers.extend(answer.headers)
            status = answer.status
        headers.append(("Content-Length", str(len(body))))
        return status, headers, body

    def page(self, page: Page) -> str:
        context: dict[str, Any] = {"status": page.status, **page.context}
        return str(self.env.get_template(page.template).render(context))


@functools.cache
def _load() -> tuple[Any, dict[str, bytes]]:
    try:
        import jinja2
    except ImportError:
        raise ImportError(
            "the key dashboard needs Jinja2: pip install 'keystile[dashboard]'"
        ) from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("keystile.dashboard", "templates"),
        # Every value is escaped, whatever the template's name: key names and
        # scopes are the customers' own text.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = lambda n: f"{n:,}"
    # Compiled now, so that a broken template fails when the app is built.
    for name in env.list_templates():
        env.get_template(name)
    static = resources.files("keystile.dashboard") / "static"
    assets = {item.name: item.read_bytes() for item in static.iterdir() if item.name[0] != "."}
    return env, assets
