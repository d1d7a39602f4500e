"""SPEC section 9, the key dashboard, through its ASGI and WSGI doors alike (no browser)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from starlette.testclient import TestClient

from keystile import Keystile
from tests.conftest import PEPPER, make_engine
from tests.dashboard_site import (
    ADMIN,
    CONFIG,
    MEMBER,
    MOUNT,
    OTHER_MEMBER,
    RIVAL,
    SECURITY_HEADERS,
    Site,
    secret_on,
    snapshot,
)
from tests.doors import Door

DOORS = ["asgi", "wsgi"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 29, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ks(clock: Clock) -> Iterator[Keystile]:
    engine = Keystile(CONFIG, pepper=PEPPER, clock=clock)
    yield engine
    engine.close()


@pytest.fixture(params=DOORS)
def site(request: pytest.FixtureRequest, ks: Keystile) -> Site:
    return Site(request.param, ks)


def bot_key(ks: Keystile, org: str = "acme", **options: Any) -> Any:
    options.setdefault("scopes", ["events:read"])
    return ks.keys.create(name=options.pop("name", "deploy bot"), org=org, **options)


# -- every response --------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(site: Site, ks: Keystile) -> None:
    key = bot_key(ks)
    replies = [
        site.get("/"),
        site.get("/new"),
        site.get(f"/{key.id}"),
        site.get(f"/{key.id}/revoke"),
        site.get("/static/dashboard.css"),
        site.get("/static/dashboard.js"),
        site.get("/no/such/page"),
        site.get("/", session=None),  # the redirect to sign in
        site.post("/new", {"name": "x"}, token=None),  # a refusal
        site.create(),  # the page with the secret
    ]
    for reply in replies:
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers.get(name) == value, (reply.status, name)


def test_pages_use_no_inline_script_or_style_and_no_other_host(site: Site, ks: Keystile) -> None:
    key = bot_key(ks, scopes=["servers:delete"])
    ks.count_use(key.id, "/api/v1/events", 200)
    for page in (site.get("/"), site.get("/new"), site.get(f"/{key.id}"), site.create()):
        assert "<script>" not in page.text and "<style" not in page.text
        assert " style=" not in page.text and " on" + "click=" not in page.text
        assert "http://" not in page.text.replace('xmlns="http://www.w3.org', "")
        assert "https://" not in page.text


def test_static_files_are_served_with_their_types(site: Site) -> None:
    css = site.get("/static/dashboard.css", session=None)
    js = site.get("/static/dashboard.js", session=None)
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert site.get("/static/../engine.py").status == 404
    assert site.get("/static/other.css").status == 404


# -- signing in ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOORS)
def test_no_session_redirects_to_login_with_the_full_path(kind: str, ks: Keystile) -> None:
    site = Site(kind, ks, login_url="/login?from=keys")
    reply = site.get("/key_abc/revoke?x=1&y=2", session=None)
    assert reply.status == 302
    assert reply.headers["location"] == (
        "/login?from=keys&next=" + MOUNT + "/key_abc/revoke%3Fx%3D1%26y%3D2"
    )
    assert Site(kind, ks).get("/", session=None).headers["location"] == (f"/login?next={MOUNT}/")


@pytest.mark.parametrize("kind", DOORS)
def test_no_session_and_no_login_url_is_a_401_page(kind: str, ks: Keystile) -> None:
    reply = Site(kind, ks, login_url=None).get("/", session=None)
    assert reply.status == 401 and reply.has("Sign in")
    assert "csrf_token" not in reply.text


def test_a_bad_login_url_is_refused_when_the_app_is_built(ks: Keystile) -> None:
    for bad in ("login", "javascript:alert(1)", "/login\r\nSet-Cookie: x=1"):
        with pytest.raises(ValueError, match="login_url"):
            Site("wsgi", ks, login_url=bad)


def test_an_async_authenticate_on_the_wsgi_door_is_a_clear_error(ks: Keystile) -> None:
    from werkzeug.test import Client

    from keystile.dashboard import wsgi_app
    from tests.dashboard_site import async_authenticate

    app = wsgi_app(ks, authenticate=async_authenticate)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sync authenticate"):
        Client(app).get("/")


def test_a_sync_authenticate_works_on_the_asgi_door(ks: Keystile) -> None:
    from keystile.dashboard import asgi_app
    from tests.dashboard_site import sync_authenticate

    client = TestClient(asgi_app(ks, authenticate=sync_authenticate))
    assert client.get("/", headers={"X-Session": ADMIN}).status_code == 200


# -- the list --------------------------------------------------------------------------------


def test_an_org_without_keys_shows_no_keys_yet(site: Site) -> None:
    reply = site.get("/")
    assert reply.status == 200
    assert reply.has("No keys yet") and reply.has("Create key")


def test_the_list_shows_the_orgs_active_keys_with_every_column(
    site: Site, ks: Keystile, clock: Clock
) -> None:
    clock.now -= timedelta(days=120)
    bot_key(ks, name="old importer")
    clock.now += timedelta(days=120)
    bot = bot_key(ks, name="deploy bot", scopes=["servers:delete", "events:read"])
    user = ks.keys.create(name="my laptop", org="acme", user="u_1", scopes=["results"])
    gone = bot_key(ks, name="revoked one")
    ks.keys.revoke(gone.id)
    bot_key(ks, org="rival", name="rival's key")
    for _ in range(3):
        ks.count_use(bot.id, "/api/v1/events", 200)
    ks.note_use(bot.id)
    reply = site.get("/")
    assert reply.status == 200
    for column in ("Name", "Type", "Owner", "Permissions", "Key", "Created", "Last used"):
        assert reply.has(f">{column}</th>")
    assert reply.has("Requests (30 days)") and reply.has("Expires")
    assert reply.has("deploy bot") and reply.has("my laptop") and reply.has("old importer")
    assert not reply.has("revoked one") and not reply.has("rival's key")
    assert reply.has(f"{bot.record.prefix}…{bot.record.last4}")
    assert reply.has(">u_1<") and reply.has(">Bot<")
    assert reply.has('servers:delete</code> <span class="tier tier-destructive">destructive')
    assert reply.has("Stale") and reply.has("Never")
    row = reply.text[reply.text.index("deploy bot") :]
    assert ">3</td>" in row[: row.index("</tr>")]
    assert reply.text.index("my laptop") < reply.text.index("old importer")  # newest first
    assert user.secret not in reply.text and bot.secret not in reply.text


# -- create ----------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_a_resubmission_makes_no_second_key(
    site: Site, ks: Keystile
) -> None:
    form_id = site.get("/new").value("form_id")
    fields = {
        "form_id": form_id,
        "name": "CI upload",
        "kind": "bot",
        "permissions": "custom",
        "scope": ["results", "events:read"],
        "expires": "30",
    }
    reply = site.post("/new", fields)
    assert reply.status == 201
    secret = secret_on(reply)
    assert reply.has("Save this API key now — it won't be shown again.")
    assert reply.has('<label for="api-key">API key</label>')
    (record,) = ks.keys.list("acme")
    assert record.name == "CI upload" and record.scopes == ("results", "events:read")
    assert record.kind == "bot" and record.created_by == "u_9" and record.expires_at is not None
    assert ks.digest(secret) == record.digest
    again = site.post("/new", fields)  # what a reload does
    assert again.status == 200 and again.has("created already")
    assert secret not in again.text
    assert len(ks.keys.list_all("acme")) == 1
    for later in (site.get("/"), site.get(f"/{record.id}"), site.get("/new")):
        assert secret not in later.text


def test_a_reload_after_the_key_was_revoked_still_makes_no_second_key(
    site: Site, ks: Keystile
) -> None:
    form_id = site.get("/new").value("form_id")
    fields = {"form_id": form_id, "name": "once", "kind": "bot", "permissions": "read-only"}
    assert site.post("/new", fields).status == 201
    ks.keys.revoke(ks.keys.list("acme")[0].id)
    assert site.post("/new", fields).status == 200
    assert len(ks.keys.list_all("acme")) == 1


def test_a_user_key_belongs_to_the_session_user(site: Site, ks: Keystile) -> None:
    assert site.create(session=MEMBER, kind="user").status == 201
    (record,) = ks.keys.list("acme")
    assert record.kind == "user" and record.owner == "u_1"
    second = site.create(session=MEMBER, kind="user")
    assert second.status == 409
    assert second.has("You already have a user key") and second.has('id="kind-error"')
    assert len(ks.keys.list_all("acme")) == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        pytest.param({"name": ""}, "name", "name must be 1 to 100", id="no-name"),
        pytest.param({"name": "x" * 101}, "name", "at most 100", id="long-name"),
        pytest.param({"kind": "robot"}, "kind", "User key or Bot key", id="bad-kind"),
        pytest.param({"expires": "400"}, "expires", "1 to 365", id="too-late"),
        pytest.param({"expires": "0"}, "expires", "1 to 365", id="zero-days"),
        pytest.param({"permissions": "god-mode"}, "permissions", "Choose one of", id="preset"),
        pytest.param({"permissions": "custom"}, "permissions", "at least one", id="no-scope"),
        pytest.param(
            {"permissions": "custom", "scope": "nope:read"}, "permissions", "unknown", id="unknown"
        ),
    ],
)
def test_a_bad_field_rerenders_the_form_with_400_and_creates_nothing(
    site: Site, ks: Keystile, fields: dict[str, str], field: str, message: str
) -> None:
    reply = site.create(**fields)
    assert reply.status == 400
    assert reply.has(f'id="{field}-error"') and message.lower() in reply.text.lower()
    assert reply.has('aria-invalid="true"') and reply.has("Check the form")
    assert ks.keys.list_all("acme") == []
    if "name" not in fields:
        assert reply.value("name") == "CI upload"  # what was typed comes back


def test_a_member_is_offered_no_wildcard_or_destructive_scope(site: Site) -> None:
    member = site.get("/new", session=MEMBER)
    admin = site.get("/new", session=ADMIN)
    for scope in ("*", "events:*", "*:read", "servers:delete", "admin"):
        assert not member.has(f'value="{scope}"'), scope
        assert admin.has(f'value="{scope}"'), scope
    assert member.has('value="events:read"') and member.has('value="results"')


@pytest.mark.parametrize("scope", ["*", "events:*", "*:read", "servers:delete", "admin"])
def test_a_member_forging_a_wildcard_or_destructive_scope_gets_400(
    site: Site, ks: Keystile, scope: str
) -> None:
    reply = site.create(session=MEMBER, permissions="custom", scope=["events:read", scope])
    assert reply.status == 400 and reply.has('id="permissions-error"')
    assert "Only an admin may grant" in reply.text
    assert ks.keys.list_all("acme") == []
    assert site.create(session=ADMIN, permissions="custom", scope=[scope]).status == 201


# -- one key ---------------------------------------------------------------------------------


def test_the_key_page_shows_fields_chart_and_actions(site: Site, ks: Keystile) -> None:
    key = bot_key(ks, name="deploy bot")
    for status in (200, 200, 404, 429):
        ks.count_use(key.id, "/api/v1/events", status)
    reply = site.get(f"/{key.id}")
    assert reply.status == 200
    assert reply.has("deploy bot") and reply.has(key.id)
    assert reply.has("4 requests in the last 30 days: 2 2xx, 1 4xx, 1 429.")
    assert reply.text.count('class="seg seg-') == 3 and 'role="img"' in reply.text
    for action in (">Save</button>", ">Rotate</button>", ">Revoke</a>"):
        assert reply.has(action)
    assert key.secret not in reply.text


@pytest.mark.parametrize("path", ["/{id}", "/{id}/revoke"])
def test_another_orgs_key_and_an_unknown_one_are_404(site: Site, ks: Keystile, path: str) -> None:
    theirs = bot_key(ks, org="rival")
    mine = bot_key(ks)
    ks.keys.revoke(mine.id)
    for key_id in (theirs.id, "key_doesnotexist", mine.id):
        assert site.get(path.format(id=key_id)).status == 404
    before = snapshot(ks, "rival")
    for action in ("", "/rotate", "/revoke"):
        reply = site.post(f"/{theirs.id}{action}", {"name": "mine now", "grace": "none"})
        assert reply.status == 404
    assert snapshot(ks, "rival") == before
    assert site.get(f"/{theirs.id}", session=RIVAL).status == 200


def test_a_member_sees_another_members_key_read_only_and_cannot_change_it(
    site: Site, ks: Keystile
) -> None:
    theirs = site.create(session=OTHER_MEMBER)
    assert theirs.status == 201
    (record,) = ks.keys.list("acme")
    page = site.get(f"/{record.id}", session=MEMBER)
    assert page.status == 200 and page.has("Read only")
    assert not page.has(">Save</button>") and not page.has(">Revoke</a>")
    before = snapshot(ks)
    for action, fields in (("", {"name": "x", "permissions": "read-only"}), ("/rotate", {})):
        assert site.post(f"/{record.id}{action}", fields, session=MEMBER).status == 403
    assert site.post(f"/{record.id}/revoke", session=MEMBER).status == 403
    assert snapshot(ks) == before
    mine = site.get(f"/{record.id}", session=OTHER_MEMBER)
    assert mine.has(">Save</button>")


def test_save_changes_name_permissions_and_allowed_ips(site: Site, ks: Keystile) -> None:
    key = bot_key(ks, name="old name")
    fields = {
        "name": "new name",
        "permissions": "custom",
        "scope": ["events:write", "results"],
        "allowed_ips": "203.0.113.0/24\n2001:db8::/32",
    }
    reply = site.post(f"/{key.id}", fields)
    assert reply.status == 303
    assert reply.headers["location"] == f"{MOUNT}/{key.id}?saved=1"
    record = ks.keys.get(key.id)
    assert record.name == "new name" and record.scopes == ("events:write", "results")
    assert record.allowed_ips == ("203.0.113.0/24", "2001:db8::/32")
    assert site.get(f"/{key.id}?saved=1").has("Changes saved.")


def test_a_refused_save_shows_the_errors_and_changes_nothing(site: Site, ks: Keystile) -> None:
    key = bot_key(ks)
    before = snapshot(ks)
    fields = {
        "name": "",
        "permissions": "custom",
        "scope": "events:read",
        "allowed_ips": "10.0.0.7/8",
    }
    reply = site.post(f"/{key.id}", fields)
    assert reply.status == 400
    assert reply.has('id="name-error"') and reply.has('id="allowed_ips-error"')
    assert snapshot(ks) == before


def test_a_member_keeps_scopes_an_admin_gave_but_cannot_add_more(site: Site, ks: Keystile) -> None:
    key = ks.keys.create(name="mine", org="acme", user="u_1", scopes=["servers:delete"])
    keep = {"name": "renamed", "permissions": "custom", "scope": ["servers:delete", "results"]}
    assert site.post(f"/{key.id}", keep, session=MEMBER).status == 303
    assert ks.keys.get(key.id).scopes == ("servers:delete", "results")
    add = {"name": "renamed", "permissions": "custom", "scope": ["results", "*"]}
    assert site.post(f"/{key.id}", add, session=MEMBER).status == 400
    assert ks.keys.get(key.id).scopes == ("servers:delete", "results")


def test_rotate_shows_the_new_secret_once_and_a_repeat_rotates_nothing(
    site: Site, ks: Keystile
) -> None:
    key = bot_key(ks)
    reply = site.post(f"/{key.id}/rotate", {"grace": "24h"})
    assert reply.status == 201 and reply.has("Save this API key now")
    secret = secret_on(reply)
    (new,) = [r for r in ks.keys.list("acme") if r.id != key.id]
    assert new.rotated_from == key.id and ks.digest(secret) == new.digest
    again = site.post(f"/{key.id}/rotate", {"grace": "24h"})
    assert again.status == 409 and secret not in again.text
    assert len(ks.keys.list_all("acme")) == 2
    old_page = site.get(f"/{key.id}")
    assert old_page.has("This key was rotated") and not old_page.has(">Rotate</button>")
    assert secret not in site.get(f"/{new.id}").text


@pytest.mark.parametrize("rival_then", ["kept", "revoked"])
def test_a_rotation_that_loses_the_race_is_409_already_rotated(
    site: Site, ks: Keystile, monkeypatch: pytest.MonkeyPatch, rival_then: str
) -> None:
    """Two rotate POSTs at once: both pass the page's check, the store lets one rotate.

    The loser shows the page a later POST would; if the winner's key was
    revoked meanwhile (nothing left to point to), a plain 409 saying why.
    """
    key = bot_key(ks)
    rivals: list[Any] = []
    real_list, real_alist = ks.keys.list, ks.keys.alist

    def rival_acts() -> bool:
        """Whether this is the page's first look; the rival rotates right after it."""
        if rival_then == "revoked" and rivals:
            ks.keys.revoke(rivals[0].id)
        return not rivals

    def list_then_lose(org: str | None = None) -> Any:
        first_look = rival_acts()
        listed = real_list(org)
        if first_look:
            rivals.append(ks.keys.rotate(key.id, grace="1h"))
        return listed

    async def alist_then_lose(org: str | None = None) -> Any:
        first_look = rival_acts()
        listed = await real_alist(org)
        if first_look:
            rivals.append(await ks.keys.arotate(key.id, grace="1h"))
        return listed

    monkeypatch.setattr(ks.keys, "list", list_then_lose)
    monkeypatch.setattr(ks.keys, "alist", alist_then_lose)
    reply = site.post(f"/{key.id}/rotate", {"grace": "24h"})
    (rival,) = rivals
    assert reply.status == 409 and reply.has("Key already rotated"), reply.text
    assert reply.has(rival.id) and rival.secret not in reply.text
    assert "Save this API key now" not in reply.text
    assert {r.id for r in ks.keys.list_all("acme")} == {key.id, rival.id}
    if rival_then == "revoked":
        assert reply.has(f"its successor is {rival.id}")


