"""The key dashboard (SPEC section 9): a web page where your users manage their keys.

Your customers list, create, change, rotate and revoke their organization's
API keys on a page served by keystile, signed in with *your* session. Mount
it in one line (``pip install 'keystile[dashboard]'``).

Starlette / FastAPI::

    from starlette.routing import Mount
    from keystile.dashboard import asgi_app

    async def session_user(request):          # your session check
        session = await load_session(request)
        if session is None:
            return None
        return session.user_id, session.org_id, session.is_org_admin

    app.routes.append(Mount("/dashboard/api-keys",
                            app=asgi_app(ks, authenticate=session_user, login_url="/login")))

Flask or any WSGI app::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from keystile.dashboard import wsgi_app

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {
        "/dashboard/api-keys": wsgi_app(ks, authenticate=flask_session_user, login_url="/login"),
    })

``authenticate(request)`` returns ``(user, org, is_admin)`` or ``None``; with
``None`` the page redirects to ``login_url?next=<the path asked for>`` (or
answers 401 without a ``login_url``). Every form carries a CSRF token bound
to that user and org, signed with ``secret`` (by default derived from the
pepper, so every process that shares the pepper accepts it); a POST that
``Origin`` says came from another host is refused.

Security caveat: ``authenticate`` decides who the visitor is, and
``is_admin`` alone allows wildcard and destructive permissions and changes
to other members' keys. Serve the dashboard over HTTPS only, and with a
session cookie that is ``Secure`` and ``HttpOnly``. If ``KeystileMiddleware``
wraps the same app, mark the mount point ``public: true`` in the route table
(``{path: "/dashboard/api-keys/{rest:path}", public: true}``), or the
middleware demands an API key before your session is looked at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keystile.dashboard._asgi import AsyncAuthenticate, DashboardASGIApp
from keystile.dashboard._core import Dashboard
from keystile.dashboard._wsgi import DashboardWSGIApp, SyncAuthenticate

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = ["DashboardASGIApp", "DashboardWSGIApp", "asgi_app", "wsgi_app"]


def asgi_app(
    ks: Keystile,
    authenticate: AsyncAuthenticate,
    *,
    login_url: str | None = None,
    secret: bytes | str | None = None,
) -> DashboardASGIApp:
    """The dashboard as an ASGI app, to mount (``Mount("/dashboard/api-keys", app=...)``).

    ``authenticate(request)`` gets a ``starlette.requests.Request`` and may be
    sync or ``async``; a sync one runs on the event loop, so make it
    ``async`` if it does I/O. Pages await the ``a``-prefixed key API.
    """
    return DashboardASGIApp(_dashboard(ks, login_url, secret), authenticate)


def wsgi_app(
    ks: Keystile,
    authenticate: SyncAuthenticate,
    *,
    login_url: str | None = None,
    secret: bytes | str | None = None,
) -> DashboardWSGIApp:
    """The dashboard as a WSGI callable, to mount (``DispatcherMiddleware``).

    ``authenticate(request)`` gets a ``werkzeug.wrappers.Request``.
    """
    return DashboardWSGIApp(_dashboard(ks, login_url, secret), authenticate)


def _dashboard(ks: Keystile, login_url: str | None, secret: bytes | str | None) -> Dashboard:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return Dashboard(ks, login_url=login_url, secret=key)
