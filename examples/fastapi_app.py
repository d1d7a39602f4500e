"""FastAPI behind keystile: run with `uvicorn examples.fastapi_app:app`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI

from keystile import Principal
from keystile.asgi import KeystileMiddleware
from keystile.fastapi import install_error_handler, require_scopes, with_public_docs

CONFIG = os.environ.get("KEYSTILE_CONFIG", str(Path(__file__).with_name("keystile.yaml")))

app = FastAPI(title="keystile example")
app.add_middleware(KeystileMiddleware, config=with_public_docs(app, CONFIG))  # /docs stays open
install_error_handler(app)


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/api/v1/events")
def list_events(
    key: Annotated[Principal, Depends(require_scopes("events:read"))],
) -> dict[str, object]:
    return {"events": [], "org": key.org, "key": key.id}


@app.put("/api/v1/events/{event_id}")
def update_event(
    event_id: str, key: Annotated[Principal, Depends(require_scopes("events:write"))]
) -> dict[str, str]:
    return {"updated": event_id}


@app.post("/api/v1/events/{event_id}/results")
def upload_results(
    event_id: str, key: Annotated[Principal, Depends(require_scopes())]
) -> dict[str, str]:
    return {"event": event_id, "by": key.id}