@pytest.mark.parametrize("grace", ["none", "1h", "7d"])
def test_rotate_takes_the_grace_periods_offered(site: Site, ks: Keystile, grace: str) -> None:
    key = bot_key(ks)
    assert site.post(f"/{key.id}/rotate", {"grace": grace}).status == 201
    old = ks.keys.get(key.id)
    assert old.is_active(ks.now()) is (grace != "none")


def test_rotate_refuses_a_grace_it_does_not_offer(site: Site, ks: Keystile) -> None:
    key = bot_key(ks)
    before = snapshot(ks)
    reply = site.post(f"/{key.id}/rotate", {"grace": "999d"})
    assert reply.status == 400 and reply.has('id="grace-error"')
    assert snapshot(ks) == before


def test_revoke_asks_first_then_the_key_is_gone_and_refused_at_once(
    site: Site, ks: Keystile
) -> None:
    key = bot_key(ks, name="to revoke")
    with Door("asgi", ks) as api:
        assert api("GET", "/api/v1/events", key=key.secret).status == 200
        confirm = site.get(f"/{key.id}/revoke")
        assert confirm.status == 200 and confirm.has("Revoke “to revoke”?")
        assert confirm.has(">Revoke</button>") and ks.keys.get(key.id).revoked_at is None
        reply = site.post(f"/{key.id}/revoke")
        assert reply.status == 303 and reply.headers["location"] == f"{MOUNT}/?revoked={key.id}"
        assert api("GET", "/api/v1/events", key=key.secret).status == 401
    listed = site.get(f"/?revoked={key.id}")
    assert listed.has("Revoked “to revoke”") and listed.has("No keys yet")


