"""A one-file Django project behind keystile's Django middleware.

Run with `python examples/django_app.py runserver`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

CONFIG = os.environ.get("KEYSTILE_CONFIG", str(Path(__file__).with_name("keystile.yaml")))

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["keystile.django.KeystileMiddleware"],
        KEYSTILE_CONFIG=CONFIG,
        USE_TZ=True,
    )


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def list_events(request: HttpRequest) -> JsonResponse:
    # request.api_key is set by keystile.django.KeystileMiddleware; the environ
    # key is there too, and also when keystile wraps the WSGI application.
    key = request.META["keystile.api_key"]
    return JsonResponse({"events": [], "org": key.org, "key": key.id})


def update_event(request: HttpRequest, event_id: str) -> JsonResponse:
    return JsonResponse({"updated": event_id})


def upload_results(request: HttpRequest, event_id: str) -> JsonResponse:
    return JsonResponse({"event": event_id, "by": request.META["keystile.api_key"].id})


urlpatterns = [
    path("health", health),
    path("api/v1/events", list_events),
    path("api/v1/events/<str:event_id>", update_event),
    path("api/v1/events/<str:event_id>/results", upload_results),
]

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
