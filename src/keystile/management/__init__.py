"""The key-management HTTP API (SPEC section 6), mountable in ASGI and WSGI apps.

Your customers list, create, change, rotate and revoke their organization's
keys through it, and read each key's daily usage and audit trail, signed in
with *your* session: the API never accepts an API key as a credential (a
leaked key must not be able to mint its successors).

Starlette / FastAPI::

    from starlette.routing import Mount
    from keystile.management import asgi_app

    async def session_user(request):          # your session check
        session = await load_session(request)  # cookie + CSRF token, say
        if session is None or not csrf_ok(request, session):
            return None
        return session.user_id, session.org_id, session.is_org_admin

    app.routes.append(Mount("/admin", app=asgi_app(ks, authenticate=session_user)))
    # -> GET/POST/PATCH/DELETE /admin/api/v1/keys, POST .../rotate,
    #    GET .../usage and GET .../events

Flask or any WSGI app::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from keystile.management import wsgi_app

    app.wsgi_app = DispatcherMiddleware(
        app.wsgi_app, {"/admin": wsgi_app(ks, authenticate=flask_session_user)}
    )

Security caveat: ``authenticate`` is the only guard. It must check a real
session *and* CSRF (a token header or a same-site cookie policy), because
a browser attaches cookies to cross-site requests. It returns ``(user, org,
is_admin)`` or ``None``; ``org`` confines every operation to that tenant and
``is_admin`` alone allows wildcard and destructive scopes, and changes (or
rotations) of keys the caller neither created nor owns. POST and PATCH take only
``Content-Type: application/json`` (415 otherwise). If the host also
runs ``KeystileMiddleware`` in front of these paths, mark them
``public: true`` in the route table, or the middleware will demand a key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keystile.management._asgi import AsyncAuthenticate, build_asgi_app
from keystile.management._effects import MAX_BODY
from keystile.management._wsgi import KeysWSGIApp, SyncAuthenticate

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from keystile.engine import Keystile

__all__ = ["DEFAULT_PREFIX", "MAX_BODY", "KeysWSGIApp", "asgi_app", "wsgi_app"]

DEFAULT_PREFIX = "/api/v1/keys"


def asgi_app(
    ks: Keystile, authenticate: AsyncAuthenticate, *, prefix: str = DEFAULT_PREFIX
) -> Starlette:
    """The management API as a Starlette app; the collection is at ``prefix``.

    ``authenticate(request)`` gets a ``starlette.requests.Request`` and may be
    sync or ``async``; it returns ``(user, org, is_admin)`` or ``None`` (401).
    Handlers await the ``a``-prefixed key API, so the event loop never
    blocks on the store; a sync ``authenticate`` runs on the loop, so make it
    ``async`` if it does I/O.
    """
    return build_asgi_app(ks, authenticate, prefix)


def wsgi_app(
    ks: Keystile, authenticate: SyncAuthenticate, *, prefix: str = DEFAULT_PREFIX
) -> KeysWSGIApp:
    """The management API as a WSGI callable; the collection is at ``prefix``.

    ``authenticate(request)`` gets a ``werkzeug.wrappers.Request`` and returns
    ``(user, org, is_admin)`` or ``None`` (401).
    """
    return KeysWSGIApp(ks, authenticate, prefix)