# -- cross-site requests ---------------------------------------------------------------------


def _forged_tokens(site: Site, clock: Clock) -> dict[str, str | None]:
    fresh = site.token(ADMIN)
    other_user = site.token("u_8:acme:admin")
    other_org = site.token("u_9:rival:admin")
    clock.now -= timedelta(days=2)
    old = site.token(ADMIN)
    clock.now += timedelta(days=2)
    issued, _, mac = fresh.partition(".")
    return {
        "none": None,
        "empty": "",
        "garbage": "not-a-token",
        "another user": other_user,
        "another org": other_org,
        "expired": old,
        "tampered time": f"{int(issued) + 1}.{mac}",
    }


@pytest.mark.parametrize("kind", DOORS)
def test_a_post_without_a_valid_token_is_403_and_changes_nothing(
    kind: str, ks: Keystile, clock: Clock
) -> None:
    site = Site(kind, ks)
    key = bot_key(ks)
    before = snapshot(ks)
    form_id = site.get("/new").value("form_id")
    actions = [
        ("/new", {"form_id": form_id, "name": "x", "kind": "bot", "permissions": "read-only"}),
        (f"/{key.id}", {"name": "renamed", "permissions": "read-only"}),
        (f"/{key.id}/rotate", {"grace": "none"}),
        (f"/{key.id}/revoke", {}),
    ]
    for what, token in _forged_tokens(site, clock).items():
        for path, fields in actions:
            reply = site.post(path, fields, token=token)
            assert reply.status == 403, (what, path)
            assert reply.has("Request refused")
    assert snapshot(ks) == before


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        pytest.param("https://evil.example", 403, id="another-host"),
        pytest.param("SAME:8443", 403, id="another-port"),
        pytest.param("http://testserver.evil.example", 403, id="suffix"),
        pytest.param("null", 303, id="null"),
        pytest.param("SAME", 303, id="same"),
    ],
)
@pytest.mark.parametrize("kind", DOORS)
def test_a_post_whose_origin_names_another_host_is_403(
    kind: str, ks: Keystile, origin: str, status: int
) -> None:
    site = Site(kind, ks)
    key = bot_key(ks)
    before = snapshot(ks)
    reply = site.post(f"/{key.id}/revoke", origin=origin.replace("SAME", site.origin))
    assert reply.status == status
    if status == 403:
        assert snapshot(ks) == before


