"""SPEC sections 6 and 8 over HTTP: what a key did, through the ASGI and WSGI doors alike.

A key object's ``requests30d`` and its other new fields, ``GET usage`` (one
entry per UTC day) and ``GET events`` (the audit trail), each held to
section 6's rules: own org only, sessions only, ``no-store``, bad
parameters named. Traffic goes through the real middleware (``Door``), so
the counts are the ones the pipeline makes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from starlette.testclient import TestClient

from keystile import Keystile
from keystile.management import asgi_app, wsgi_app
from tests.conftest import PEPPER, make_engine
from tests.doors import DOORS, Door
from tests.test_management import (
    ADMIN,
    CONFIG,
    ISO_Z,
    MEMBER,
    PREFIX,
    Api,
    assert_error,
    async_authenticate,
    sync_authenticate,
)
from tests.test_management_rotate import Clock, keys_of

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
USAGE, EVENTS = PREFIX + "/usage", PREFIX + "/events"
EVENT_FIELDS = {"time", "type", "keyId", "reason", "client"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ks(clock: Clock) -> Iterator[Keystile]:
    engine = Keystile(CONFIG, pepper=PEPPER, clock=clock)
    yield engine
    engine.close()


@pytest.fixture(params=DOORS)
def api(request: pytest.FixtureRequest, ks: Keystile) -> Api:
    return Api(request.param, ks)


def serve(ks: Keystile, secret: str, reads: int = 0, writes: int = 0) -> None:
    """``reads`` admitted GETs and ``writes`` PUTs refused for scope (403), all counted."""
    door = Door("wsgi", ks)
    for _ in range(reads):
        assert door("GET", "/api/v1/events", key=secret).status == 200
    for _ in range(writes):
        assert door("PUT", "/api/v1/events/1", key=secret).status == 403


# -- key objects ---------------------------------------------------------------------------


def test_a_key_shows_its_type_kind_owner_last4_allowed_ips_and_requests30d(api: Api) -> None:
    bot, mine = api.create(name="bot"), api.create(name="mine", kind="user")
    assert {f: bot[f] for f in ("type", "kind", "owner", "allowedIps", "requests30d")} == {
        "type": "secret",
        "kind": "bot",
        "owner": None,
        "allowedIps": [],
        "requests30d": 0,
    }
    assert (mine["kind"], mine["owner"]) == ("user", "u_1")
    assert bot["last4"] == bot["apiKey"][-4:] and mine["last4"] == mine["apiKey"][-4:]
    listed = {k["id"]: k for k in api("GET").data}
    assert listed[bot["id"]] == {k: v for k, v in bot.items() if k != "apiKey"}
    assert listed[mine["id"]] == {k: v for k, v in mine.items() if k != "apiKey"}


def test_a_bot_key_shows_no_owner_even_if_python_gave_it_one(api: Api) -> None:
    made = api.ks.keys.create(name="bot", org="acme", kind="bot", user="u_1", created_by="u_1")
    assert api("GET", query=f"id={made.id}").data["owner"] is None


def test_requests30d_counts_the_last_30_days_in_the_list_one_key_and_a_patch(
    api: Api, clock: Clock
) -> None:
    clock.now = NOW - timedelta(days=40)
    busy, idle = api.create(scopes=["events:read"]), api.create(name="idle")
    serve(api.ks, busy["apiKey"], reads=2)  # 40 days ago: outside the 30
    clock.now = NOW
    serve(api.ks, busy["apiKey"], reads=3, writes=1)  # a refusal counts too
    listed = {k["id"]: k for k in api("GET").data}
    assert (listed[busy["id"]]["requests30d"], listed[idle["id"]]["requests30d"]) == (4, 0)
    # The counts are flushed before the keys are read: lastUsedAt agrees with them.
    assert listed[busy["id"]]["lastUsedAt"] == "2026-12-03T10:00:00Z"
    assert api("GET", query=f"id={busy['id']}").data == listed[busy["id"]]
    patched = api("PATCH", query=f"id={busy['id']}", json={"name": "renamed"}).data
    assert patched == {**listed[busy["id"]], "name": "renamed"}


def test_the_list_reads_usage_once_whatever_the_number_of_keys(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        api.create(name=f"k{i}")
    store = api.ks.store
    seen: list[str] = []
    real = store.execute

    def spy(op: str, *args: Any) -> Any:
        seen.append(op)
        return real(op, *args)

    monkeypatch.setattr(store, "execute", spy)  # the memory store's aexecute calls it too
    assert len(api("GET").data) == 5
    assert (seen.count("read_usage"), seen.count("get")) == (1, 0)


def test_requests30d_is_null_when_usage_is_not_counted(api: Api) -> None:
    engine = Keystile({**CONFIG, "usage": {"enabled": False}}, pepper=PEPPER)
    try:
        off = Api(api.kind, engine)
        made = off.create(scopes=["events:read"])
        serve(engine, made["apiKey"], reads=1)
        assert made["requests30d"] is None
        assert [k["requests30d"] for k in off("GET").data] == [None]
        assert off("GET", query=f"id={made['id']}").data["requests30d"] is None
    finally:
        engine.close()


# -- GET usage?id=&days= -----------------------------------------------------------------


def test_usage_answers_one_entry_per_day_oldest_first_zeros_included(
    api: Api, clock: Clock
) -> None:
    key = api.create(scopes=["events:read"])
    clock.now = NOW - timedelta(days=2)
    serve(api.ks, key["apiKey"], reads=2)
    clock.now = NOW
    serve(api.ks, key["apiKey"], reads=1, writes=1)
    answer = api("GET", path=USAGE, query=f"id={key['id']}&days=3")
    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    assert answer.body == {
        "data": [
            {
                "date": "2026-12-01",
                "total": 2,
                "byStatus": {"200": 2},
                "byRoute": {"/api/v1/events": 2},
            },
            {"date": "2026-12-02", "total": 0, "byStatus": {}, "byRoute": {}},
            {
                "date": "2026-12-03",
                "total": 2,
                "byStatus": {"200": 1, "403": 1},
                "byRoute": {"/api/v1/events": 1, "/api/v1/events/{id}": 1},
            },
        ]
    }


@pytest.mark.parametrize(("query", "days"), [("", 30), ("&days=1", 1), ("&days=90", 90)])
def test_usage_looks_back_30_days_by_default_and_1_to_90(api: Api, query: str, days: int) -> None:
    key = api.create()
    data = api("GET", path=USAGE, query=f"id={key['id']}{query}").data
    assert len(data) == days and data[-1]["date"] == "2026-12-03"
    first = (NOW - timedelta(days=days - 1)).date().isoformat()
    assert data[0]["date"] == first and {d["total"] for d in data} == {0}


def test_usage_of_a_revoked_key_is_still_readable(api: Api) -> None:
    # Its last weeks are what one reads after a leak.
    key = api.create(scopes=["events:read"])
    serve(api.ks, key["apiKey"], reads=2)
    assert api("DELETE", query=f"id={key['id']}").status == 200
    assert api("GET", path=USAGE, query=f"id={key['id']}&days=1").data[0]["total"] == 2


BAD_DAYS = [
    pytest.param("0", id="zero"),
    pytest.param("91", id="over-90"),
    pytest.param("-1", id="negative"),
    pytest.param("", id="empty"),
    pytest.param("abc", id="word"),
    pytest.param("1.5", id="fraction"),
    pytest.param("1e1", id="exponent"),
    pytest.param("%207", id="leading-space"),
    pytest.param("%2B7", id="plus-sign"),
    pytest.param("7_0", id="underscore"),
    pytest.param("%D9%A3", id="arabic-digit"),
    pytest.param("99999999999999999999", id="huge"),
    pytest.param("7&days=7", id="repeated"),
]


@pytest.mark.parametrize("days", BAD_DAYS)
@pytest.mark.parametrize("path", [USAGE, EVENTS])
def test_bad_days_is_400_naming_it(api: Api, path: str, days: str) -> None:
    key = api.create()
    answer = api("GET", path=path, query=f"id={key['id']}&days={days}")
    assert_error(answer, 400, "BAD_REQUEST", "days")


@pytest.mark.parametrize("query", ["", "id=", "id=a&id=b"])
def test_usage_without_one_id_is_400(api: Api, query: str) -> None:
    assert_error(api("GET", path=USAGE, query=query), 400, "BAD_REQUEST", "id")


# -- GET events?id=&days= ------------------------------------------------------------------


def test_events_answer_the_orgs_trail_newest_first_never_a_secret(api: Api, clock: Clock) -> None:
    key = api.create(scopes=["events:read"])
    theirs = api.create(session="u_7:globex:admin")
    clock.now = NOW + timedelta(minutes=1)
    api("PATCH", query=f"id={key['id']}", json={"scopes": ["results"]})
    clock.now = NOW + timedelta(minutes=2)
    assert Door("wsgi", api.ks)("GET", "/api/v1/events", key=key["apiKey"]).status == 403
    clock.now = NOW + timedelta(minutes=3)
    api("DELETE", query=f"id={key['id']}")
    answer = api("GET", path=EVENTS)
    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    events = answer.data
    assert [e["type"] for e in events] == [
        "key.revoked",
        "request.refused",
        "key.scopes_changed",
        "key.created",
    ]
    assert all(set(e) == EVENT_FIELDS and e["keyId"] == key["id"] for e in events)
    assert [e["time"] for e in events] == [
        "2026-12-03T10:03:00Z",
        "2026-12-03T10:02:00Z",
        "2026-12-03T10:01:00Z",
        "2026-12-03T10:00:00Z",
    ]
    refused = events[1]
    assert refused["client"] == "127.0.0.1" and "INSUFFICIENT_SCOPE" in refused["reason"]
    text = json.dumps(answer.body)
    assert key["apiKey"] not in text and theirs["id"] not in text


def test_events_with_an_id_narrow_to_that_key(api: Api) -> None:
    one, two = api.create(name="one"), api.create(name="two")
    api("DELETE", query=f"id={two['id']}")
    events = api("GET", path=EVENTS, query=f"id={two['id']}").data
    assert [(e["type"], e["keyId"]) for e in events] == [
        ("key.revoked", two["id"]),
        ("key.created", two["id"]),
    ]
    assert one["id"] not in json.dumps(events)


def test_events_look_back_7_days_by_default(api: Api, clock: Clock) -> None:
    clock.now = NOW - timedelta(days=8)
    old = api.create(name="old")
    clock.now = NOW
    new = api.create(name="new")
    assert [e["keyId"] for e in api("GET", path=EVENTS).data] == [new["id"]]
    both = api("GET", path=EVENTS, query="days=9").data
    assert [e["keyId"] for e in both] == [new["id"], old["id"]]


def test_events_are_501_when_the_trail_is_not_kept(api: Api) -> None:
    engine = Keystile({**CONFIG, "audit": {"store": False}}, pepper=PEPPER)
    try:
        answer = Api(api.kind, engine)("GET", path=EVENTS)
        assert_error(answer, 501, "NOT_IMPLEMENTED")
    finally:
        engine.close()


@pytest.mark.parametrize("query", ["id=", "id=a&id=b"])
def test_events_with_an_empty_or_repeated_id_are_400(api: Api, query: str) -> None:
    assert_error(api("GET", path=EVENTS, query=query), 400, "BAD_REQUEST", "id")


# -- section 6's rules, on each new endpoint --------------------------------------------------

READS = [
    pytest.param("GET", PREFIX, id="one-key"),
    pytest.param("GET", USAGE, id="usage"),
    pytest.param("GET", EVENTS, id="events"),
    pytest.param("POST", PREFIX + "/rotate", id="rotate"),
]


@pytest.mark.parametrize(("method", "path"), READS)
@pytest.mark.parametrize("session", [MEMBER, ADMIN])
def test_another_orgs_key_or_an_unknown_one_is_404_on_every_endpoint(
    api: Api, method: str, path: str, session: str
) -> None:
    theirs = api.create(session="u_7:globex:admin", scopes=["events:read"])
    serve(api.ks, theirs["apiKey"], reads=1)
    for target in (theirs["id"], "key_doesnotexist"):
        answer = api(method, path=path, session=session, query=f"id={target}", json={})
        assert_error(answer, 404, "NOT_FOUND")
        assert answer.body["error"] == "API key not found"
    assert [k.id for k in api.ks.keys.list("globex")] == [theirs["id"]]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"Authorization": "Bearer {secret}"}, id="bearer-key"),
        pytest.param({"x-api-key": "{secret}"}, id="x-api-key"),
    ],
)
@pytest.mark.parametrize(("method", "path"), READS)
def test_no_session_is_401_on_every_endpoint_whatever_key_it_carries(
    api: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    made = api.ks.keys.create(name="admin", scopes=["*"], org="acme")
    sent = {k: v.format(secret=made.secret) for k, v in headers.items()}
    answer = api(method, path=path, session=None, headers=sent, query=f"id={made.id}", json={})
    assert_error(answer, 401, "UNAUTHORIZED")
    assert made.secret not in json.dumps(answer.body)
    assert keys_of(api.ks) == {(made.id, True)}


@pytest.mark.parametrize(
    ("path", "method"),
    [(USAGE, "POST"), (USAGE, "DELETE"), (EVENTS, "PATCH"), (EVENTS, "PUT")],
)
def test_the_reads_take_get_only(api: Api, path: str, method: str) -> None:
    key = api.create()
    answer = api(method, path=path, query=f"id={key['id']}", json={"name": "x"})
    assert_error(answer, 405, "METHOD_NOT_ALLOWED")
    assert answer.headers["allow"] == "GET"
    assert api.ks.keys.get(key["id"]).name == "ci"


@pytest.mark.parametrize("path", [USAGE + "/", EVENTS + "/"])
def test_a_trailing_slash_answers_as_well(api: Api, path: str) -> None:
    key = api.create()
    assert api("GET", path=path, query=f"id={key['id']}").status == 200


def test_a_custom_prefix_moves_every_endpoint(ks: Keystile) -> None:
    for kind, app in (
        ("asgi", asgi_app(ks, async_authenticate, prefix="/keys")),
        ("wsgi", wsgi_app(ks, sync_authenticate, prefix="/keys")),
    ):
        door = Api(kind, ks, app, prefix="/keys")
        key = door.create()
        assert door("GET", path="/keys/usage", query=f"id={key['id']}").status == 200
        assert door("GET", path="/keys/events").status == 200
        assert door("POST", path="/keys/rotate", query=f"id={key['id']}", json={}).status == 201
        assert_error(door("GET", path=USAGE, query=f"id={key['id']}"), 404, "NOT_FOUND")


# -- every store ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOORS)
def test_one_key_rotation_usage_and_events_on_every_store(store_url: str, kind: str) -> None:
    engine = make_engine(
        store_url,
        routes=[{"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]}],
        scopes={"known": ["events:read"], "default": ["events:read"]},
    )
    try:
        if kind == "asgi":
            app = asgi_app(engine, authenticate=async_authenticate)
            with TestClient(app) as client:
                api = Api(kind, engine, app)
                api.client = client  # one event loop, so one async store, for all requests
                _read_rotate_and_audit(api)
                client.portal.call(engine.aclose)
        else:
            _read_rotate_and_audit(Api(kind, engine))
    finally:
        engine.close()


def _read_rotate_and_audit(api: Api) -> None:
    key = api.create(kind="user")
    serve(api.ks, key["apiKey"], reads=2)
    one = api("GET", query=f"id={key['id']}").data
    assert (one["requests30d"], one["owner"], one["last4"]) == (2, "u_1", key["last4"])
    assert ISO_Z.fullmatch(one["lastUsedAt"])
    assert [k["requests30d"] for k in api("GET").data] == [2]
    new = api("POST", path=PREFIX + "/rotate", query=f"id={key['id']}", json={"gracePeriod": "1h"})
    assert new.status == 201 and new.data["apiKey"].endswith(new.data["last4"])
    assert {k["id"] for k in api("GET").data} == {key["id"], new.data["id"]}
    days = api("GET", path=USAGE, query=f"id={key['id']}&days=2").data
    assert [d["total"] for d in days] == [0, 2] and days[1]["byStatus"] == {"200": 2}
    types = [(e["type"], e["keyId"]) for e in api("GET", path=EVENTS).data]
    assert types == [("key.rotated", new.data["id"]), ("key.created", key["id"])]
