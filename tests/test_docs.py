"""The documentation cannot rot: its generated reference and its code run here.

Conventions in ``docs/**/*.md`` (the first line of a fenced block):

- ```` ```python ```` starting ``# test: quickstart-NAME``: executed in a
  temporary directory holding the quickstart config, then the app it defines
  is exercised with a test client (``QUICKSTARTS`` says which);
- ```` ```yaml ```` starting ``# test: file NAME``: written to ``NAME`` in that
  directory first;
- ```` ```yaml ```` starting ``# test: config``: must pass ``load_config``;
- ```` ```python ```` starting ``# test: run``: executed as it stands in that
  directory (a guide's script: it asserts what it shows);
- a shell block (```` ``` ````) starting ``# test: cli``: each line is a
  ``keystile`` command, run in that directory; each must exit 0;
- ```` ```python ```` starting ``# test: dashboard-NAME`` or
  ``# test: management-NAME``: an app mounting the dashboard or the
  management API, executed there and driven by a test below (the management
  ones after the page's ``# test: config`` routes are added to the config).

mkdocs itself is not needed here; CI builds the site with ``mkdocs build
--strict`` separately.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from keystile import Keystile
from keystile.config import load_config
from tests.conftest import PEPPER

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARK = re.compile(r"#\s*test:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    mark: str
    code: str


def marked_blocks() -> list[Block]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for found in FENCE.finditer(text):
            first, _, _ = found.group(2).partition("\n")
            mark = MARK.fullmatch(first.strip())
            if mark:
                line = text.count("\n", 0, found.start()) + 1
                name = str(page.relative_to(DOCS))
                blocks.append(Block(name, line, found.group(1), mark.group(1), found.group(2)))
    return blocks


BLOCKS = marked_blocks()
QUICKSTART_FILES = [b for b in BLOCKS if b.mark.startswith("file ")]


def _by_mark(prefix: str) -> dict[str, Block]:
    return {b.mark.removeprefix(prefix): b for b in BLOCKS if b.mark.startswith(prefix)}


# -- the generated configuration reference -------------------------------------------


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "scripts" / "gen_config_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_what_the_schema_generates_now() -> None:
    expected = _generator().render()
    on_disk = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    assert on_disk == expected, (
        "docs/reference/config.md is stale: run python scripts/gen_config_reference.py"
    )


def test_config_reference_refuses_an_undescribed_field(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = _generator()
    first = gen.SECTIONS[1]
    shrunk = gen.Section(first.title, first.path, first.cls, first.intro, first.entries[1:])
    monkeypatch.setattr(gen, "SECTIONS", (gen.SECTIONS[0], shrunk, *gen.SECTIONS[2:]))
    with pytest.raises(gen.Drift, match=r"LimiterConfig\.storage has no description"):
        gen.render()


# -- YAML snippets ---------------------------------------------------------------------

CONFIGS = [b for b in BLOCKS if b.mark == "config"]


def test_docs_have_config_snippets() -> None:
    assert len(CONFIGS) >= 10 and QUICKSTART_FILES


@pytest.mark.parametrize("block", [*CONFIGS, *QUICKSTART_FILES], ids=lambda b: f"{b.page}:{b.line}")
def test_config_snippet_is_valid(block: Block) -> None:
    load_config(yaml.safe_load(block.code) or {})


# -- quickstarts -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any


Send = Callable[[str, str | None], Reply]


def _starlette(app: Any) -> Iterator[Send]:
    from starlette.testclient import TestClient

    with TestClient(app) as client:  # runs the lifespan, as a server does

        def send(path: str, key: str | None) -> Reply:
            reply = client.get(path, headers=_auth(key))
            return Reply(reply.status_code, reply.json())

        yield send


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _flask(app: Any) -> Iterator[Send]:
    client = app.test_client()

    def send(path: str, key: str | None) -> Reply:
        reply = client.get(path, headers=_auth(key))
        return Reply(reply.status_code, reply.get_json())

    yield send


def _wsgi(app: Any) -> Iterator[Send]:
    from werkzeug.test import Client

    client = Client(app)

    def send(path: str, key: str | None) -> Reply:
        reply = client.get(path, headers=_auth(key))
        return Reply(reply.status_code, json.loads(reply.get_data()))

    yield send


# quickstart name -> (the object the snippet defines, how to talk to it)
QUICKSTARTS: dict[str, tuple[str, Callable[[Any], Iterator[Send]]]] = {
    "starlette": ("app", _starlette),
    "fastapi": ("app", _starlette),
    "flask": ("app", _flask),
    "asgi": ("app", _starlette),
    "wsgi": ("application", _wsgi),
}
SUBPROCESS = {"django"}  # Django settings are process-wide: a fresh interpreter each


def test_every_quickstart_snippet_is_tested() -> None:
    assert set(_by_mark("quickstart-")) == set(QUICKSTARTS) | SUBPROCESS


@pytest.fixture
def quickstart_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The docs' config files in a fresh directory, and a key minted there."""
    for block in QUICKSTART_FILES:
        (tmp_path / block.mark.removeprefix("file ")).write_text(block.code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    monkeypatch.delenv("KEYSTILE_CONFIG", raising=False)
    with Keystile("keystile.yaml") as ks:
        secret = ks.keys.create(name="docs", scopes=["events:read"], org="acme").secret
    yield tmp_path, secret


def _check(send: Send, secret: str) -> None:
    health = send("/health", None)
    assert (health.status, health.body) == (200, {"ok": True})
    missing = send("/api/v1/events", None)
    assert (missing.status, missing.body["code"]) == (401, "UNAUTHORIZED")
    allowed = send("/api/v1/events", secret)
    assert allowed.status == 200, allowed.body
    assert allowed.body["org"] == "acme" and allowed.body["key"].startswith("key_")


@pytest.mark.parametrize("name", sorted(QUICKSTARTS))
def test_quickstart_snippet_runs(name: str, quickstart_dir: tuple[Path, str]) -> None:
    block = _by_mark("quickstart-")[name]
    namespace: dict[str, Any] = {"__name__": f"docs_quickstart_{name}"}
    exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)
    attribute, client = QUICKSTARTS[name]
    for send in client(namespace[attribute]):
        _check(send, quickstart_dir[1])