@pytest.mark.parametrize("kind", DOORS)
def test_a_token_from_another_process_sharing_the_pepper_is_accepted(
    kind: str, ks: Keystile, clock: Clock
) -> None:
    key = bot_key(ks)
    other_process = Site(kind, Keystile(CONFIG, pepper=PEPPER, clock=clock))  # same pepper
    own_secret = Site(kind, ks, secret="a secret of the host's own choosing")
    token = other_process.token()
    assert own_secret.post(f"/{key.id}/revoke", token=token).status == 403
    assert Site(kind, ks).post(f"/{key.id}/revoke", token=token).status == 303
    with pytest.raises(ValueError, match="16 bytes"):
        Site(kind, ks, secret="short")


def test_a_post_that_is_not_a_form_is_415(site: Site, ks: Keystile) -> None:
    key = bot_key(ks)
    reply = site.post(f"/{key.id}/revoke", content_type="application/json", body=b"{}")
    assert reply.status == 415
    assert ks.keys.get(key.id).revoked_at is None


def test_a_form_with_a_field_twice_is_400(site: Site, ks: Keystile) -> None:
    key = bot_key(ks)
    fields = [("name", "a"), ("name", "b"), ("permissions", "read-only")]
    assert site.post(f"/{key.id}", fields).status == 400
    assert ks.keys.get(key.id).name == "deploy bot"


