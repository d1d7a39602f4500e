"""Starlette behind keystile: run with `uvicorn examples.starlette_app:app`."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keystile.asgi import KeystileMiddleware

CONFIG = os.environ.get("KEYSTILE_CONFIG", str(Path(__file__).with_name("keystile.yaml")))


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def list_events(request: Request) -> JSONResponse:
    key = request.state.api_key
    return JSONResponse({"events": [], "org": key.org, "key": key.id})


async def update_event(request: Request) -> JSONResponse:
    return JSONResponse({"updated": request.path_params["event_id"]})


async def upload_results(request: Request) -> JSONResponse:
    return JSONResponse({"event": request.path_params["event_id"], "by": request.state.api_key.id})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/v1/events", list_events),
        Route("/api/v1/events/{event_id}", update_event, methods=["PUT", "PATCH"]),
        Route("/api/v1/events/{event_id}/results", upload_results, methods=["POST"]),
    ],
    middleware=[Middleware(KeystileMiddleware, config=CONFIG)],
)
