"""The key dashboard (SPEC section 9), written once and free of I/O.

``Dashboard.handle`` is a flow, as the management API's is: it yields the
I/O it needs (``Authenticate``, ``ReadBody``, ``KeyCall``, the same effects
``management._effects`` defines) and receives the answers. It decides
everything: which page a path is, who may see and change what, what each
form field means, and which page or redirect answers. The ASGI door answers
the effects with awaits, the WSGI door with plain calls; ``_render`` turns
the answer into HTML with the security headers. A door that fails to
answer throws the exception into the flow, where keystile's own errors
become pages (404, 409, 503) and anything else propagates as a bug.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keystile._flow import adrive, drive
from keystile.dashboard._answers import (
    Answer,
    Asset,
    Effect,
    Flow,
    Page,
    PageRequest,
    Redirect,
    Refused,
)
from keystile.dashboard._csrf import CsrfSigner, same_origin
from keystile.dashboard._forms import (
    MAX_FORM,
    BadForm,
    Form,
    Invalid,
    Permissions,
)
from keystile.dashboard._pages import Pages
from keystile.dashboard._render import Renderer
from keystile.errors import KeyNotFound, ServiceUnavailable
from keystile.management._effects import Authenticate, KeyCall, ReadBody
from keystile.management._input import ApiError, Caller, ScopeRules

if TYPE_CHECKING:
    from keystile.engine import Keystile

logger = logging.getLogger("keystile.dashboard")
NOT_FOUND = Refused(404, "Key not found", "There is no such key in your organization.")

__all__ = [
    "Asset",
    "Dashboard",
    "Page",
    "PageRequest",
    "Redirect",
    "Refused",
    "run_async",
    "run_sync",
]

FORM_MEDIA = "application/x-www-form-urlencoded"
_KEY_ID = re.compile(r"key_[A-Za-z0-9]{1,64}")
_ASSETS = frozenset({"dashboard.css", "dashboard.js", "favicon.svg"})
# Which methods each page answers (HEAD is read as GET).
_METHODS: Mapping[str, tuple[str, ...]] = {
    "list": ("GET",),
    "new": ("GET", "POST"),
    "key": ("GET", "POST"),
    "rotate": ("POST",),
    "revoke": ("GET", "POST"),
    "static": ("GET",),
}


def route(path: str) -> tuple[str, str | None] | None:
    """The page a path below the mount point names, with its key id or file name."""
    if path in ("", "/"):
        return "list", None
    # One trailing slash is the same page; "//" or a missing leading slash is none.
    parts = path[1:].removesuffix("/").split("/") if path.startswith("/") else []
    if len(parts) > 2 or "" in parts:
        return None
    if parts == ["new"]:
        return "new", None
    if len(parts) == 2 and parts[0] == "static":
        return ("static", parts[1]) if parts[1] in _ASSETS else None
    if not parts or not _KEY_ID.fullmatch(parts[0]):
        return None
    if len(parts) == 1:
        return "key", parts[0]
    return (parts[1], parts[0]) if parts[1] in ("rotate", "revoke") else None


@dataclass
class Dashboard:
    """The dashboard of one engine; built once per app, then stateless.

    ``secret`` signs the forms' CSRF tokens; by default it is derived from
    the pepper, so every process that shares the pepper accepts the forms
    the others served.
    """

    ks: Keystile
    login_url: str | None = None
    secret: bytes | None = None
    permissions: Permissions = field(init=False)
    csrf: CsrfSigner = field(init=False)
    pages: Pages = field(init=False)
    renderer: Renderer = field(init=False)

    def __post_init__(self) -> None:
        if self.login_url is not None and (
            not isinstance(self.login_url, str)
            or not self.login_url.startswith(("/", "http://", "https://"))
            or any(c in self.login_url for c in "\r\n\t ")
        ):
            raise ValueError(
                f"login_url must be a path such as '/login' or an http(s) URL, "
                f"not {self.login_url!r}"
            )
        rules = ScopeRules(self.ks.config.known_scopes(), self.ks.scopes)
        self.permissions = Permissions(rules, self.ks.scopes)
        self.csrf = CsrfSigner(self.secret or self.ks.derive_key("dashboard-csrf"))
        self.pages = Pages(self.ks, self.permissions)
        self.renderer = Renderer()

    def __repr__(self) -> str:
        return f"Dashboard(login_url={self.login_url!r})"  # never the secret

    def handle(self, request: PageRequest) -> Flow:
        """Answer one request below the mount point."""
        found = route(request.path)
        if found is None:
            return self.pages.error(request, None, 404, "Page not found", "There is no such page.")
        page, target = found
        method = "GET" if request.method == "HEAD" else request.method
        if method not in _METHODS[page]:
            allowed = ", ".join(_METHODS[page])
            return self.pages.error(
                request,
                None,
                405,
                "Method not allowed",
                f"This page answers {allowed} only.",
                (("Allow", allowed),),
            )
        if page == "static":
            return Asset(str(target))
        caller = Caller.of((yield Authenticate()))
        if caller is None:
            return self._sign_in(request)
        pages = self.pages.bound(request, caller, self._token(caller))
        try:
            if method == "GET":
                return (yield from pages.show(page, target))
            form = yield from self._posted(request, caller)
            return (yield from pages.act(page, target, form))
        except Refused as err:
            return pages.refused(err)
        except BadForm as err:
            return pages.refused(Refused(400, "The form could not be used", str(err)))
        except ApiError as err:  # the body was too large or ended early
            return pages.refused(Refused(err.refusal.status, "Bad request", err.refusal.message))
        except Invalid as err:  # a field with no form around it to show it
            message = " ".join(err.errors.values())
            return pages.refused(Refused(400, "The form could not be used", message))
        except KeyNotFound:
            # Another org's key answers exactly as an unknown one, as in the API.
            return pages.refused(NOT_FOUND)
        except ServiceUnavailable:
            logger.warning("key store unavailable during a dashboard request")
            return pages.refused(
                Refused(
                    503,
                    "Try again shortly",
                    "The key store is not answering right now. Try again in a moment.",
                    (("Retry-After", "1"),),
                )
            )

    def render(self, answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers (the security headers included) and body of an answer."""
        return self.renderer.render(answer)

    # -- the guards ------------------------------------------------------------------

    def _sign_in(self, request: PageRequest) -> Answer:
        """No session: to the host's login page, back here after; else a 401 page."""
        if self.login_url is None:
            return self.pages.error(
                request, None, 401, "Sign in", "Sign in to manage your API keys."
            )
        joiner = "&" if "?" in self.login_url else "?"
        return Redirect(f"{self.login_url}{joiner}next={quote(request.target, safe='/')}", 302)

    def _token(self, caller: Caller) -> str:
        return self.csrf.issue(caller.user, caller.org, now=self.ks.now().timestamp())

    def _posted(self, request: PageRequest, caller: Caller) -> Generator[Effect, Any, Form]:
        """The form of a POST that passed the cross-site checks, or ``Refused``.

        ``Origin`` first (no body is read for a page of another host), then
        the body, then its token: a refused POST changes nothing.
        """
        if not same_origin(request.origin, request.host):
            raise Refused(
                403,
                "Request refused",
                "This form was sent from another site. Open the page here and try again.",
            )
        media = (request.content_type or "").partition(";")[0].strip().lower()
        if media != FORM_MEDIA:
            raise Refused(
                415,
                "Unsupported form",
                "Send the form as a browser does (application/x-www-form-urlencoded).",
                (("Accept-Post", FORM_MEDIA),),
            )
        form = Form.parse((yield ReadBody(MAX_FORM)))
        token = form.one("csrf_token")
        if not self.csrf.valid(token, caller.user, caller.org, now=self.ks.now().timestamp()):
            raise Refused(
                403,
                "Request refused",
                "This form has expired or was not served to you. "
                "Go back, reload the page and try again.",
            )
        return form


# -- drivers: the only place sync and async differ ------------------------------------------


def run_sync(flow: Flow, ks: Keystile, answer: Callable[[Effect], Any]) -> Answer:
    """Drive a flow with blocking calls (``answer`` handles the door's own effects)."""

    def perform(effect: Effect) -> Any:
        return effect.run(ks) if isinstance(effect, KeyCall) else answer(effect)

    return drive(flow, perform, Exception)


async def run_async(flow: Flow, ks: Keystile, answer: Callable[[Effect], Awaitable[Any]]) -> Answer:
    """Drive a flow with awaits, so the event loop never blocks on the store."""

    async def perform(effect: Effect) -> Any:
        return await (effect.arun(ks) if isinstance(effect, KeyCall) else answer(effect))

    return await adrive(flow, perform, Exception)