def test_unknown_pages_are_404_and_wrong_methods_405(site: Site, ks: Keystile) -> None:
    key = bot_key(ks)
    assert site.get("/nope").status == 404
    assert site.get(f"/{key.id}/nope").status == 404
    reply = site.get(f"/{key.id}/rotate")
    assert reply.status == 405 and reply.headers["allow"] == "POST"
    assert site.request("DELETE", f"/{key.id}").status == 405


# -- every store -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOORS)
def test_create_list_rotate_revoke_on_every_store(store_url: str, kind: str) -> None:
    engine = make_engine(store_url, scopes={"known": ["results", "events:read"]})
    try:
        site = Site(kind, engine)
        if kind == "asgi":
            with site.client:  # one event loop, so one async store, for every request
                _lifecycle(site, engine)
                site.client.portal.call(engine.aclose)
        else:
            _lifecycle(site, engine)
    finally:
        engine.close()


def _lifecycle(site: Site, engine: Keystile) -> None:
    created = site.create(permissions="custom", scope="results", expires="7")
    assert created.status == 201
    (record,) = engine.keys.list("acme")
    engine.note_use(record.id)
    engine.count_use(record.id, "/x", 200)
    listed = site.get("/")
    assert listed.has("CI upload") and listed.has(">1</td>")
    assert site.get(f"/{record.id}").has("1 request in the last 30 days")
    rotated = site.post(f"/{record.id}/rotate", {"grace": "1h"})
    assert rotated.status == 201
    assert site.post(f"/{record.id}/revoke").status == 303
    assert [r.rotated_from for r in engine.keys.list("acme")] == [record.id]


