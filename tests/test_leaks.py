"""SPEC section 10, leaked keys: GitHub's secret-scanning reports revoke our keys.

Every behaviour runs through both doors; the ones that touch keys run on
every store (memory, SQLite, PostgreSQL, MariaDB). Reports are signed in
the tests with a P-256 key generated per test; nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from keystile import Keystile, StoreUnavailable
from keystile.audit import AuditEvent
from keystile.keys import KeyFormat
from keystile.leaks import MAX_BODY, asgi_app, wsgi_app
from keystile.stores.memory import MemoryKeyStore
from tests.conftest import PEPPER, make_engine
from tests.doors import Door
from tests.leak_reports import DOORS, LeakDoor, Signer, entry, report_body

WELL_FORMED_STRANGER = KeyFormat("sk_").generate()  # our format, nobody's key


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bad_checksum(secret: str) -> str:
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def events(ks: Keystile) -> list[AuditEvent]:
    seen: list[AuditEvent] = []
    ks.audit.subscribe(seen.append)
    return seen


@pytest.fixture
def mem() -> Iterator[Keystile]:
    """An engine on memory://, for what the endpoint refuses before any store call."""
    engine = make_engine("memory://")
    yield engine
    engine.close()


def door_for(kind: str, ks: Keystile, signer: Signer) -> LeakDoor:
    return LeakDoor(kind, ks, public_keys={signer.identifier: signer.pem})


# -- a report of our keys ---------------------------------------------------------------


@pytest.mark.parametrize("kind", DOORS)
def test_a_leaked_key_is_revoked_audited_and_labelled_a_true_positive(
    kind: str, ks: Keystile, signer: Signer, events: list[AuditEvent]
) -> None:
    leaked = ks.keys.create(name="CI", org="acme", scopes=["results"])
    other = ks.keys.create(name="kept", org="acme")
    found_at = "https://github.com/acme/site/blob/9f1c2e/.env"
    with Door(kind, ks) as api, door_for(kind, ks, signer) as leaks:
        assert api("GET", "/api/v1/events", key=leaked.secret).status == 200  # now cached
        reply = leaks.report(
            signer,
            entry(leaked.secret, url=found_at, source="commit"),
            entry(WELL_FORMED_STRANGER, type="keystile_publishable"),
            entry("ghp_not_one_of_ours"),
        )
        assert reply.status == 200, reply.body
        assert reply.headers["content-type"] == "application/json"
        assert reply.json == [
            {
                "token_hash": sha256(leaked.secret),
                "token_type": "keystile_secret",
                "label": "true_positive",
            },
            {
                "token_hash": sha256(WELL_FORMED_STRANGER),
                "token_type": "keystile_publishable",
                "label": "false_positive",
            },
            {
                "token_hash": sha256("ghp_not_one_of_ours"),
                "token_type": "keystile_secret",
                "label": "false_positive",
            },
        ]
        # Revoked at once in this process, cache or not; the other key works on.
        assert api("GET", "/api/v1/events", key=leaked.secret).status == 401
        assert api("GET", "/api/v1/events", key=other.secret).status == 200
    assert ks.keys.get(leaked.id).revoked_at is not None
    assert ks.keys.get(other.id).revoked_at is None
    mine = [e for e in events if e.key_id == leaked.id and e.event.startswith("key.")]
    assert [(e.event, e.reason) for e in mine[1:]] == [
        ("key.revoked", "leaked"),
        ("key.leaked", f"revoked; source=commit; url={found_at}"),
    ]
    assert mine[2].org == "acme" and mine[2].key_prefix == leaked.secret[:14]
    assert not any(leaked.secret in json.dumps(e.as_dict()) for e in events)


