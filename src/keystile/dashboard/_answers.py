"""What the dashboard's flow, its doors and its renderer say to each other.

A door turns its request into a ``PageRequest``; the flow answers with a
``Page``, a ``Redirect`` or an ``Asset`` (or ``Refused``, which becomes an
error page); the renderer turns that into status, headers and body.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from keystile.management._effects import Authenticate, KeyCall, ReadBody

__all__ = [
    "Answer",
    "Asset",
    "Effect",
    "Flow",
    "Page",
    "PageRequest",
    "Redirect",
    "Refused",
]

Effect = Authenticate | ReadBody | KeyCall
"""What the flow asks its door for: the management API's own effects."""


@dataclass(frozen=True)
class PageRequest:
    """What the flow needs of a request, whichever door it came through."""

    method: str
    path: str  # below the mount point: "" or "/..."
    base: str = ""  # the mount point as the browser asked for it, no trailing slash
    query: tuple[tuple[str, str], ...] = ()
    target: str = "/"  # the full path (and query) asked for: login's ?next=
    host: str | None = None
    origin: str | None = None
    content_type: str | None = None

    @property
    def href_base(self) -> str:
        """``base`` as it goes into a link (percent-encoded)."""
        return quote(self.base, safe="/")

    def arg(self, name: str) -> str | None:
        values = [v for k, v in self.query if k == name]
        return values[0] if len(values) == 1 else None


@dataclass(frozen=True)
class Page:
    """An HTML page: a template and what it shows."""

    status: int
    template: str
    context: Mapping[str, Any] = field(repr=False)  # it may hold a secret
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Redirect:
    location: str
    status: int = 303  # after a POST: the browser follows with a GET


@dataclass(frozen=True)
class Asset:
    """One of the dashboard's own static files (CSS, the script, the icon)."""

    name: str


Answer = Page | Redirect | Asset
Flow = Generator[Effect, Any, Answer]


class Refused(Exception):
    """A request refused as a whole (no field to blame): an error page with ``status``."""

    def __init__(
        self, status: int, title: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status, self.title, self.message, self.headers = status, title, message, headers
        super().__init__(message)
