"""Flask conveniences over the WSGI middleware.

``current_api_key`` is the principal of the current request (``None`` on
public routes), read from ``environ["keystile.api_key"]``::

    from keystile.flask import current_api_key
    from keystile.wsgi import KeystileMiddleware

    app.wsgi_app = KeystileMiddleware(app.wsgi_app, config="keystile.yaml")

    @app.get("/api/v1/events")
    def events():
        return {"org": current_api_key.org}
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.local import LocalProxy

from keystile.pipeline import Principal
from keystile.wsgi import ENVIRON_KEY

__all__ = ["current_api_key", "get_api_key"]


def get_api_key() -> Principal | None:
    """The verified principal of the request being handled, if any."""
    principal: Any = request.environ.get(ENVIRON_KEY)
    return principal if isinstance(principal, Principal) else None


current_api_key: Principal = LocalProxy(get_api_key)  # type: ignore[assignment]
