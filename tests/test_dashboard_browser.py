"""SPEC section 9 in a real browser: Debian's Chromium, driven by Playwright, on both doors.

Both doors are served for real on loopback (uvicorn for ASGI, werkzeug's
server for WSGI), inside a host app whose session is a cookie and whose API
is behind ``KeystileMiddleware``. Pages are driven as a user drives them,
by accessible names: a control a test cannot find by its label is one a
screen reader cannot use either. No browser is downloaded: Chromium comes
from the system (``apt-get install chromium``; ``.ci/run`` does it).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile import Keystile
from tests.conftest import PEPPER, REQUIRE_SERVICES
from tests.dashboard_site import CONFIG, SECURITY_HEADERS

sync_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

CHROMIUM = os.environ.get("KEYSTILE_CHROMIUM", "/usr/bin/chromium")
MOUNT = "/dashboard/api-keys"
DOORS = ["asgi", "wsgi"]
SERIOUS = ("serious", "critical")
SAVE_NOW = "Save this API key now — it won't be shown again."
HOST_CONFIG: dict[str, Any] = {
    **CONFIG,
    "routes": [
        *CONFIG["routes"],
        {"path": "/login", "public": True},
        {"path": MOUNT, "public": True},
        {"path": MOUNT + "/{page:path}", "public": True},
    ],
}


def cookie_session(cookie: str | None) -> tuple[str, str, bool] | None:
    """The host's session: a cookie `user:org:role` (signed, in real life)."""
    if not cookie:
        return None
    user, org, role = cookie.split(":")
    return user, org, role == "admin"


LOGIN_PAGE = '<!doctype html><html lang="en"><title>Sign in</title><main><h1>Sign in</h1></main>'


def asgi_host(ks: Keystile) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Mount, Route

    from keystile.asgi import KeystileMiddleware
    from keystile.dashboard import asgi_app

    async def session(request: Request) -> tuple[str, str, bool] | None:
        return cookie_session(request.cookies.get("session"))

    async def login(request: Request) -> HTMLResponse:
        return HTMLResponse(LOGIN_PAGE)

    async def events(request: Request) -> JSONResponse:
        return JSONResponse({"key": request.state.api_key.id})

    return Starlette(
        routes=[
            Route("/login", login),
            Route("/api/v1/events", events),
            Mount(MOUNT, app=asgi_app(ks, authenticate=session, login_url="/login")),
        ],
        middleware=[Middleware(KeystileMiddleware, config=ks)],
    )


def wsgi_host(ks: Keystile) -> Any:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.wrappers import Request, Response

    from keystile.dashboard import wsgi_app
    from keystile.wsgi import ENVIRON_KEY, KeystileMiddleware

    def session(request: Request) -> tuple[str, str, bool] | None:
        return cookie_session(request.cookies.get("session"))

    @Request.application
    def host(request: Request) -> Response:
        if request.path == "/login":
            return Response(LOGIN_PAGE, content_type="text/html")
        return Response(f'{{"key": "{request.environ[ENVIRON_KEY].id}"}}')

    dashboard = wsgi_app(ks, authenticate=session, login_url="/login")
    return KeystileMiddleware(DispatcherMiddleware(host, {MOUNT: dashboard}), config=ks)


@dataclass
class Server:
    url: str
    stop: Any


def serve(kind: str, app: Any) -> Server:
    if kind == "asgi":
        import uvicorn

        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]

        def stop() -> None:
            server.should_exit = True
            thread.join(5)

        return Server(f"http://127.0.0.1:{port}", stop)
    from werkzeug.serving import make_server

    wsgi = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
    thread.start()

    def shutdown() -> None:
        wsgi.shutdown()
        thread.join(5)

    return Server(f"http://127.0.0.1:{wsgi.server_port}", shutdown)


