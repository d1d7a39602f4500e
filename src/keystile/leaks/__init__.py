"""Leaked keys revoked by themselves: an endpoint for GitHub secret scanning.

keystile's keys have what GitHub's secret-scanning partner program asks
for: a fixed prefix, alphabet and length, and a checksum
(``keystile keys patterns`` prints the regular expressions to register).
When GitHub finds one in a public repository it POSTs the match here;
each token that is one of your keys is revoked (``key.revoked``, reason
``leaked``) and audited as ``key.leaked`` with where it was found, which
the audit sinks, the webhook included, pass on to you and the key's owner.
``pip install 'keystile[leaks]'`` (ECDSA verification needs ``cryptography``).

Starlette / FastAPI::

    from starlette.routing import Mount
    from keystile import leaks

    app.routes.append(Mount("/github/secret-scanning", app=leaks.asgi_app(ks)))

Flask or any WSGI app::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from keystile import leaks

    app.wsgi_app = DispatcherMiddleware(
        app.wsgi_app, {"/github/secret-scanning": leaks.wsgi_app(ks)}
    )

The endpoint answers ``POST`` at the root of its mount point with GitHub's
feedback format: ``[{"token_hash", "token_type", "label"}]``, where
``true_positive`` means the token is, or was, one of your keys.

Security caveat: the signature is the only guard, and it is checked before
anything else is read; keep the default ``public_keys`` (GitHub's published
keys) unless you mirror them. The request is not an API-key request: if
``KeystileMiddleware`` runs in front of the mount point, mark it
``public: true`` in the route table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keystile.leaks._core import MAX_BODY, LeakEndpoint
from keystile.leaks._doors import LeaksASGIApp, LeaksWSGIApp
from keystile.leaks._public_keys import (
    GITHUB_KEYS_URL,
    GitHubPublicKeys,
    PublicKeys,
    PublicKeysSource,
    PublicKeysUnavailable,
)

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = [
    "GITHUB_KEYS_URL",
    "MAX_BODY",
    "GitHubPublicKeys",
    "LeaksASGIApp",
    "LeaksWSGIApp",
    "PublicKeysUnavailable",
    "asgi_app",
    "wsgi_app",
]


def _endpoint(ks: Keystile, public_keys: PublicKeysSource | None) -> LeakEndpoint:
    source = GitHubPublicKeys() if public_keys is None else public_keys
    return LeakEndpoint(ks, PublicKeys(source))


def asgi_app(ks: Keystile, *, public_keys: PublicKeysSource | None = None) -> LeaksASGIApp:
    """The leak-report endpoint as an ASGI app.

    ``public_keys``: a mapping of key identifier to PEM, or a callable
    returning one (called again, at most once a minute, for an identifier it
    does not know; in a worker thread, so the loop never waits). Default:
    ``GitHubPublicKeys()``, GitHub's published keys.
    """
    return LeaksASGIApp(_endpoint(ks, public_keys))


def wsgi_app(ks: Keystile, *, public_keys: PublicKeysSource | None = None) -> LeaksWSGIApp:
    """The leak-report endpoint as a WSGI callable; ``public_keys`` as for ``asgi_app``."""
    return LeaksWSGIApp(_endpoint(ks, public_keys))
