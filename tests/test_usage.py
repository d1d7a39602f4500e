"""SPEC section 8: per-key request counts, written behind, read back by day.

Counting runs through both doors; the store operations run on every store
(memory, SQLite, PostgreSQL, MariaDB) through the one table of backends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from keystile import KeyInputError, KeyNotFound, Keystile, StoreUnavailable, UsageDay
from keystile._last_used import LastUsed
from tests.conftest import PEPPER
from tests.doors import DOORS, Door

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
ROUTES: list[dict[str, Any]] = [
    {"path": "/health", "public": True},
    {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
    {"path": "/api/v1/events/{event_id}", "methods": ["GET"], "limit": "2/minute"},
]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ks(store_url: str, clock: Clock) -> Iterator[Keystile]:
    engine = Keystile(
        {"store": store_url, "routes": ROUTES, "default": "authenticated", "limits": {"key": None}},
        pepper=PEPPER,
        clock=clock,
    )
    yield engine
    engine.close()


@pytest.fixture(params=DOORS)
def door_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_requests_are_counted_by_day_route_and_status(
    ks: Keystile, clock: Clock, door_kind: str
) -> None:
    door = Door(door_kind, ks)
    try:
        reader = ks.keys.create(name="reader", scopes=["events:read"], org="acme")
        other = ks.keys.create(name="other", scopes=[], org="acme")
        for _ in range(3):
            assert door("GET", "/api/v1/events", key=reader.secret).status == 200
        assert door("GET", "/api/v1/events", key=other.secret).status == 403  # scope
        statuses = [door("GET", "/api/v1/events/e1", key=reader.secret).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert door("GET", "/nowhere", key=reader.secret).status == 200  # default: authenticated
        assert door("GET", "/health", key=reader.secret).status == 200  # public: not counted
        clock.now = NOW + timedelta(days=1)
        assert door("GET", "/api/v1/events", key=reader.secret).status == 200
        ks.keys.revoke(other.id)
        assert door("GET", "/api/v1/events", key=other.secret).status == 401  # revoked: counted
        assert door("GET", "/api/v1/events", key="sk_unknown").status == 401  # no key: not
    finally:
        door.close()

    days = ks.keys.usage(reader.id, days=3)
    assert [d.date for d in days] == [date(2026, 12, 2), date(2026, 12, 3), date(2026, 12, 4)]
    assert days[0] == UsageDay(date(2026, 12, 2), 0, {}, {})
    assert days[1].total == 7
    assert days[1].by_status == {200: 6, 429: 1}
    assert days[1].by_route == {
        "/api/v1/events": 3,
        "/api/v1/events/{event_id}": 3,
        "(unmatched)": 1,
    }
    assert days[2].total == 1 and days[2].by_status == {200: 1}
    other_days = ks.keys.usage(other.id, days=2)
    assert [d.by_status for d in other_days] == [{403: 1}, {401: 1}]
    assert ks.keys.usage_totals(org="acme", days=2) == {reader.id: 8, other.id: 2}
    assert ks.keys.usage_totals(org="acme", days=1) == {reader.id: 1, other.id: 1}
    assert ks.keys.usage_totals(org="nobody", days=2) == {}


def test_a_clock_set_after_the_engine_is_built_dates_the_counts(
    store_url: str, clock: Clock, door_kind: str
) -> None:
    # The engine starts on the real clock; a clock handed in later (as tests
    # and ``ks.now = ...`` do) is the one requests are counted by.
    engine = Keystile(
        {"store": store_url, "routes": ROUTES, "limits": {"key": None}}, pepper=PEPPER
    )
    clock.now = NOW - timedelta(days=40)  # not the real day, whenever the test runs
    engine.now = clock
    door = Door(door_kind, engine)
    try:
        reader = engine.keys.create(name="reader", scopes=["events:read"], org="acme")
        assert door("GET", "/api/v1/events", key=reader.secret).status == 200
    finally:
        door.close()
    days = engine.keys.usage(reader.id, days=1)
    engine.close()
    assert [(d.date, d.total) for d in days] == [(date(2026, 10, 24), 1)]


def test_the_app_status_is_what_is_counted(ks: Keystile, door_kind: str) -> None:
    from keystile.asgi import KeystileMiddleware as ASGIMiddleware
    from keystile.wsgi import KeystileMiddleware as WSGIMiddleware

    async def asgi_404(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def wsgi_404(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return [b""]

    door = Door(door_kind, ks)
    door.app = ASGIMiddleware(asgi_404, ks) if door_kind == "asgi" else WSGIMiddleware(wsgi_404, ks)
    key = ks.keys.create(name="k", scopes=["events:read"], org="acme")
    try:
        assert door("GET", "/api/v1/events", key=key.secret).status == 404
    finally:
        door.close()
    assert ks.keys.usage(key.id, days=1)[0].by_status == {404: 1}


def test_usage_can_be_turned_off(store_url: str, door_kind: str) -> None:
    with Keystile(
        {"store": store_url, "default": "authenticated", "usage": {"enabled": False}},
        pepper=PEPPER,
    ) as ks:
        key = ks.keys.create(name="k", org="acme")
        door = Door(door_kind, ks)
        try:
            assert door("GET", "/x", key=key.secret).status == 200
        finally:
            door.close()
        assert ks.keys.usage(key.id, days=1)[0].total == 0
        assert ks.keys.get(key.id).last_used_at is not None  # last_used_at still written


def test_counts_add_up_across_flushes_and_old_days_are_pruned(ks: Keystile, clock: Clock) -> None:
    key = ks.keys.create(name="k", org="acme")
    for _ in range(3):
        ks.count_use(key.id, "/a", 200)
    ks.flush()
    for _ in range(2):
        ks.count_use(key.id, "/a", 200)
    ks.flush()
    assert ks.keys.usage(key.id, days=1)[0].by_route == {"/a": 5}
    # 90 days of retention (the default): a flush 90 days later drops today's row.
    clock.now = NOW + timedelta(days=89)
    ks.count_use(key.id, "/b", 200)
    ks.flush()
    assert ks.keys.usage(key.id, days=90)[0].total == 5
    clock.now = NOW + timedelta(days=90)
    ks.count_use(key.id, "/b", 200)
    ks.flush()
    days = ks.keys.usage(key.id, days=91)
    assert days[0].date == date(2026, 12, 3) and days[0].total == 0
    assert sum(d.total for d in days) == 2


@pytest.mark.parametrize(
    "days",
    [
        pytest.param(0, id="zero"),
        pytest.param(367, id="over-a-year"),
        pytest.param("30", id="text"),
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="fraction"),
    ],
)
def test_bad_days_are_refused_naming_the_field(ks: Keystile, days: Any) -> None:
    key = ks.keys.create(name="k", org="acme")
    with pytest.raises(KeyInputError) as caught:
        ks.keys.usage(key.id, days=days)
    assert caught.value.field == "days"
    with pytest.raises(KeyInputError):
        ks.keys.usage_totals(org="acme", days=days)


def test_usage_of_an_unknown_key_is_key_not_found(ks: Keystile) -> None:
    with pytest.raises(KeyNotFound):
        ks.keys.usage("key_nope", days=7)


@pytest.mark.anyio
async def test_async_twins_read_the_same(ks: Keystile) -> None:
    key = await ks.keys.acreate(name="k", org="acme")
    ks.count_use(key.id, "/a", 200)
    days = await ks.keys.ausage(key.id, days=1)
    assert days[0].total == 1
    assert await ks.keys.ausage_totals(org="acme", days=1) == {key.id: 1}
    await ks.arelease()


def test_list_all_includes_revoked_keys(ks: Keystile) -> None:
    kept = ks.keys.create(name="kept", org="acme")
    gone = ks.keys.create(name="gone", org="acme")
    ks.keys.revoke(gone.id)
    ks.keys.create(name="elsewhere", org="other")
    assert [r.id for r in ks.keys.list(org="acme")] == [kept.id]
    every = {r.id: r for r in ks.keys.list_all(org="acme")}
    assert set(every) == {kept.id, gone.id}
    assert every[gone.id].revoked_at is not None and every[kept.id].revoked_at is None


def test_the_audit_trail_reads_back_newest_first_without_secrets(
    ks: Keystile, clock: Clock, door_kind: str
) -> None:
    key = ks.keys.create(name="k", org="acme")
    other = ks.keys.create(name="o", org="other")
    clock.now = NOW + timedelta(minutes=1)
    ks.keys.update(key.id, name="renamed")
    door = Door(door_kind, ks)
    try:
        ks.keys.revoke(key.id)
        clock.now = NOW + timedelta(minutes=2)
        assert door("GET", "/api/v1/events", key=key.secret, client="10.0.0.1").status == 401
    finally:
        door.close()
    events = ks.audit.events(org="acme", days=7)
    assert [e.event for e in events][:2] == ["request.refused", "key.revoked"]
    assert events == sorted(events, key=lambda e: e.time, reverse=True)
    assert {e.org for e in events} == {"acme"}
    assert events[0].key_id == key.id and events[0].client == "10.0.0.1"
    assert events[0].status == 401
    assert all(key.secret not in repr(e) and key.secret not in str(e.as_dict()) for e in events)
    assert {e.key_id for e in ks.audit.events(org="other")} == {other.id}
    only = ks.audit.events(org="acme", key_id=key.id, days=1)
    assert {e.key_id for e in only} == {key.id}
    clock.now = NOW + timedelta(days=8)
    assert ks.audit.events(org="acme", days=7) == []


def test_a_failed_flush_keeps_its_counts_for_the_next_one(caplog: pytest.LogCaptureFixture) -> None:
    written: list[dict[Any, int]] = []
    down = [True]

    def write_counts(counts: dict[Any, int]) -> None:
        if down[0]:
            raise StoreUnavailable("down (test)")
        written.append(dict(counts))

    buffer = LastUsed(lambda pending: None, 60, write_counts=write_counts, max_counts=2)
    for _ in range(3):
        buffer.count(("key_a", 1, "/a", 200))
    with caplog.at_level(logging.WARNING, logger="keystile"):
        buffer.flush()
    assert any("usage counts" in r.message for r in caplog.records)
    buffer.count(("key_a", 1, "/a", 200))
    buffer.count(("key_b", 1, "/a", 200))
    buffer.count(("key_c", 1, "/a", 200))  # over the bound: dropped, and said so
    down[0] = False
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="keystile"):
        buffer.close()
    assert written == [{("key_a", 1, "/a", 200): 4, ("key_b", 1, "/a", 200): 1}]
    assert any("dropped 1 usage counts" in r.message for r in caplog.records)