@pytest.fixture(scope="module")
def ks() -> Iterator[Keystile]:
    engine = Keystile(HOST_CONFIG, pepper=PEPPER)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def servers(ks: Keystile) -> Iterator[dict[str, Server]]:
    running = {"asgi": serve("asgi", asgi_host(ks)), "wsgi": serve("wsgi", wsgi_host(ks))}
    yield running
    for server in running.values():
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRE_SERVICES:
            pytest.fail(message + " and KEYSTILE_REQUIRE_SERVICES=1")
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """One browser session of one user of a fresh org, on one door."""

    base: str  # the host app's URL
    org: str
    context: BrowserContext
    page: Page
    seen: list[str]  # every URL the page asked for
    console: list[str]  # console errors (a CSP violation shows here)

    def open(self, path: str = "/") -> Any:
        return self.page.goto(self.base + MOUNT + path)


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest, servers: dict[str, Server]) -> str:
    return servers[str(request.param)].url


def visit(
    browser: Browser, base: str, org: str, role: str = "admin", user: str = "u_9", **options: Any
) -> Visit:
    context = browser.new_context(base_url=base, **options)
    if role:
        context.add_cookies([{"name": "session", "value": f"{user}:{org}:{role}", "url": base}])
    page = context.new_page()
    page.set_default_timeout(10_000)
    seen: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    return Visit(base, org, context, page, seen, console)


@pytest.fixture
def org() -> str:
    return "org-" + uuid.uuid4().hex[:8]


@pytest.fixture
def admin(browser: Browser, door: str, org: str) -> Iterator[Visit]:
    v = visit(browser, door, org)
    v.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=door)
    yield v
    v.context.close()


def settled_html(page: Page) -> str:
    """The page's HTML once a navigation (an error page's, say) has settled."""
    for _ in range(50):
        with contextlib.suppress(sync_api.Error):
            return page.content()
        page.wait_for_timeout(100)
    return page.content()


def secret_field(page: Page) -> str:
    return page.get_by_label("API key", exact=True).input_value()


# -- the flows -------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_a_reload_makes_no_second_key(
    admin: Visit, ks: Keystile
) -> None:
    page = admin.page
    admin.open("/")
    expect(page.get_by_role("heading", name="No keys yet")).to_be_visible()
    page.get_by_role("link", name="Create key").click()
    page.get_by_label("Name", exact=True).fill("CI upload")
    page.get_by_label("Key type").select_option(label="Bot key")
    expect(page.get_by_label("results", exact=False)).to_be_hidden()  # Custom only
    page.get_by_label("Permissions", exact=True).select_option(label="Custom")
    page.get_by_label("results").check()
    expect(page.get_by_label("events:read", exact=False).first).to_be_checked()  # the default
    page.get_by_label("Expires").select_option(label="30 days")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text(SAVE_NOW)).to_be_visible()
    secret = secret_field(page)
    assert secret.startswith("sk_")
    expect(page.get_by_label("API key", exact=True)).to_have_attribute("readonly", "")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    (record,) = ks.keys.list(admin.org)
    assert set(record.scopes) == {"results", "events:read"} and ks.digest(secret) == record.digest

    page.reload()  # the browser posts the form again
    expect(page.get_by_role("heading", name="Key already created")).to_be_visible()
    assert secret not in page.content()
    assert len(ks.keys.list_all(admin.org)) == 1
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_role("link", name="CI upload")).to_be_visible()
    assert secret not in page.content()
    with contextlib.suppress(sync_api.Error):
        page.go_back()  # Chromium will not post again on its own: ERR_CACHE_MISS, no page
    assert secret not in settled_html(page)
    page.go_forward()
    page.get_by_role("link", name="CI upload").click()
    expect(page.get_by_role("heading", name="CI upload")).to_be_visible()
    assert secret not in page.content()
    assert len(ks.keys.list_all(admin.org)) == 1
    assert not [m for m in admin.console if "Content Security Policy" in m], admin.console
    assert all(url.startswith(admin.base + "/") for url in admin.seen), admin.seen