@pytest.mark.parametrize("kind", DOORS)
def test_a_key_already_revoked_is_a_true_positive_and_stays_as_it_was(
    kind: str, ks: Keystile, signer: Signer, events: list[AuditEvent]
) -> None:
    old = ks.keys.create(name="old", org="acme")
    revoked_at = ks.keys.revoke(old.id).revoked_at
    events.clear()
    with door_for(kind, ks, signer) as leaks:
        reply = leaks.report(signer, entry(old.secret))
    assert reply.json[0]["label"] == "true_positive"
    assert ks.keys.get(old.id).revoked_at == revoked_at
    leaked = [(e.event, e.reason) for e in events if e.event in ("key.revoked", "key.leaked")]
    assert leaked == [("key.leaked", "already revoked; source=content; url=" + entry("x")["url"])]


@pytest.mark.parametrize("kind", DOORS)
def test_a_key_reported_twice_in_one_batch_is_revoked_once_and_audited_per_place(
    kind: str, ks: Keystile, signer: Signer, events: list[AuditEvent]
) -> None:
    new = ks.keys.create(name="twice", org="acme")
    with door_for(kind, ks, signer) as leaks:
        reply = leaks.report(
            signer,
            entry(new.secret, url="https://a.example/1"),
            entry(new.secret, url="https://b.example/2"),
        )
    assert [item["label"] for item in reply.json] == ["true_positive", "true_positive"]
    assert [e.reason for e in events if e.event == "key.revoked"] == ["leaked"]
    assert [e.reason for e in events if e.event == "key.leaked"] == [
        "revoked; source=content; url=https://a.example/1",
        "already revoked; source=content; url=https://b.example/2",
    ]