# -- what stays out of sight -----------------------------------------------------------------


def test_the_secret_is_not_in_the_repr_of_the_page_that_shows_it(ks: Keystile) -> None:
    from keystile.dashboard._answers import Page, PageRequest
    from keystile.dashboard._core import Dashboard, run_sync
    from keystile.management._effects import Authenticate, ReadBody

    dashboard = Dashboard(ks)
    token = dashboard.csrf.issue("u_9", "acme", now=ks.now().timestamp())
    body = f"csrf_token={token}&form_id=abcdefghijklmnopqrstuv&name=x&kind=bot&permissions=full"
    request = PageRequest("POST", "/new", content_type="application/x-www-form-urlencoded")

    def answer(effect: Any) -> Any:
        if isinstance(effect, Authenticate):
            return ("u_9", "acme", True)
        assert isinstance(effect, ReadBody)
        return body.encode()

    page = run_sync(dashboard.handle(request), ks, answer)
    assert isinstance(page, Page) and page.status == 201
    secret = str(page.context["secret"])
    assert ks.digest(secret) == ks.keys.list("acme")[0].digest
    assert secret not in repr(page) and secret not in repr(dict(page.context))
    assert secret in dashboard.render(page)[2].decode()
    assert secret not in repr(dashboard) and "secret" not in repr(dashboard.csrf)


def test_with_usage_counting_off_the_pages_say_so(clock: Clock) -> None:
    engine = Keystile({**CONFIG, "usage": {"enabled": False}}, pepper=PEPPER, clock=clock)
    try:
        key = bot_key(engine)
        for kind in DOORS:
            site = Site(kind, engine)
            assert site.get("/").has('title="Usage counting is off">—')
            assert site.get(f"/{key.id}").has("Usage counting is off")
    finally:
        engine.close()