def test_edit_rotate_and_revoke(admin: Visit, ks: Keystile) -> None:
    key = ks.keys.create(name="deploy bot", org=admin.org, scopes=["events:read"])
    page = admin.page
    admin.open("/")
    page.get_by_role("link", name="deploy bot").click()
    expect(page.get_by_role("heading", name="deploy bot")).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("Requests per day"))).to_be_visible()

    page.get_by_label("Name", exact=True).fill("release bot")
    page.get_by_label("Permissions", exact=True).select_option(label="Custom")
    page.get_by_label("results").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.get_by_role("heading", name="release bot")).to_be_visible()
    assert ks.keys.get(key.id).scopes == ("events:read", "results")

    page.get_by_label("Grace period").select_option(label="1 hour")
    page.once("dialog", lambda dialog: dialog.accept())  # the script asks first
    page.get_by_role("button", name="Rotate").click()
    expect(page.get_by_text(SAVE_NOW)).to_be_visible()
    new_secret = secret_field(page)
    expect(page.get_by_text("The previous secret keeps working for 1 hour")).to_be_visible()
    page.get_by_role("link", name="View key").click()
    assert new_secret not in page.content()

    with httpx.Client(base_url=admin.base) as api:
        auth = {"Authorization": f"Bearer {new_secret}"}
        assert api.get("/api/v1/events", headers=auth).status_code == 200
        page.get_by_role("link", name="Revoke").click()
        expect(page.get_by_role("heading", name="Revoke “release bot”?")).to_be_visible()
        page.get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status")).to_contain_text("Revoked “release bot”")
        assert api.get("/api/v1/events", headers=auth).status_code == 401
    # Left: the header, and the old key in its grace hour.
    expect(page.get_by_role("row")).to_have_count(2)
    expect(page.get_by_role("rowheader", name="release bot")).to_be_visible()
    assert [r.id for r in ks.keys.list(admin.org)] == [key.id]


def test_another_orgs_key_is_404(admin: Visit, ks: Keystile) -> None:
    theirs = ks.keys.create(name="rival key", org="rival-" + admin.org, scopes=["events:read"])
    response = admin.open(f"/{theirs.id}")
    assert response is not None and response.status == 404
    expect(admin.page.get_by_role("heading", name="Key not found")).to_be_visible()
    assert "rival key" not in admin.page.content()


def test_a_member_sees_no_wildcard_or_destructive_choice_and_cannot_forge_one(
    browser: Browser, door: str, org: str, ks: Keystile
) -> None:
    others = ks.keys.create(name="admin's bot", org=org, scopes=["servers:delete"])
    member = visit(browser, door, org, role="member", user="u_1")
    page = member.page
    try:
        member.open("/new")
        page.get_by_label("Permissions", exact=True).select_option(label="Custom")
        expect(page.get_by_label("events:read", exact=False).first).to_be_visible()
        for scope in ("*", "events:*", "servers:delete", "admin"):
            expect(page.get_by_role("checkbox", name=scope, exact=False)).to_have_count(0)
        token = page.locator("input[name=csrf_token]").get_attribute("value")
        form_id = page.locator("input[name=form_id]").get_attribute("value")
        forged = page.request.post(
            door + MOUNT + "/new",
            form={
                "csrf_token": token or "",
                "form_id": form_id or "",
                "name": "sneaky",
                "kind": "bot",
                "permissions": "custom",
                "scope": "servers:delete",
            },
        )
        assert forged.status == 400
        assert ks.keys.list_all(org) == [others.record]

        member.open(f"/{others.id}")
        expect(page.get_by_role("heading", name="Read only")).to_be_visible()
        expect(page.get_by_role("button", name="Save")).to_have_count(0)
        expect(page.get_by_role("link", name="Revoke")).to_have_count(0)
        expect(page.get_by_text("destructive").first).to_be_visible()
    finally:
        member.context.close()


