"""The express lane answers exactly as the full decision does, or leaves the request to it.

``pipeline.express`` is SPEC section 4 as a plain call for a request that
needs no I/O (a cached key, an in-process limiter). These tests run the same
requests through two engines over one store and one clock: one decides as
the doors do (``Keystile.decide``/``adecide``, express first), the other
drives ``pipeline.decide`` alone. Every decision must be the same, down to
the headers and the principal; and express must answer the common request
itself (or it would be dead code) and leave every other one alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from keystile import Keystile
from keystile._flow import drive
from keystile._memory_limiter import MemoryLimiter
from keystile.errors import ServiceUnavailable
from keystile.pipeline import Admit, Decision, Refusal, decide, express
from keystile.sansio import HeaderMap, RequestView
from tests.conftest import PEPPER

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "limiter": {"storage": "memory://", "strategy": "sliding-window-counter"},
    "limits": {"key": "5/minute", "org": "100/hour", "failed_auth": "3/minute"},
    "routes": [
        {"path": "/health", "public": True},
        {"path": "/api/v1/events", "methods": ["GET", "POST"], "scopes": ["events:read"]},
        {"path": "/orgs/{org}/events", "org_param": "org", "scopes": ["events:read"]},
        {"path": "/embed/{dashboard}", "embed": True},
        {"path": "/tight", "limit": "1/minute"},
    ],
}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def unix(self) -> float:
        return self.now.timestamp()


def _engine(clock: Clock, store: Any = None) -> Keystile:
    ks = Keystile(CONFIG, pepper=PEPPER, clock=clock, store=store)
    # Both limiters read the one test clock, so their windows and resets agree.
    ks._limiter = MemoryLimiter("sliding-window-counter", clock=clock.unix)
    return ks


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def twins(clock: Clock) -> Iterator[tuple[Keystile, Keystile]]:
    doors = _engine(clock)
    full = _engine(clock, store=doors.store)
    yield doors, full
    full.close()
    doors.close()


def _view(method: str, path: str, **headers: str) -> RequestView:
    header_map = HeaderMap()
    for name, value in headers.items():
        header_map[name.replace("_", "-")] = [value]
    return RequestView(method, path.encode(), headers=header_map, client="10.0.0.7")


def _fields(decision: Decision) -> tuple[Any, ...]:
    if isinstance(decision, Admit):
        match = decision.route
        return (
            "admit",
            decision.principal,
            tuple(decision.headers),
            decision.strip_embed_token,
            None if match is None else (match.rule.path, dict(match.params)),
            decision.used_at,
        )
    assert isinstance(decision, Refusal)
    return (
        "refuse",
        decision.status,
        decision.code,
        decision.message,
        decision.headers,
        dict(decision.extra),
        decision.key_id,
        decision.route,
    )


def _full(ks: Keystile, view: RequestView) -> Decision:
    return drive(decide(ks.policy, ks.lookups, view), ks._perform, ServiceUnavailable)


@pytest.fixture
def keys(twins: tuple[Keystile, Keystile]) -> dict[str, str]:
    doors, _ = twins
    made = {
        "reader": doors.keys.create(name="r", scopes=["events:read"], org="acme"),
        "none": doors.keys.create(name="n", scopes=[], org="acme"),
        "other_org": doors.keys.create(name="o", scopes=["events:read"], org="globex"),
        "short": doors.keys.create(name="s", scopes=["events:read"], org="acme", expires_in_days=1),
        "gone": doors.keys.create(name="g", scopes=["events:read"], org="acme"),
        "fenced": doors.keys.create(
            name="f", scopes=["events:read"], org="acme", allowed_ips=["192.0.2.0/24"]
        ),
    }
    return {name: made[name].secret for name in made}


def _requests(keys: dict[str, str]) -> list[RequestView]:
    bearer = {name: f"Bearer {secret}" for name, secret in keys.items()}
    return [
        _view("GET", "/api/v1/events", authorization=bearer["reader"]),
        _view("HEAD", "/api/v1/events", authorization=bearer["reader"]),
        _view("GET", "/api/v1/events", x_api_key=keys["reader"]),
        _view("GET", "/api/v1/events", authorization=bearer["none"]),  # lacks the scope
        _view("GET", "/orgs/acme/events", authorization=bearer["reader"]),
        _view("GET", "/orgs/acme/events", authorization=bearer["other_org"]),  # wrong org
        _view("GET", "/api/v1/events", authorization=bearer["short"]),
        _view("GET", "/api/v1/events", authorization=bearer["gone"]),
        _view("GET", "/api/v1/events", authorization=bearer["fenced"]),  # not from here
        _view("GET", "/health"),
        _view("GET", "/health", authorization=bearer["reader"]),
        _view("GET", "/nowhere", authorization=bearer["reader"]),  # no rule
        _view("GET", "/embed/d1", authorization=bearer["reader"]),
        _view("GET", "/tight", authorization=bearer["reader"]),
        _view("GET", "/api/v1/events"),  # no key
        _view("GET", "/api/v1/events", authorization="Bearer sk_not_a_key"),
        _view("GET", "/api/v1/events", authorization="Basic abc"),
        _view("GET", "/api/v1/events", authorization=bearer["reader"], x_api_key=keys["reader"]),
        _view("GET", "/api/v1/events", authorization="Bearer two words"),  # malformed: 400
        _view("GET", "/api/v1/../events", authorization=bearer["reader"]),  # bad path
        _view(
            "OPTIONS",
            "/api/v1/events",
            origin="https://app.example",
            access_control_request_method="GET",
        ),
    ]


def _warm(ks: Keystile, views: list[RequestView], clock: Clock) -> None:
    # Every key is looked up once, so both caches hold the same records; the
    # limits that took spend afresh.
    for view in views:
        _full(ks, view)
    ks._limiter = MemoryLimiter("sliding-window-counter", clock=clock.unix)


def _rounds(
    twins: tuple[Keystile, Keystile], clock: Clock, keys: dict[str, str], decide_doors: Any
) -> list[tuple[Any, ...]]:
    doors, full = twins
    views = _requests(keys)
    _warm(doors, views, clock)
    _warm(full, views, clock)
    gone = next(k for k in doors.keys.list(org="acme") if k.name == "g")
    doors.keys.revoke(gone.id)  # forgotten by the doors engine's cache at once
    full.forget_id(gone.id)
    seen = []
    # Four rounds, the clock moving: limits fill (429), the failed-auth
    # budget runs out and refills, and the short key expires.
    for step in (timedelta(seconds=10), timedelta(minutes=3), timedelta(days=1), timedelta(0)):
        for view in views:
            mine, theirs = decide_doors(doors, view), _full(full, view)
            assert _fields(mine) == _fields(theirs), view
            seen.append(_fields(mine))
        clock.now += step
    return seen


def test_express_decides_as_the_full_decision_does_wsgi(
    twins: tuple[Keystile, Keystile], clock: Clock, keys: dict[str, str]
) -> None:
    seen = _rounds(twins, clock, keys, lambda ks, view: ks.decide(view))
    statuses = {fields[1] if fields[0] == "refuse" else 200 for fields in seen}
    assert statuses >= {200, 400, 401, 403, 429}  # the rounds cover every outcome


def test_express_decides_as_the_full_decision_does_asgi(
    twins: tuple[Keystile, Keystile], clock: Clock, keys: dict[str, str]
) -> None:
    import asyncio

    async def adecide(ks: Keystile, view: RequestView) -> Decision:
        return await ks.adecide(view)

    seen = _rounds(twins, clock, keys, lambda ks, view: asyncio.run(adecide(ks, view)))
    assert any(fields[0] == "admit" and fields[1] is not None for fields in seen)


def test_express_answers_the_common_request_and_leaves_the_rest(
    twins: tuple[Keystile, Keystile], clock: Clock, keys: dict[str, str]
) -> None:
    doors, _ = twins
    views = _requests(keys)
    _warm(doors, views, clock)
    answered = [
        express(doors.policy, doors.lookups, view, doors.limiter.hit_all) is not None
        for view in views
    ]
    # The cached keys admitted by a rule, the scope and org refusals left to
    # decide, the public rule answered: index by index, as _requests lists them.
    assert answered == [
        True,  # GET with Bearer
        True,  # HEAD, routed as GET
        True,  # x-api-key
        False,  # lacks the scope: decide answers the 403
        True,  # the org the path names
        False,  # another org: decide answers the 403
        True,  # a key that expires later
        True,  # a key revoked later: cached and valid here
        False,  # an address outside the key's allowlist
        True,  # a public rule
        True,  # a public rule, key ignored
        False,  # no rule: the default applies
        False,  # an embed route
        True,  # the route's own limit, not yet spent
        False,  # no key
        False,  # not a key
        False,  # another scheme
        False,  # two credentials
        False,  # a malformed credential
        False,  # a path to refuse
        False,  # a CORS preflight
    ]
