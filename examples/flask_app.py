"""Flask behind keystile: run with `flask --app examples.flask_app run`."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from keystile.flask import current_api_key
from keystile.wsgi import KeystileMiddleware

CONFIG = os.environ.get("KEYSTILE_CONFIG", str(Path(__file__).with_name("keystile.yaml")))

app = Flask(__name__)
app.wsgi_app = KeystileMiddleware(app.wsgi_app, config=CONFIG)  # type: ignore[method-assign]


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/api/v1/events")
def list_events() -> dict[str, object]:
    return {"events": [], "org": current_api_key.org, "key": current_api_key.id}


@app.route("/api/v1/events/<event_id>", methods=["PUT", "PATCH"])
def update_event(event_id: str) -> dict[str, str]:
    return {"updated": event_id}


@app.post("/api/v1/events/<event_id>/results")
def upload_results(event_id: str) -> dict[str, str]:
    return {"event": event_id, "by": current_api_key.id}
