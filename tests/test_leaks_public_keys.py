"""The keys that verify secret-scanning reports: injected, fetched, cached, refetched.

The default fetcher is pointed at a loopback server that serves GitHub's
document shape; nothing here reaches the internet.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from keystile import Keystile
from keystile.leaks import GITHUB_KEYS_URL, GitHubPublicKeys, PublicKeysUnavailable
from keystile.leaks._public_keys import PublicKeys
from tests.conftest import make_engine
from tests.leak_reports import DOORS, LeakDoor, Signer, entry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Published:
    """A ``public_keys`` callable whose list the test changes, counting calls and threads."""

    def __init__(self, *signers: Signer) -> None:
        self.keys = {s.identifier: s.pem for s in signers}
        self.calls = 0
        self.threads: list[str] = []
        self.fail = False

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise OSError("connection refused (test)")
        return dict(self.keys)


@pytest.fixture
def mem() -> Iterator[Keystile]:
    engine = make_engine("memory://")
    yield engine
    engine.close()


def test_a_callable_is_called_on_first_need_and_known_keys_need_no_call() -> None:
    first = Signer("k1")
    published = Published(first)
    keys = PublicKeys(published, clock=Clock())
    assert published.calls == 0  # nothing fetched when the app is built
    assert keys.get("k1") is not None
    assert keys.get("k1") is not None
    assert published.calls == 1


def test_an_unknown_identifier_refetches_at_most_once_a_minute() -> None:
    clock = Clock()
    published = Published(Signer("k1"))
    keys = PublicKeys(published, clock=clock)
    assert keys.get("k2") is None and published.calls == 1
    clock.now += 30
    assert keys.get("k2") is None and keys.get("k3") is None
    assert published.calls == 1  # a flood of unknown identifiers costs GitHub nothing
    rotated = Signer("k2")
    published.keys[rotated.identifier] = rotated.pem  # GitHub publishes its next key
    clock.now += 30
    assert keys.get("k2") is not None and published.calls == 2
    assert keys.get("k1") is not None and published.calls == 2


def test_a_key_no_longer_published_stops_verifying_after_a_refetch() -> None:
    clock = Clock()
    published = Published(Signer("k1"))
    keys = PublicKeys(published, clock=clock)
    assert keys.get("k1") is not None
    published.keys = {"k2": Signer("k2").pem}
    clock.now += 61
    assert keys.get("k2") is not None
    assert keys.get("k1") is None


def test_a_failed_fetch_is_unavailable_and_keeps_the_known_keys() -> None:
    clock = Clock()
    published = Published(Signer("k1"))
    keys = PublicKeys(published, clock=clock)
    assert keys.get("k1") is not None
    published.fail = True
    clock.now += 61
    with pytest.raises(PublicKeysUnavailable):
        keys.get("k2")
    with pytest.raises(PublicKeysUnavailable):  # still unknown, still not a 401
        keys.get("k2")
    assert keys.get("k1") is not None
    assert published.calls == 2


@pytest.mark.parametrize("kind", DOORS)
def test_reports_signed_with_a_newly_published_key_verify_through_the_door(
    kind: str, mem: Keystile
) -> None:
    old, new = Signer("old"), Signer("new")
    published = Published(old)
    key = mem.keys.create(name="k", org="acme")
    with LeakDoor(kind, mem, public_keys=published) as leaks:
        assert leaks.report(old, entry("x")).status == 200
        published.keys[new.identifier] = new.pem
        # Within the minute, the new identifier is not fetched again: 401.
        assert leaks.report(new, entry(key.secret)).status == 401
        assert published.calls == 1
    if kind == "asgi":  # the fetch ran off the event loop
        assert published.threads[0] != threading.main_thread().name


@pytest.mark.parametrize("kind", DOORS)
def test_unreachable_public_keys_answer_503_so_github_retries(kind: str, mem: Keystile) -> None:
    published = Published(Signer("k1"))
    published.fail = True
    key = mem.keys.create(name="k", org="acme")
    with LeakDoor(kind, mem, public_keys=published) as leaks:
        reply = leaks.report(Signer("k1"), entry(key.secret))
    assert reply.status == 503 and reply.headers["retry-after"]
    assert mem.keys.get(key.id).revoked_at is None


# -- the default fetcher, against a loopback server -----------------------------------------------


class _KeysServer(http.server.BaseHTTPRequestHandler):
    document: bytes
    status: int
    hits: list[str]

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(type(self).document)))
        self.end_headers()
        self.wfile.write(type(self).document)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def keys_server() -> Iterator[Any]:
    handler: Any = type("Keys", (_KeysServer,), {"document": b"{}", "status": 200, "hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/meta/public_keys/secret_scanning"
    yield handler
    server.shutdown()
    server.server_close()


def github_document(*signers: Signer, current: str | None = None) -> bytes:
    return json.dumps(
        {
            "public_keys": [
                {
                    "key_identifier": s.identifier,
                    "key": s.pem,
                    "is_current": s.identifier == current,
                }
                for s in signers
            ]
        }
    ).encode()


@pytest.mark.parametrize("kind", DOORS)
def test_the_default_fetcher_reads_githubs_document_and_revokes(
    kind: str, mem: Keystile, keys_server: Any
) -> None:
    retiring, current = (
        Signer("90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"),
        Signer("bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c"),
    )
    keys_server.document = github_document(retiring, current, current=current.identifier)
    key = mem.keys.create(name="k", org="acme")
    fetcher = GitHubPublicKeys(url=keys_server.url, timeout=2)
    with LeakDoor(kind, mem, public_keys=fetcher) as leaks:
        # A key GitHub is phasing out (is_current false) still verifies.
        assert leaks.report(retiring, entry(key.secret)).json[0]["label"] == "true_positive"
        assert leaks.report(current, entry(key.secret)).status == 200
    assert keys_server.hits == ["/meta/public_keys/secret_scanning"]
    assert mem.keys.get(key.id).revoked_at is not None


@pytest.mark.parametrize(
    ("status", "document"),
    [
        pytest.param(500, b"{}", id="server-error"),
        pytest.param(200, b"<html>", id="not-json"),
        pytest.param(200, b'{"keys": []}', id="no-public-keys-list"),
        pytest.param(200, b'{"public_keys": [{"key": "x"}]}', id="entry-without-identifier"),
    ],
)
def test_the_default_fetcher_refuses_what_is_not_githubs_document(
    status: int, document: bytes, keys_server: Any
) -> None:
    keys_server.status, keys_server.document = status, document
    keys = PublicKeys(GitHubPublicKeys(url=keys_server.url, timeout=2), clock=Clock())
    with pytest.raises(PublicKeysUnavailable):
        keys.get("k1")


def test_the_default_is_githubs_published_list_fetched_lazily(mem: Keystile) -> None:
    from keystile.leaks import asgi_app, wsgi_app

    for app in (asgi_app(mem), wsgi_app(mem)):
        source = app.endpoint.public_keys._fetch
        assert isinstance(source, GitHubPublicKeys) and source.url == GITHUB_KEYS_URL
        assert app.endpoint.public_keys._fetched_at is None  # nothing fetched yet
    assert GITHUB_KEYS_URL == "https://api.github.com/meta/public_keys/secret_scanning"