@pytest.mark.parametrize("kind", DOORS)
def test_a_batch_over_one_statements_worth_is_looked_up_and_revoked_in_chunks(
    kind: str, ks: Keystile, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keystile.stores import _sql_schema

    monkeypatch.setattr(_sql_schema, "IN_CHUNK", 2)  # as 500 are, with a few keys
    keys = [ks.keys.create(name=f"k{i}", org="acme") for i in range(5)]
    ks.keys.revoke(keys[2].id)
    strangers = [KeyFormat("sk_").generate() for _ in range(4)]
    reported = [strangers[0], keys[0].secret, *strangers[1:], *(k.secret for k in keys[1:])]
    with door_for(kind, ks, signer) as leaks:
        reply = leaks.report(signer, *(entry(t) for t in reported))
    labels = [item["label"] for item in reply.json]
    assert (
        labels
        == ["false_positive", "true_positive"] + ["false_positive"] * 3 + ["true_positive"] * 4
    )
    assert all(ks.keys.get(k.id).revoked_at is not None for k in keys)
    assert ks.keys.list(org="acme") == []


class CountingStore:
    """The memory store with its operations counted (and one of them made to fail)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.store = MemoryKeyStore()
        self.url = self.store.url
        self.seen: list[tuple[str, Any]] = []
        self.fail_on = fail_on

    def execute(self, op: str, *args: Any) -> Any:
        self.seen.append((op, args[0] if args else None))  # one append: the audit thread calls too
        if op == self.fail_on:
            raise StoreUnavailable("the key store is down (test)")
        return self.store.execute(op, *args)

    async def aexecute(self, op: str, *args: Any) -> Any:
        return self.execute(op, *args)

    def close(self) -> None:
        self.store.close()

    async def aclose(self) -> None:
        self.store.close()


@pytest.mark.parametrize("kind", DOORS)
def test_only_well_formed_tokens_are_looked_up_and_each_at_most_once(
    kind: str, signer: Signer
) -> None:
    store = CountingStore()
    ks = Keystile({"store": "memory://"}, pepper=PEPPER, store=store)
    ours = [ks.keys.create(name=f"k{i}", org="acme").secret for i in range(5)]
    gone = ks.keys.create(name="gone", org="gone")
    ks.keys.revoke(gone.id)  # found, and not revoked again
    strangers = [KeyFormat("sk_").generate() for _ in range(5)]
    garbage = [bad_checksum(s) for s in ours] + ["sk_short", "pk_" + "x" * 49, "x" * 600]
    # Repeats share a lookup.
    reported = [*ours, gone.secret, *strangers, *garbage, *ours[:2], *strangers[:2]]
    store.seen.clear()
    with door_for(kind, ks, signer) as leaks:
        reply = leaks.report(signer, *(entry(t) for t in reported))
    # One batched lookup of the distinct well-formed tokens, one batched revocation.
    key_calls = [(op, arg) for op, arg in store.seen if op != "audit"]
    assert [op for op, _ in key_calls] == ["find_by_digests", "revoke_many"]
    (_, asked), (_, to_revoke) = key_calls
    assert sorted(asked) == sorted(ks.digest(t) for t in [*ours, gone.secret, *strangers])
    assert sorted(to_revoke) == sorted(r.id for r in ks.keys.list_all(org="acme"))
    expected = [
        "true_positive" if t in [*ours, gone.secret] else "false_positive" for t in reported
    ]
    assert [item["label"] for item in reply.json] == expected
    ks.close()


@pytest.mark.parametrize("kind", DOORS)
def test_a_store_outage_is_a_503_that_a_retry_of_the_batch_completes(
    kind: str, signer: Signer
) -> None:
    store = CountingStore(fail_on="revoke_many")
    ks = Keystile({"store": "memory://"}, pepper=PEPPER, store=store)
    new = ks.keys.create(name="k", org="acme")
    with door_for(kind, ks, signer) as leaks:
        reply = leaks.report(signer, entry(new.secret))
        assert reply.status == 503 and reply.headers["retry-after"]
        assert ks.keys.get(new.id).revoked_at is None
        store.fail_on = None
        assert leaks.report(signer, entry(new.secret)).json[0]["label"] == "true_positive"
    assert ks.keys.get(new.id).revoked_at is not None
    ks.close()


# -- refusals: nothing changes -------------------------------------------------------------


def _forged(signer: Signer, body: bytes) -> list[tuple[str, str]]:
    return [
        ("Github-Public-Key-Identifier", signer.identifier),
        ("Github-Public-Key-Signature", Signer().sign(body)),
    ]


UNSIGNED = [
    pytest.param(lambda s, b: [], id="no-headers"),
    pytest.param(lambda s, b: s.headers(b)[:1], id="no-signature"),
    pytest.param(lambda s, b: s.headers(b)[1:], id="no-identifier"),
    pytest.param(_forged, id="signed-by-another-key"),
    pytest.param(lambda s, b: s.headers(b + b" "), id="signature-of-another-body"),
    pytest.param(
        lambda s, b: [("Github-Public-Key-Identifier", "unknown"), *s.headers(b)[1:]],
        id="unknown-identifier",
    ),
    pytest.param(
        lambda s, b: [*s.headers(b)[:1], ("Github-Public-Key-Signature", "not base64!")],
        id="signature-not-base64",
    ),
    pytest.param(
        lambda s, b: [*s.headers(b)[:1], ("Github-Public-Key-Signature", "")],
        id="empty-signature",
    ),
    pytest.param(
        lambda s, b: [*s.headers(b)[:1], ("Github-Public-Key-Signature", "AAAA")],
        id="signature-not-der",
    ),
    pytest.param(lambda s, b: s.headers(b) + s.headers(b)[1:], id="signature-sent-twice"),
]


@pytest.mark.parametrize("kind", DOORS)
@pytest.mark.parametrize("headers_of", UNSIGNED)
def test_a_report_without_a_valid_signature_is_401_and_changes_nothing(
    kind: str, headers_of: Any, mem: Keystile, signer: Signer
) -> None:
    ks = mem
    events: list[AuditEvent] = []
    ks.audit.subscribe(events.append)
    new = ks.keys.create(name="k", org="acme")
    body = report_body(entry(new.secret))
    with door_for(kind, ks, signer) as leaks:
        reply = leaks(body=body, headers=headers_of(signer, body))
    assert reply.status == 401
    assert reply.json["code"] == "UNAUTHORIZED"
    assert ks.keys.get(new.id).revoked_at is None
    assert [e.event for e in events] == ["key.created"]


MALFORMED = [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'["\xff"]', id="not-utf8"),
    pytest.param(b'{"token": "x"}', id="an-object-not-an-array"),
    pytest.param(b"[1]", id="entry-not-an-object"),
    pytest.param(b'[{"type": "t"}]', id="no-token"),
    pytest.param(b'[{"token": "", "type": "t"}]', id="empty-token"),
    pytest.param(b'[{"token": 7, "type": "t"}]', id="token-not-a-string"),
    pytest.param(b'[{"token": "\\ud800", "type": "t"}]', id="token-lone-surrogate"),
    pytest.param(b'[{"token": "x"}]', id="no-type"),
    pytest.param(b'[{"token": "x", "type": "t", "url": 5}]', id="url-not-a-string"),
    pytest.param(b'[{"token": "x", "type": "t", "source": []}]', id="source-not-a-string"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-too-deep"),
]


@pytest.mark.parametrize("kind", DOORS)
@pytest.mark.parametrize("tail", MALFORMED)
def test_a_malformed_report_is_400_and_revokes_nothing_it_lists(
    kind: str, tail: bytes, mem: Keystile, signer: Signer
) -> None:
    ks = mem
    new = ks.keys.create(name="k", org="acme")
    body = tail
    if tail.startswith(b"[{"):  # our key first, the bad entry after it
        body = b"[" + json.dumps(entry(new.secret)).encode() + b"," + tail[1:]
    with door_for(kind, ks, signer) as leaks:
        reply = leaks(body=body, headers=signer.headers(body))
    assert reply.status == 400, reply.body
    assert reply.json["code"] == "BAD_REQUEST"
    assert ks.keys.get(new.id).revoked_at is None


@pytest.mark.parametrize("kind", DOORS)
def test_a_declared_body_over_1_mib_is_413_before_a_byte_is_read(
    kind: str, mem: Keystile, signer: Signer
) -> None:
    body = report_body(entry("x"))
    headers = [*signer.headers(body), ("Content-Length", str(MAX_BODY + 1))]
    with door_for(kind, mem, signer) as leaks:
        reply = leaks(body=body, headers=headers)
    assert reply.status == 413 and reply.read == 0


@pytest.mark.parametrize("kind", DOORS)
def test_a_streamed_body_over_1_mib_is_413_and_read_no_further(
    kind: str, mem: Keystile, signer: Signer
) -> None:
    chunk = b" " * 65536
    with door_for(kind, mem, signer) as leaks:
        reply = leaks(
            chunks=[chunk] * 40,  # 2.5 MiB, no length declared
            declare_length=False,
            headers=signer.headers(b"[]"),
        )
    assert reply.status == 413
    # WSGI reads exactly what it may; ASGI takes whole messages, so at most one more.
    slack = 0 if kind == "wsgi" else len(chunk)
    assert MAX_BODY < reply.read <= MAX_BODY + 1 + slack


@pytest.mark.parametrize("kind", DOORS)
def test_a_body_of_exactly_1_mib_is_read_and_answered(
    kind: str, mem: Keystile, signer: Signer
) -> None:
    body = report_body(entry("x"))
    body = body + b" " * (MAX_BODY - len(body))  # JSON allows trailing whitespace
    with door_for(kind, mem, signer) as leaks:
        reply = leaks(body=body, headers=signer.headers(body))
    assert reply.status == 200 and reply.json[0]["label"] == "false_positive"


@pytest.mark.parametrize("kind", DOORS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_only_post_is_answered(kind: str, method: str, mem: Keystile, signer: Signer) -> None:
    with door_for(kind, mem, signer) as leaks:
        reply = leaks(method)
    assert reply.status == 405 and reply.headers["allow"] == "POST"


@pytest.mark.parametrize("kind", DOORS)
def test_paths_below_the_mount_point_are_not_found(
    kind: str, mem: Keystile, signer: Signer
) -> None:
    body = report_body()
    with door_for(kind, mem, signer) as leaks:
        assert leaks(path="/other", body=body, headers=signer.headers(body)).status == 404
        assert leaks(path="", body=body, headers=signer.headers(body)).status == 200


@pytest.mark.parametrize("kind", DOORS)
def test_answers_post_at_the_root_of_where_it_is_mounted(
    kind: str, ks: Keystile, signer: Signer
) -> None:
    keys = {signer.identifier: signer.pem}
    new = ks.keys.create(name="k", org="acme")

    async def host_asgi(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the report reached the host app")

    def host_wsgi(environ: Any, start_response: Any) -> Any:
        raise AssertionError("the report reached the host app")

    if kind == "asgi":
        app: Any = Starlette(routes=[Mount("/github/leaks", app=asgi_app(ks, public_keys=keys))])
    else:
        app = DispatcherMiddleware(host_wsgi, {"/github/leaks": wsgi_app(ks, public_keys=keys)})
    body = report_body(entry(new.secret))
    # Starlette's Mount answers below its path, so GitHub is given the URL with
    # the slash (docs/leaks.md says so); DispatcherMiddleware takes both.
    path = "/github/leaks/" if kind == "asgi" else "/github/leaks"
    with LeakDoor(kind, ks, app=app) as leaks:
        reply = leaks(path=path, body=body, headers=signer.headers(body))
    assert reply.status == 200, reply.body
    assert reply.json[0]["label"] == "true_positive"


def test_a_bad_public_key_is_refused_when_the_app_is_built(mem: Keystile, signer: Signer) -> None:
    from keystile import ConfigError

    with pytest.raises(ConfigError, match="public_keys\\['k1'\\] is not a PEM public key"):
        asgi_app(mem, public_keys={"k1": "-----BEGIN PUBLIC KEY-----\nnope\n"})
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="not an ECDSA P-256 public key"):
        wsgi_app(mem, public_keys={"k2": p384})


# -- what the owner is told -------------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:
        type(self).received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[Any]:
    handler: Any = type("Hook", (_Hook,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", DOORS)
def test_the_leak_reaches_the_audit_webhook_and_log_without_the_token(
    kind: str, hook: Any, signer: Signer, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setenv("KEYSTILE_WEBHOOK_SECRET", "whsec-test")
    ks = make_engine("memory://", audit={"webhook": {"url": hook.url}})
    new = ks.keys.create(name="k", org="acme")
    with caplog.at_level(logging.DEBUG), door_for(kind, ks, signer) as leaks:
        reply = leaks.report(signer, entry(new.secret, url="https://github.com/a/b/blob/c/d"))
    ks.audit.flush()
    events = [json.loads(b) for b in hook.received]
    leaked = [e for e in events if e["event"] == "key.leaked"]
    assert len(leaked) == 1 and leaked[0]["key_id"] == new.id and leaked[0]["org"] == "acme"
    assert leaked[0]["reason"] == "revoked; source=content; url=https://github.com/a/b/blob/c/d"
    assert any(e["event"] == "key.revoked" and e["reason"] == "leaked" for e in events)
    assert "key.leaked" in caplog.text
    for text in (caplog.text, *(b.decode() for b in hook.received), reply.body.decode()):
        assert new.secret not in text
    ks.close()


def test_a_long_url_is_cut_to_the_audit_trail_width_visibly(
    ks: Keystile, signer: Signer, events: list[AuditEvent]
) -> None:
    new = ks.keys.create(name="k", org="acme")
    url = "https://github.com/acme/app/blob/main/" + "deep/" * 80 + "secrets.py"
    with door_for("wsgi", ks, signer) as leaks:
        leaks.report(signer, entry(new.secret, url=url + "\r\nforged: line"))
    (reason,) = [e.reason for e in events if e.event == "key.leaked"]
    assert reason is not None and len(reason) == 255 and reason.endswith("...")
    assert reason.startswith("revoked; source=content; url=https://github.com/acme/app/")
    assert "\n" not in reason and "\r" not in reason