RUNNER = """\
import json, sys, types
module = types.ModuleType("docs_quickstart")
sys.modules["docs_quickstart"] = module
module.__dict__["__name__"] = "docs_quickstart"
exec(compile(open("snippet.py").read(), "snippet.py", "exec"), module.__dict__)
from werkzeug.test import Client
client = Client(module.application)
out = {}
for path, key in [("/health", None), ("/api/v1/events", None), ("/api/v1/events", sys.argv[1])]:
    reply = client.get(path, headers={"Authorization": "Bearer " + key} if key else {})
    out[path + (" key" if key else "")] = [reply.status_code, json.loads(reply.get_data())]
print(json.dumps(out))
"""


@pytest.mark.parametrize("name", sorted(SUBPROCESS))
def test_quickstart_snippet_runs_in_its_own_interpreter(
    name: str, quickstart_dir: tuple[Path, str]
) -> None:
    directory, secret = quickstart_dir
    (directory / "snippet.py").write_text(_by_mark("quickstart-")[name].code, encoding="utf-8")
    (directory / "runner.py").write_text(RUNNER, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-W", "error", "runner.py", secret],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env={"KEYSTILE_PEPPER": PEPPER.decode(), "PATH": "", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, textwrap.shorten(done.stderr, 2000)
    out = json.loads(done.stdout)
    replies = {path: Reply(status, body) for path, (status, body) in out.items()}

    def send(path: str, key: str | None) -> Reply:
        return replies[path + (" key" if key else "")]

    _check(send, secret)


def test_the_fastapi_quickstart_keeps_its_docs_public_and_documents_scopes(
    quickstart_dir: tuple[Path, str],
) -> None:
    from starlette.testclient import TestClient

    block = _by_mark("quickstart-")["fastapi"]
    namespace: dict[str, Any] = {"__name__": "docs_quickstart_fastapi_docs"}
    exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)
    with TestClient(namespace["app"]) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, path  # under the config's default: deny
        operation = client.get("/openapi.json").json()["paths"]["/api/v1/events"]["get"]
    assert {"BearerKey": ["events:read"]} in operation["security"]
    assert {"401", "403", "429"} <= set(operation["responses"])


RUNS = [b for b in BLOCKS if b.mark == "run"]


def test_guides_have_runnable_scripts() -> None:
    assert RUNS and all(b.language == "python" for b in RUNS)


@pytest.mark.parametrize("block", RUNS, ids=lambda b: f"{b.page}:{b.line}")
def test_guide_script_runs(block: Block, quickstart_dir: tuple[Path, str]) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_guide_script"}
    exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)


CLIS = [b for b in BLOCKS if b.mark == "cli"]


def test_guides_have_cli_blocks() -> None:
    assert CLIS and all(b.language == "" for b in CLIS)


@pytest.mark.parametrize("block", CLIS, ids=lambda b: f"{b.page}:{b.line}")
def test_guide_cli_block_runs(
    block: Block, quickstart_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    from keystile.cli import main

    for line in block.code.splitlines()[1:]:
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[0] == "keystile", line
            status = main(argv[1:])
            assert status == 0, f"{line}: exit {status}\n{capsys.readouterr()}"


# -- the dashboard's quickstarts ----------------------------------------------------------------


def _dashboard_snippet(name: str) -> dict[str, Any]:
    block = _by_mark("dashboard-")[name]
    namespace: dict[str, Any] = {"__name__": f"docs_dashboard_{name}"}
    exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)
    return namespace


