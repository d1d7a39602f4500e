"""The dashboard's I/O-free parts: the form token, the Origin check, routing, forms, the chart."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from keystile import Keystile
from keystile.dashboard._core import route
from keystile.dashboard._csrf import MAX_AGE, CsrfSigner, same_origin
from keystile.dashboard._forms import BadForm, Form, Invalid, Permissions
from keystile.dashboard._views import STALE_AFTER, chart_of, key_view
from keystile.management._input import Caller, ScopeRules
from keystile.usage import UsageDay
from tests.conftest import PEPPER
from tests.dashboard_site import CONFIG

NOW = 1_800_000_000.0
ADMIN = Caller("u_9", "acme", True)
MEMBER = Caller("u_1", "acme", False)


@pytest.fixture(scope="module")
def ks() -> Keystile:
    return Keystile(CONFIG, pepper=PEPPER)


@pytest.fixture(scope="module")
def permissions(ks: Keystile) -> Permissions:
    return Permissions(ScopeRules(ks.config.known_scopes(), ks.scopes), ks.scopes)


# -- the token -------------------------------------------------------------------------------


def test_a_token_is_valid_for_its_user_and_org_only() -> None:
    signer = CsrfSigner(b"k" * 32)
    token = signer.issue("u_1", "acme", now=NOW)
    assert signer.valid(token, "u_1", "acme", now=NOW + 60)
    assert not signer.valid(token, "u_2", "acme", now=NOW)
    assert not signer.valid(token, "u_1", "rival", now=NOW)
    assert not CsrfSigner(b"j" * 32).valid(token, "u_1", "acme", now=NOW)


def test_user_and_org_cannot_be_shifted_into_each_other() -> None:
    signer = CsrfSigner(b"k" * 32)
    token = signer.issue("a:b", "c", now=NOW)
    assert not signer.valid(token, "a", "b:c", now=NOW)


@pytest.mark.parametrize(
    ("age", "valid"),
    [(0, True), (MAX_AGE, True), (MAX_AGE + 1, False), (-30, True), (-3600, False)],
    ids=["fresh", "last-second", "expired", "small-skew", "from-the-future"],
)
def test_a_token_lives_a_day(age: int, valid: bool) -> None:
    signer = CsrfSigner(b"k" * 32)
    assert signer.valid(signer.issue("u", "o", now=NOW), "u", "o", now=NOW + age) is valid


@pytest.mark.parametrize(
    "token",
    ["", "abc", "1800000000", "1800000000.", ".abc", "-1.abc", "x" * 200, "١٨.abc"],
    ids=["empty", "no-dot", "no-mac", "empty-mac", "no-time", "negative", "long", "non-ascii"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert not CsrfSigner(b"k" * 32).valid(token, "u", "o", now=NOW)


def test_the_default_secret_is_derived_from_the_pepper_and_is_no_digest(ks: Keystile) -> None:
    key = ks.derive_key("dashboard-csrf")
    assert len(key) == 32 and key == Keystile(CONFIG, pepper=PEPPER).derive_key("dashboard-csrf")
    assert key != Keystile(CONFIG, pepper=b"another-pepper-0123456789").derive_key("dashboard-csrf")
    assert key != ks.derive_key("something-else")
    assert key.hex() != ks.digest("dashboard-csrf") and key.hex() != ks.digest(
        "keystile:dashboard-csrf"
    )
    assert repr(CsrfSigner(key)) == "CsrfSigner(...)"


# -- Origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        pytest.param(None, "app.example", True, id="no-origin"),
        pytest.param("null", "app.example", True, id="null"),
        pytest.param("https://app.example", "app.example", True, id="same"),
        pytest.param("http://app.example", "app.example", True, id="tls-ended-by-a-proxy"),
        pytest.param("https://APP.example", "app.example", True, id="case"),
        pytest.param("https://app.example:443", "app.example", True, id="default-port"),
        pytest.param("http://app.example:8000", "app.example:8000", True, id="port"),
        pytest.param("http://[::1]:8000", "[::1]:8000", True, id="ipv6"),
        pytest.param("https://evil.example", "app.example", False, id="other-host"),
        pytest.param("https://app.example.evil", "app.example", False, id="suffix"),
        pytest.param("https://app.example:8443", "app.example", False, id="other-port"),
        pytest.param("https://app.example", None, False, id="no-host"),
        pytest.param("file://", "app.example", False, id="file"),
        pytest.param("https://app.example/x", "app.example", False, id="with-path"),
        pytest.param("https://app.example:99999", "app.example", False, id="bad-port"),
    ],
)
def test_origin_must_name_this_host(origin: str | None, host: str | None, same: bool) -> None:
    assert same_origin(origin, host) is same


# -- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("", ("list", None)),
        ("/", ("list", None)),
        ("/new", ("new", None)),
        ("/new/", ("new", None)),
        ("/key_abc123", ("key", "key_abc123")),
        ("/key_abc123/rotate", ("rotate", "key_abc123")),
        ("/key_abc123/revoke", ("revoke", "key_abc123")),
        ("/static/dashboard.css", ("static", "dashboard.css")),
        ("/static/secrets.txt", None),
        ("/static/../x", None),
        ("/key_abc123/delete", None),
        ("/abc", None),
        ("//new", None),
        ("/key_abc/rotate/x", None),
        ("new", None),
    ],
)
def test_routes(path: str, page: tuple[str, str | None] | None) -> None:
    assert route(path) == page


# -- forms and permissions --------------------------------------------------------------------


def test_a_form_field_sent_twice_is_refused() -> None:
    form = Form.parse(b"name=a&name=b&scope=x&scope=y")
    assert form.all("scope") == ["x", "y"]
    with pytest.raises(BadForm):
        form.one("name")
    with pytest.raises(BadForm):
        Form.parse(b"name=\xff")


def test_tiers(permissions: Permissions) -> None:
    assert permissions.tier("events:read") == "read"
    assert permissions.tier("events:write") == "write"
    assert permissions.tier("servers:delete") == "destructive"
    assert permissions.tier("admin") == "destructive"  # admin implies *
    assert permissions.tier("*") == "destructive"


def test_custom_offers_patterns_and_destructive_scopes_to_admins_only(
    permissions: Permissions,
) -> None:
    def offered(caller: Caller) -> set[str]:
        return {c.scope for g in permissions.groups(caller) for c in g.choices}

    member, admin = offered(MEMBER), offered(ADMIN)
    assert {"events:read", "events:write", "results", "servers:read"} <= member
    assert not {s for s in member if "*" in s or s in ("servers:delete", "admin")}
    assert {"*", "events:*", "*:read", "servers:delete", "admin"} <= admin
    assert "*:delete" not in admin  # it would grant nothing: servers:delete is destructive


def test_a_member_sees_the_scopes_a_key_holds_even_if_they_cannot_add_them(
    permissions: Permissions,
) -> None:
    groups = permissions.groups(MEMBER, checked=["servers:delete"], held=["servers:delete", "x:y"])
    held = {c.scope: c for g in groups for c in g.choices if c.held_only}
    assert held["servers:delete"].checked and "x:y" in held


def test_presets_and_custom_read_into_scopes(permissions: Permissions) -> None:
    read_only = Form.parse(b"permissions=read-only")
    assert set(permissions.read(read_only, MEMBER)) == {"events:read", "servers:read"}
    custom = Form.parse(b"permissions=custom&scope=results&scope=results&scope=events:read")
    assert permissions.read(custom, MEMBER) == ("results", "events:read")
    assert permissions.preset_of(["servers:read", "events:read"]) == "read-only"
    assert permissions.preset_of(["results"]) == "custom"
    with pytest.raises(Invalid, match="permissions"):
        permissions.read(Form.parse(b"permissions=custom&scope=*"), MEMBER)


# -- what a key shows ------------------------------------------------------------------------


def test_a_key_unused_for_90_days_is_stale(ks: Keystile, permissions: Permissions) -> None:
    record = ks.keys.create(name="k", org="acme", scopes=["results"]).record
    now = record.created_at
    fresh = key_view(record, now=now, caller=ADMIN, permissions=permissions, requests=0)
    old = key_view(record, now=now + STALE_AFTER, caller=ADMIN, permissions=permissions, requests=0)
    used = record.replace(last_used_at=(now + STALE_AFTER).replace(tzinfo=None))  # naive, as SQL
    recent = key_view(
        used, now=now + STALE_AFTER, caller=ADMIN, permissions=permissions, requests=0
    )
    assert (fresh.stale, old.stale, recent.stale) == (False, True, False)
    assert fresh.owner == "Bot" and fresh.display == f"{record.prefix}…{record.last4}"


def test_destructive_scopes_are_never_folded_into_more(
    ks: Keystile, permissions: Permissions
) -> None:
    scopes = ["results", "events:read", "events:write", "servers:read", "x:a", "servers:delete"]
    record = ks.keys.create(name="k", org="acme", scopes=scopes).record
    view = key_view(
        record, now=record.created_at, caller=ADMIN, permissions=permissions, requests=1
    )
    shown = [t.scope for t in view.tags]
    assert "servers:delete" in shown and view.more == len(scopes) - len(shown) > 0
    assert view.has_destructive


# -- the chart -------------------------------------------------------------------------------


def _days(counts: list[dict[int, int]]) -> list[UsageDay]:
    first = date(2026, 3, 1)
    return [UsageDay(first + timedelta(days=i), sum(c.values()), c) for i, c in enumerate(counts)]


def test_the_chart_stacks_2xx_4xx_and_429_a_bar_a_day() -> None:
    chart = chart_of(_days([{200: 6, 404: 2, 429: 2}, {}, {201: 1, 500: 1}]))
    assert len(chart.bars) == 3 and chart.top == 10 and chart.total == 12
    first = chart.bars[0]
    assert [s.kind for s in first.segments] == ["ok", "client", "limited"]
    assert sum(s.height for s in first.segments) == pytest.approx(chart.height)
    assert first.segments[0].y == pytest.approx(chart.height * 0.4)  # 6 of 10, from the bottom
    assert chart.bars[1].segments == ()
    assert [s.kind for s in chart.bars[2].segments] == ["ok", "other"]
    assert chart.summary == ("12 requests in the last 3 days: 7 2xx, 2 4xx, 2 429, 1 other.")
    assert first.label == "2026-03-01: 10 requests (6 2xx, 2 4xx, 2 429)"


def test_an_unused_key_has_a_flat_chart() -> None:
    chart = chart_of(_days([{}] * 30))
    assert chart.total == 0 and chart.top == 1 and len(chart.bars) == 30
    assert chart.summary == "0 requests in the last 30 days."
    assert chart.first == "01 Mar" and chart.last == "30 Mar"


@pytest.mark.parametrize(
    ("peak", "top"), [(0, 1), (1, 1), (3, 5), (10, 10), (11, 20), (4999, 5000)]
)
def test_the_axis_top_is_a_round_number(peak: int, top: int) -> None:
    assert chart_of(_days([{200: peak}])).top == top


def test_when_is_shown_as_a_date_in_utc() -> None:
    from keystile.dashboard._views import When

    when = When.of(datetime(2026, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-2))))
    assert when is not None
    assert (when.iso, when.text, when.exact) == (
        "2026-03-10T01:30:00Z",
        "10 Mar 2026",
        "2026-03-10 01:30 UTC",
    )
