"""The Django middleware (SPEC section 5): it hides what the other doors hide.

On ``embed`` routes the embed token (``?token=``, ``X-Embed-Token``), and
everywhere the reserved ``X-Keystile-*`` headers, are gone from what the view
sees and from the server's own request, under WSGI (``request.META`` is the
environ) and under ASGI (the scope), even when an earlier middleware had
already read ``request.GET`` or ``request.headers``.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import PEPPER
from tests.doors import scope_for

WIDGET = "/embed/friday-night-spring-2026/standings"
ORIGIN = "https://rhumby.example"
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "routes": [{"path": "/embed/{event}/{view}", "methods": ["GET"], "embed": True}],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Keystile]:
    ks = Keystile(CONFIG, pepper=PEPPER)
    yield ks
    ks.close()


@pytest.fixture(scope="module")
def embed(engine: Keystile) -> str:
    return str(
        engine.keys.create(
            name="widget", type="embed", org="acme", allowed_origins=["rhumby.example"]
        ).secret
    )


@pytest.fixture
def django_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Django settings, configured as the example project does (they are process-wide)."""
    from django.conf import settings

    if settings.configured:
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    monkeypatch.delenv("KEYSTILE_CONFIG", raising=False)
    examples = Path(__file__).resolve().parent.parent / "examples"
    spec = importlib.util.spec_from_file_location(
        "keystile_example_django_app", examples / "django_app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def django_request(server: str, path: str, query: str, headers: dict[str, str]) -> Any:
    """A Django request as its WSGI or ASGI handler builds it, and the server's own dict."""
    if server == "wsgi":
        from django.test import RequestFactory

        target = path + (f"?{query}" if query else "")
        request = RequestFactory().get(target, headers=headers, RAW_URI=target, REQUEST_URI=target)
        return request, request.META
    from django.core.handlers.asgi import ASGIRequest

    scope = scope_for(path.encode(), list(headers.items()), query)
    return ASGIRequest(scope, io.BytesIO()), scope


DJANGO_TRICKS = [
    pytest.param("token={t}&theme=dark", {}, False, id="query-token"),
    pytest.param("token={t}&theme=dark", {}, True, id="query-token-read-by-earlier-middleware"),
    pytest.param("theme=dark", {"X-Embed-Token": "{t}"}, False, id="x-embed-token"),
    pytest.param("theme=dark", {"X-Embed-Token": "{t}"}, True, id="header-read-early"),
    pytest.param("theme=dark&token={t}", {"X-Keystile-Org": "forged"}, True, id="reserved-header"),
]


@pytest.mark.usefixtures("django_ready")
@pytest.mark.parametrize(("query", "headers", "read_early"), DJANGO_TRICKS)
@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_django_door_strips_the_embed_token_and_reserved_headers(
    engine: Keystile,
    embed: str,
    server: str,
    query: str,
    headers: dict[str, str],
    read_early: bool,
) -> None:
    from django.http import HttpRequest, HttpResponse
    from django.test import override_settings

    from keystile.django import KeystileMiddleware as DjangoMiddleware

    seen: dict[str, Any] = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen["GET"] = request.GET.urlencode()
        seen["headers"] = sorted(h.lower() for h in request.headers)
        seen["text"] = repr((request.GET, dict(request.headers), request.META))
        seen["full_path"] = request.get_full_path()
        return HttpResponse("ok")

    sent = {"Origin": ORIGIN, **{n: v.format(t=embed) for n, v in headers.items()}}
    request, own = django_request(server, WIDGET, query.format(t=embed), sent)
    if read_early:
        assert request.GET and request.headers  # as an earlier middleware might
    with override_settings(KEYSTILE_CONFIG=engine):
        response = DjangoMiddleware(view)(request)
    assert response.status_code == 200, response.content
    assert seen["GET"] == "theme=dark" and seen["full_path"] == f"{WIDGET}?theme=dark"
    assert "x-embed-token" not in seen["headers"] and "x-keystile-org" not in seen["headers"]
    assert embed not in seen["text"] and "forged" not in seen["text"]
    # The server's own environ (WSGI: META is it) or scope (ASGI) lost it too.
    own_text = repr({k: v for k, v in own.items() if k != "keystile.api_key"})
    assert embed not in own_text and "forged" not in own_text