def test_every_dashboard_snippet_is_tested() -> None:
    assert set(_by_mark("dashboard-")) == {"starlette", "flask"}


def test_dashboard_starlette_snippet_serves_the_page(quickstart_dir: tuple[Path, str]) -> None:
    import base64

    from itsdangerous import TimestampSigner
    from starlette.testclient import TestClient

    snippet = _dashboard_snippet("starlette")
    # What the host's login view would have put in Starlette's signed session cookie.
    user = {"user": {"id": "u_1", "org": "acme", "is_admin": True}}
    cookie = TimestampSigner("change-me").sign(base64.b64encode(json.dumps(user).encode()))
    try:
        with TestClient(snippet["app"], follow_redirects=False) as client:
            away = client.get("/dashboard/api-keys/new")
            assert away.status_code == 302
            assert away.headers["location"] == "/login?next=/dashboard/api-keys/new"
            page = client.get(
                "/dashboard/api-keys/", headers={"Cookie": f"session={cookie.decode()}"}
            )
            assert page.status_code == 200 and "acme" in page.text and "docs" in page.text
            client.portal.call(snippet["ks"].aclose)  # the async store of the client's loop
    finally:
        snippet["ks"].close()


def test_dashboard_flask_snippet_serves_the_page(quickstart_dir: tuple[Path, str]) -> None:
    snippet = _dashboard_snippet("flask")
    client = snippet["app"].test_client()
    try:
        away = client.get("/dashboard/api-keys/")
        assert away.status_code == 302
        assert away.headers["location"] == "/login?next=/dashboard/api-keys/"
        with client.session_transaction() as session:
            session.update(user_id="u_1", org_id="acme", is_admin=True)
        page = client.get("/dashboard/api-keys/")
        assert page.status_code == 200 and b"docs" in page.data
    finally:
        snippet["ks"].close()


# -- the management API's mounts -----------------------------------------------------------------


def _management_snippet(name: str, directory: Path) -> dict[str, Any]:
    """The page's app, run on the quickstart config plus the page's public routes."""
    (public,) = [b for b in CONFIGS if b.page == "management-api.md"]
    path = directory / "keystile.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["routes"] = yaml.safe_load(public.code)["routes"] + config["routes"]
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    block = _by_mark("management-")[name]
    namespace: dict[str, Any] = {"__name__": f"docs_management_{name}"}
    exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)
    return namespace


def test_every_management_snippet_is_tested() -> None:
    assert set(_by_mark("management-")) == {"starlette", "flask"}


def test_management_starlette_snippet_serves_the_session_not_api_keys(
    quickstart_dir: tuple[Path, str],
) -> None:
    import base64

    from itsdangerous import TimestampSigner
    from starlette.testclient import TestClient

    directory, secret = quickstart_dir
    snippet = _management_snippet("starlette", directory)
    user = {"user": {"id": "u_1", "org": "acme", "is_admin": True}}
    cookie = TimestampSigner("change-me").sign(base64.b64encode(json.dumps(user).encode()))
    session = {"Cookie": f"session={cookie.decode()}"}
    try:
        with TestClient(snippet["app"]) as client:
            listed = client.get("/admin/api/v1/keys", headers=session)
            assert listed.status_code == 200, listed.text
            assert [k["name"] for k in listed.json()["data"]] == ["docs"]
            made = client.post("/admin/api/v1/keys", json={"name": "CI"}, headers=session)
            assert made.status_code == 201 and made.json()["data"]["apiKey"]
            # An API key is no session: the API itself refuses it.
            keyed = client.get("/admin/api/v1/keys", headers={"Authorization": f"Bearer {secret}"})
            assert keyed.status_code == 401 and "WWW-Authenticate" not in keyed.headers
            client.portal.call(snippet["ks"].aclose)  # the async store of the client's loop
    finally:
        snippet["ks"].close()


def test_management_flask_snippet_serves_the_session_not_api_keys(
    quickstart_dir: tuple[Path, str],
) -> None:
    directory, secret = quickstart_dir
    snippet = _management_snippet("flask", directory)
    client = snippet["app"].test_client()
    try:
        with client.session_transaction() as session:
            session.update(user_id="u_1", org_id="acme", is_admin=True)
        listed = client.get("/admin/api/v1/keys")
        assert listed.status_code == 200, listed.get_data(as_text=True)
        assert [k["name"] for k in listed.get_json()["data"]] == ["docs"]
        made = client.post("/admin/api/v1/keys", json={"name": "CI"})
        assert made.status_code == 201 and made.get_json()["data"]["apiKey"]
        client.delete_cookie("session")
        keyed = client.get("/admin/api/v1/keys", headers={"Authorization": f"Bearer {secret}"})
        assert keyed.status_code == 401 and "WWW-Authenticate" not in keyed.headers
    finally:
        snippet["ks"].close()