def test_no_session_redirects_to_the_login_page(browser: Browser, door: str, org: str) -> None:
    stranger = visit(browser, door, org, role="")
    try:
        stranger.open("/new?from=menu")
        expect(stranger.page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert stranger.page.url == f"{door}/login?next={MOUNT}/new%3Ffrom%3Dmenu"
    finally:
        stranger.context.close()


def test_everything_works_with_javascript_off(
    browser: Browser, door: str, org: str, ks: Keystile
) -> None:
    v = visit(browser, door, org, java_script_enabled=False)
    page = v.page
    try:
        v.open("/new")
        expect(page.get_by_label("results")).to_be_visible()  # Custom is not hidden
        page.get_by_label("Name", exact=True).fill("no-js key")
        page.get_by_label("Permissions", exact=True).select_option(label="Custom")
        page.get_by_label("results").check()
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_text(SAVE_NOW)).to_be_visible()
        assert secret_field(page).startswith("sk_")
        expect(page.get_by_role("button", name="Copy")).to_be_hidden()  # needs the script
        page.get_by_role("link", name="View key").click()
        page.get_by_label("Grace period").select_option(label="None: the current key stops at once")
        page.get_by_role("button", name="Rotate").click()  # no confirm() without the script
        expect(page.get_by_text(SAVE_NOW)).to_be_visible()
        page.get_by_role("link", name="View key").click()
        page.get_by_role("link", name="Revoke").click()
        page.get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("heading", name="No keys yet")).to_be_visible()
        assert ks.keys.list(org) == [] and len(ks.keys.list_all(org)) == 2
    finally:
        v.context.close()


# -- checks ----------------------------------------------------------------------------------


def test_pages_pass_axe_with_no_serious_or_critical_violation(admin: Visit, ks: Keystile) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    key = ks.keys.create(name="axe key", org=admin.org, scopes=["servers:delete", "results"])
    ks.count_use(key.id, "/api/v1/events", 200)
    page = admin.page

    def submit_new() -> None:
        admin.open("/new")
        page.get_by_label("Name", exact=True).fill("second")
        page.get_by_role("button", name="Create key").click()

    pages = {
        "list": lambda: admin.open("/"),
        "form": lambda: admin.open("/new"),
        "form with errors": lambda: page.get_by_role("button", name="Create key").click(),
        "key": lambda: admin.open(f"/{key.id}"),
        "confirm": lambda: admin.open(f"/{key.id}/revoke"),
        "secret": submit_new,
    }
    found = {}
    for name, show in pages.items():
        show()
        page.wait_for_load_state()
        results = axe.run(page).response["violations"]
        bad = [
            f"{v['id']} ({v['impact']})" for v in results if v["impact"] in ("serious", "critical")
        ]
        if bad:
            found[name] = bad
    assert not found, found
    expect(page.get_by_text(SAVE_NOW)).to_be_visible()


@pytest.mark.parametrize("kind", DOORS)
def test_the_real_servers_send_the_headers_and_refuse_cross_site_posts(
    servers: dict[str, Server], ks: Keystile, kind: str
) -> None:
    org = "org-" + uuid.uuid4().hex[:8]
    key = ks.keys.create(name="k", org=org, scopes=["events:read"])
    cookies = {"session": f"u_9:{org}:admin"}
    with httpx.Client(base_url=servers[kind].url, cookies=cookies) as client:
        for path in ("/", "/new", f"/{key.id}", "/static/dashboard.css"):
            reply = client.get(MOUNT + path)
            assert reply.status_code == 200, path
            for name, value in SECURITY_HEADERS.items():
                assert reply.headers[name] == value, (path, name)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(MOUNT + "/new").text)
        assert token
        revoke = MOUNT + f"/{key.id}/revoke"
        assert client.post(revoke, data={"name": "x"}).status_code == 403  # no token
        evil = {"Origin": "https://evil.example"}
        assert client.post(revoke, data={"csrf_token": token[1]}, headers=evil).status_code == 403
        assert ks.keys.get(key.id).revoked_at is None
        assert client.post(revoke, data={"csrf_token": token[1]}).status_code == 303
        assert ks.keys.get(key.id).revoked_at is not None


def test_the_screenshot_script_writes_both_pages(tmp_path: Path, browser: Browser) -> None:
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "dashboard_screenshots.py"
    spec = importlib.util.spec_from_file_location("dashboard_screenshots", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for shot in module.take(browser, tmp_path):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
