"""Refusals as HTTP: one JSON body, built in one place for every driver.

``errors: json`` gives ``{"error", "code", "status", ...}``; ``errors:
problem`` gives RFC 9457 ``application/problem+json`` with the same
``code`` and extra fields. Every refusal carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from keystile.pipeline import Refusal

__all__ = ["render_refusal"]

PROBLEM_TYPE = "https://keystile.dev/problems/"


def render_refusal(
    refusal: Refusal, mode: str = "json"
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for a refusal."""
    if mode == "problem":
        payload = {
            "type": PROBLEM_TYPE + refusal.code.lower().replace("_", "-"),
            "title": HTTPStatus(refusal.status).phrase,
            "status": refusal.status,
            "detail": refusal.message,
            "code": refusal.code,
            **refusal.extra,
        }
        content_type = "application/problem+json"
    else:
        payload = {
            "error": refusal.message,
            "code": refusal.code,
            "status": refusal.status,
            **refusal.extra,
        }
        content_type = "application/json"
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *refusal.headers,
    ]
    return refusal.status, headers, body
