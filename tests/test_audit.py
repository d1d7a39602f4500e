"""Audit events (SPEC section 7): what is recorded, and every sink."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from keystile import Keystile
from keystile.audit import SIGNATURE_HEADER, AuditEvent, sign, verify_signature
from tests.conftest import PEPPER, make_engine
from tests.doors import DOORS, Door

ROUTES = [
    {"path": "/api/v1/events", "scopes": ["events:read"]},
    {"path": "/api/v1/orgs/{org}/x", "scopes": ["events:read"], "org_param": "org"},
]
WEBHOOK_SECRET = "whsec-test-0123456789"


def engine(**config: Any) -> Keystile:
    return Keystile({"store": "memory://", "routes": ROUTES, **config}, pepper=PEPPER)


@pytest.mark.parametrize("door", DOORS)
def test_every_key_change_and_refusal_is_an_event_without_the_secret(door: str) -> None:
    ks = engine(limits={"key": "2/minute"})
    events: list[AuditEvent] = []
    ks.audit.subscribe(events.append)
    new = ks.keys.create(name="k", scopes=["events:read"], org="acme")
    ks.keys.update(new.id, scopes=["events:read", "results"])
    rotated = ks.keys.rotate(new.id, grace="1h")
    with Door(door, ks) as send:
        send("GET", "/api/v1/events", client="198.51.100.7")  # 401
        send("GET", "/api/v1/orgs/globex/x", key=rotated.secret)  # 403
        for _ in range(3):
            send("GET", "/api/v1/events", key=rotated.secret)  # 200, 200, 429
    ks.keys.revoke(rotated.id)
    names = [e.event for e in events]
    assert names[:3] == ["key.created", "key.scopes_changed", "key.rotated"]
    assert names[-1] == "key.revoked"
    refused = [e for e in events if e.event == "request.refused"]
    assert [e.status for e in refused] == [401, 403, 429]
    assert refused[0].client == "198.51.100.7" and refused[0].key_id is None
    assert refused[1].key_id == rotated.id and refused[1].org == "acme"
    assert refused[2].reason is not None and refused[2].reason.startswith("RATE_LIMITED")
    dump = repr(events) + json.dumps([e.as_dict() for e in events])
    assert new.secret not in dump and rotated.secret not in dump
    ks.close()


def test_store_outage_is_an_event() -> None:
    ks = Keystile(
        {"store": "postgresql+psycopg://postgres@127.0.0.1:1/test", "routes": ROUTES}, pepper=PEPPER
    )
    events: list[AuditEvent] = []
    ks.audit.subscribe(events.append)
    with Door("wsgi", ks) as send:
        for _ in range(5):  # one outage, five refused requests: one event, not five
            assert send("GET", "/api/v1/events", key=ks.formats["secret"].generate()).status == 503
    assert [e.event for e in events] == ["store.unavailable"]
    ks.close()


def test_events_go_to_the_audit_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keystile.audit")
    ks = engine()
    new = ks.keys.create(name="k", org="acme")
    assert f"key.created key_id={new.id} key_prefix={new.secret[:14]} org=acme" in caplog.text
    structured = caplog.records[-1].keystile  # type: ignore[attr-defined]
    assert structured["key_id"] == new.id and structured["key_prefix"] == new.secret[:14]
    assert new.secret not in caplog.text and new.secret[14:] not in repr(structured)
    ks.close()


def test_events_go_to_the_sql_audit_table(store_url: str) -> None:
    import sqlalchemy as sa

    if store_url.startswith("memory"):
        ks = make_engine(store_url, audit={"store": True})
        new = ks.keys.create(name="k", org="acme")
        ks.audit.flush()
        assert [e.key_id for e in ks.store.audit_log] == [new.id]
        ks.close()
        return
    from keystile.stores.sql import audit_table, driver_url

    ks = make_engine(store_url, audit={"store": True}, routes=ROUTES)
    new = ks.keys.create(name="k", org="acme")
    with Door("wsgi", ks) as send:
        send("GET", "/api/v1/events", client="203.0.113.5")
    ks.close()  # drains the queue
    db = sa.create_engine(driver_url(store_url, use_async=False))
    with db.connect() as conn:
        rows = conn.execute(sa.select(audit_table).order_by(audit_table.c.id)).fetchall()
    db.dispose()
    assert [(r.event, r.key_id, r.status) for r in rows] == [
        ("key.created", new.id, None),
        ("request.refused", None, 401),
    ]
    assert rows[1].client == "203.0.113.5"


class _Receiver(http.server.BaseHTTPRequestHandler):
    # Replaced per test by the fixture's subclass.
    answers: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[bytes, str]]] = []
    hold: ClassVar[threading.Event | None] = None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.hold is not None:
            self.hold.wait(10)
        type(self).received.append((body, self.headers[SIGNATURE_HEADER]))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Receiver]]:
    monkeypatch.setenv("KEYSTILE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    handler: Any = type("Handler", (_Receiver,), {"answers": [], "received": [], "hold": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield handler
    if handler.hold is not None:
        handler.hold.set()
    server.shutdown()
    server.server_close()


def test_webhook_posts_signed_json_that_verifies(receiver: Any) -> None:
    ks = engine(audit={"webhook": {"url": receiver.url}})
    new = ks.keys.create(name="k", org="acme")
    ks.audit.flush()
    body, signature = receiver.received[0]
    assert json.loads(body)["event"] == "key.created" and json.loads(body)["key_id"] == new.id
    timestamp = int(signature.split(",")[0][2:])
    expected = (
        __import__("hmac")
        .new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, "sha256")
        .hexdigest()
    )
    assert signature == f"t={timestamp},v1={expected}"
    assert verify_signature(WEBHOOK_SECRET.encode(), body, signature)
    assert not verify_signature(b"another-secret", body, signature)
    assert not verify_signature(WEBHOOK_SECRET.encode(), body + b" ", signature)
    assert sign(WEBHOOK_SECRET.encode(), body, timestamp) == signature
    ks.close()


def test_webhook_retries_after_a_failure(receiver: Any) -> None:
    receiver.answers[:] = [500]
    ks = engine(audit={"webhook": {"url": receiver.url, "retries": 2}})
    ks.keys.create(name="k", org="acme")
    ks.audit.flush()
    assert len(receiver.received) == 2 and ks.audit.delivered == 1
    ks.close()


def test_a_dead_receiver_neither_slows_nor_fails_requests(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"  # closed once the block ends
    ks = engine(audit={"webhook": {"url": dead, "retries": 1, "timeout": "1s"}})
    key = ks.keys.create(name="k", scopes=["events:read"], org="acme").secret
    with Door("wsgi", ks) as send:
        assert send("GET", "/api/v1/events", key=key).status == 200
        assert send("GET", "/api/v1/events").status == 401
    ks.audit.flush()
    assert ks.audit.delivered == 0
    assert "audit webhook gave up" in caplog.text
    ks.close()


def test_a_slow_receiver_fills_the_bounded_queue_and_drops_with_a_count(
    receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hold = threading.Event()  # the receiver answers nothing until released
    ks = engine(audit={"webhook": {"url": receiver.url, "retries": 0}, "queue_size": 2})
    with Door("wsgi", ks) as send:
        statuses = [send("GET", "/api/v1/events").status for _ in range(10)]
    assert statuses == [401] * 10  # every request answered while the receiver hangs
    assert ks.audit.dropped >= 6
    assert "audit queue full" in caplog.text
    receiver.hold.set()
    ks.close()
