"""The documentation cannot rot: its generated reference and its code run here.

Every fenced block in ``docs/**/*.md`` is run by a test here or declared as
what cannot run (``test_every_docs_block_is_run_or_declared``). A mark sits
on a block's first line, or, where a reader copies that line as it stands
(JSON, CSV, PromQL), in a one-line ``<!-- test: MARK -->`` above the fence:

- ```` ```python ```` starting ``# test: quickstart-NAME``: executed in a
  temporary directory holding the quickstart config, then the app it defines
  is exercised with a test client (``QUICKSTARTS`` says which);
- ``# test: file NAME``: written to ``NAME`` in that directory first (the
  quickstart's ``keystile.yaml``, the import guide's ``apikeys.json`` ...);
- ```` ```yaml ```` starting ``# test: config``: must pass ``load_config``;
- ```` ```python ```` starting ``# test: run``: executed as it stands in that
  directory (a guide's script: it asserts what it shows);
- a shell block (```` ``` ````) starting ``# test: cli``: run verbatim by
  bash, with ``keystile`` and ``python`` on ``PATH``; a page's cli blocks run
  in order in one shell and one directory (a variable or a key made by one is
  there for the next), each on the quickstart config with the page's last
  ``# test: config`` above it over it (its top-level sections replace the
  quickstart's); every line must succeed;
- ```` ```python ```` starting ``# test: dashboard-NAME``,
  ``# test: management-NAME`` or ``# test: leaks-NAME``: an app mounting the
  dashboard, the management API or the leak-report endpoint, executed there
  and driven by a test below (the management ones after the page's
  ``# test: config`` routes are added to the config);
- ``<!-- test: prometheus -->``: PromQL, alert rules, a Grafana dashboard:
  every series and label they name is one ``keystile.metrics`` reports.

Declared, not run: ```` ```text ```` (sample output; a ``keystile ...``
synopsis, whose flags must be the command's), ```` ```json ```` (a sample
document: it must parse), ```` ```console ```` (``$ keystile ...`` and its
output: the command runs, and its table columns or JSON fields must be the
ones shown), ``pip install`` lines, and the few blocks under
``<!-- not-run: REASON -->`` (an excerpt of a file run whole elsewhere, a
server that runs until stopped), which must say why and, if Python, compile.

mkdocs itself is not needed here; CI builds the site with ``mkdocs build
--strict`` separately.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
# A mark or a reason in a one-line HTML comment above the fence (blank lines
# between allowed): for blocks whose first line a reader copies as it stands
# (JSON, CSV, PromQL), and for the few that cannot run.
COMMENT = re.compile(r"<!--\s*(test|not-run):\s*(.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    mark: str  # "" when the block carries none
    code: str
    not_run: str = ""  # the reason given in a ``<!-- not-run: ... -->`` above it


def all_blocks() -> list[Block]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for found in FENCE.finditer(text):
            first, _, _ = found.group(2).partition("\n")
            mark = MARK.fullmatch(first.strip())
            above = COMMENT.fullmatch(text[: found.start()].rstrip().rpartition("\n")[2].strip())
            kind, said = (above.group(1), above.group(2)) if above else ("", "")
            line = text.count("\n", 0, found.start()) + 1
            name = str(page.relative_to(DOCS))
            blocks.append(
                Block(
                    name,
                    line,
                    found.group(1),
                    mark.group(1) if mark else said if kind == "test" else "",
                    found.group(2),
                    said if kind == "not-run" else "",
                )
            )
    return blocks


def marked_blocks() -> list[Block]:
    return [b for b in ALL_BLOCKS if b.mark]


ALL_BLOCKS = all_blocks()

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


YAML_FILES = [b for b in QUICKSTART_FILES if b.language == "yaml"]


@pytest.mark.parametrize("block", [*CONFIGS, *YAML_FILES], ids=lambda b: f"{b.page}:{b.line}")
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
CLI_PAGES = sorted({b.page for b in CLIS})


def test_guides_have_cli_blocks() -> None:
    assert CLIS and all(b.language == "" for b in CLIS)


def _page_config(block: Block, directory: Path) -> str:
    """The quickstart config with the page's last ``# test: config`` above ``block`` over it.

    A guide's config block is what its reader adds to theirs: its top-level
    sections replace the quickstart's, and the commands below it run on that.
    """
    (quickstart,) = [b for b in QUICKSTART_FILES if b.mark == "file keystile.yaml"]
    config = yaml.safe_load(quickstart.code)
    above = [b for b in CONFIGS if b.page == block.page and b.line < block.line]
    if above:
        config.update(yaml.safe_load(above[-1].code))
    return yaml.safe_dump(config, sort_keys=False)


def _shell_env(directory: Path) -> dict[str, str]:
    """``keystile`` and ``python`` as a reader has them, on this interpreter and this code."""
    import keystile

    bin_dir = directory / ".bin"
    bin_dir.mkdir()
    for name, run in (("keystile", f'"{sys.executable}" -m keystile'), ("python", sys.executable)):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {run} "$@"\n', encoding="utf-8")
        script.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(Path(keystile.__file__).resolve().parents[1]),
        "KEYSTILE_PEPPER": PEPPER.decode(),
        "HOME": str(directory),
        "LANG": "C.UTF-8",
    }


@pytest.mark.parametrize("page", CLI_PAGES)
def test_guide_cli_blocks_run_in_bash(page: str, quickstart_dir: tuple[Path, str]) -> None:
    """A page's ``# test: cli`` blocks, verbatim, in order, in one bash and one directory.

    So a later block sees what an earlier one made (a key, ``$KEY_ID``), as
    the reader's terminal would; every line must succeed (``set -e``).
    """
    directory, _ = quickstart_dir
    (directory / ".configs").mkdir()
    script = ["set -eu -o pipefail", "trap 'echo \"docs: failed: $BASH_COMMAND\" >&2' ERR"]
    for index, block in enumerate(b for b in CLIS if b.page == page):
        config = directory / ".configs" / f"{index}.yaml"
        config.write_text(_page_config(block, directory), encoding="utf-8")
        script += [f"cp .configs/{index}.yaml keystile.yaml", f"# docs/{page}:{block.line}"]
        script += [f"echo '+ docs/{page}:{block.line}' >&2", block.code]
    done = subprocess.run(
        ["/bin/bash", "-c", "\n".join(script)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        env=_shell_env(directory),
    )
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{done.stdout[-2000:]}"


# -- the dashboard's quickstarts ----------------------------------------------------------------


def _run_snippet(kind: str, name: str) -> dict[str, Any]:
    """Execute the block marked ``# test: KIND-NAME``; its globals, to drive its app."""
    block = _by_mark(f"{kind}-")[name]
    namespace: dict[str, Any] = {"__name__": f"docs_{kind}_{name}"}
    exec(compile(block.code, f"docs/{block.page}:{block.line}", "exec"), namespace)
    return namespace


def _dashboard_snippet(name: str) -> dict[str, Any]:
    return _run_snippet("dashboard", name)


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
            (shown,) = [b for b in ALL_BLOCKS if b.page == "dashboard.md" and b.language == "text"]
            for header in shown.code.splitlines():  # what the page says every response carries
                name, _, value = header.partition(": ")
                assert (name, page.headers.get(name)) == (name, value)
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
    return _run_snippet("management", name)


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


# -- the leak-report endpoint's mounts -----------------------------------------------------------


def _leaks_snippet(name: str) -> dict[str, Any]:
    return _run_snippet("leaks", name)


def test_every_leaks_snippet_is_tested() -> None:
    assert set(_by_mark("leaks-")) == {"starlette", "flask"}


def test_leaks_starlette_snippet_answers_at_its_mount(quickstart_dir: tuple[Path, str]) -> None:
    from starlette.testclient import TestClient

    snippet = _leaks_snippet("starlette")
    try:
        with TestClient(snippet["app"]) as client:
            asked = client.get("/github/secret-scanning/")
            assert (asked.status_code, asked.headers["allow"]) == (405, "POST")
            unsigned = client.post("/github/secret-scanning/", content=b"[]")
            assert unsigned.status_code == 401, unsigned.text
            client.portal.call(snippet["ks"].aclose)  # the async store of the client's loop
    finally:
        snippet["ks"].close()


def test_leaks_flask_snippet_answers_at_its_mount(quickstart_dir: tuple[Path, str]) -> None:
    snippet = _leaks_snippet("flask")
    client = snippet["app"].test_client()
    try:
        for path in ("/github/secret-scanning", "/github/secret-scanning/"):
            asked = client.get(path)
            assert (asked.status_code, asked.headers["Allow"]) == (405, "POST"), path
            unsigned = client.post(path, data=b"[]")
            assert unsigned.status_code == 401, path
    finally:
        snippet["ks"].close()


def test_leaks_patterns_sample_is_what_the_command_prints(
    quickstart_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from keystile.cli import main

    (sample,) = [b for b in ALL_BLOCKS if b.page == "leaks.md" and b.language == "text"]
    assert main(["keys", "patterns"]) == 0
    printed = capsys.readouterr().out.splitlines()
    shown = [line for line in sample.code.splitlines() if line != "..."]
    assert shown and [line for line in shown if line not in printed] == []


# -- Prometheus queries, alerts and the Grafana dashboard -----------------------------------------

PROMETHEUS = [b for b in BLOCKS if b.mark == "prometheus"]
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


def test_prometheus_blocks_name_only_what_keystile_exports(
    quickstart_dir: tuple[Path, str],
) -> None:
    """Each series and label a query names is one ``keystile.metrics`` reports."""
    from prometheus_client import CollectorRegistry

    from keystile.metrics import install

    registry = CollectorRegistry()
    with Keystile.from_config("keystile.yaml") as ks:
        install(ks, registry)
    families = [f for f in registry.collect() if f.name.startswith("keystile_")]
    series = {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}
    labels = {"outcome", "code", "backend", "le"}
    assert len(PROMETHEUS) >= 7
    for block in PROMETHEUS:
        where = f"docs/{block.page}:{block.line}"
        if block.language == "yaml":
            yaml.safe_load(block.code)
        elif block.language == "json":
            json.loads(block.code)
        named = set(re.findall(r"\bkeystile_\w+", block.code))
        assert named and named <= series, (where, named - series)
        grouped = re.findall(r"by \(([^)]*)\)", block.code)
        used = {name.strip() for group in grouped for name in group.split(",")}
        used |= set(re.findall(r"[{,](\w+)=", block.code.replace("\\", "")))
        assert used <= labels, (where, used - labels)


# -- command synopses and transcripts -----------------------------------------------------------

SYNOPSES = [b for b in ALL_BLOCKS if b.language == "text" and b.code.startswith("keystile ")]
TRANSCRIPTS = [b for b in ALL_BLOCKS if b.language == "console"]


def _help(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from keystile.cli import main

    assert main([*words, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("block", SYNOPSES, ids=lambda b: f"{b.page}:{b.line}")
def test_synopsis_names_only_flags_the_command_has(
    block: Block, capsys: pytest.CaptureFixture[str]
) -> None:
    """A synopsis shows the command's flags: each one its ``--help`` lists too."""
    for line in block.code.splitlines():
        words = line.split()
        command = [w for w in itertools.takewhile(str.islower, words[1:])]
        shown = set(re.findall(r"--[a-z][a-z-]*", line))
        assert command and shown, line
        listed = set(re.findall(r"--[a-z][a-z-]*", _help(command, capsys)))
        assert shown <= listed, (line, shown - listed)


def _transcript(block: Block) -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of a console block with the lines it printed."""
    runs: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            runs.append((line[2:], []))
        else:
            assert runs, f"docs/{block.page}:{block.line}: output before any command"
            runs[-1][1].append(line)
    return runs


def _headers(lines: list[str]) -> list[list[str]]:
    """The column-header lines of a table (``DATE  TOTAL  2XX ...``), as words."""
    return [line.split() for line in lines if re.fullmatch(r"[A-Z][A-Z0-9 ]+", line)]


def _backdate(key_id: str, days: int) -> None:
    import sqlalchemy as sa

    from keystile.stores._sql_schema import keys_table

    engine = sa.create_engine("sqlite:///keystile.db")
    with engine.begin() as connection:
        then = datetime.now(timezone.utc) - timedelta(days=days)
        connection.execute(
            keys_table.update().where(keys_table.c.id == key_id).values(created_at=then)
        )
    engine.dispose()


@pytest.mark.parametrize("block", TRANSCRIPTS, ids=lambda b: f"{b.page}:{b.line}")
def test_transcript_is_what_the_command_prints(
    block: Block, quickstart_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The command runs on a store of the quickstart's, its key standing for the page's.

    The ids, dates and counts differ from the page's demo store; the tables'
    columns and the JSON fields must be the ones shown.
    """
    import shlex

    from werkzeug.test import Client

    from keystile.cli import main
    from keystile.wsgi import KeystileMiddleware

    _, secret = quickstart_dir

    def ok(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    app = KeystileMiddleware(ok, config="keystile.yaml")
    assert Client(app).get("/api/v1/events", headers=_auth(secret)).status_code == 200
    assert Client(app).get("/api/v1/events", headers=_auth("sk_nope")).status_code == 401
    app.ks.close()  # writes the counts behind
    with Keystile("keystile.yaml") as ks:
        (key,) = ks.keys.list(org="acme")
        forgotten = ks.keys.create(name="load test", scopes=["events:read"], org="acme")
    _backdate(forgotten.id, days=200)  # a stale key, for --unused-since and --sort last-used
    for command, shown in _transcript(block):
        argv = [re.sub(r"\Akey_\w{20}\Z", key.id, word) for word in shlex.split(command)]
        assert argv[0] == "keystile", command
        status = main(argv[1:])
        printed = capsys.readouterr().out
        assert status == 0, f"{command}: exit {status}\n{printed}"
        if "--json" in argv:
            expected, got = json.loads("\n".join(shown)), json.loads(printed)
            assert expected and got, command
            assert set(got[0]) == set(expected[0]), command
        else:
            assert _headers(shown) and _headers(printed.splitlines()) == _headers(shown), command


# -- sample documents, and the blocks that cannot run ---------------------------------------------


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.language == "json"], ids=lambda b: f"{b.page}:{b.line}"
)
def test_json_sample_parses(block: Block) -> None:
    assert json.loads(block.code) is not None


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.not_run], ids=lambda b: f"{b.page}:{b.line}"
)
def test_not_run_block_says_why_and_still_parses(block: Block) -> None:
    assert len(block.not_run.split()) >= 5, "say why it cannot run, and what runs instead"
    if block.language == "python":
        compile(block.code, f"docs/{block.page}:{block.line}", "exec")


# -- every block is run, or declared as what cannot run ----------------------------------------

# The marks the tests above consume: exactly these, or these prefixes.
CONSUMED = {"config", "run", "cli", "prometheus"}
CONSUMED_PREFIXES = ("file ", "quickstart-", "dashboard-", "management-", "leaks-")
# Fence languages that hold what a command prints, not what to type: ``text``
# (sample output, a command's synopsis), ``json`` (a sample document: it must
# parse) and ``console`` (a ``$ command`` and what it printed: the command runs).
OUTPUT_LANGUAGES = {"text", "json", "console"}
PIP = re.compile(r"pip install \S+\s*(#.*)?")


def _accounted_for(block: Block) -> bool:
    if block.mark:
        return block.mark in CONSUMED or block.mark.startswith(CONSUMED_PREFIXES)
    if block.not_run:
        return True
    if block.language in OUTPUT_LANGUAGES:
        return True
    lines = [line.strip() for line in block.code.splitlines() if line.strip()]
    return block.language == "" and bool(lines) and all(PIP.fullmatch(line) for line in lines)


def test_every_docs_block_is_run_or_declared() -> None:
    """What a reader copies from docs/ either ran here or says why it cannot.

    A block is accounted for by a ``# test:`` mark a test above consumes
    (on its first line, or as ``<!-- test: ... -->`` above it), by an output
    language (``text``, ``json``, ``console``), by being ``pip install``
    lines, or by ``<!-- not-run: REASON -->`` above it.
    """
    loose = [
        f"docs/{b.page}:{b.line} ({b.language or 'no language'}): {b.code.partition(chr(10))[0]}"
        for b in ALL_BLOCKS
        if not _accounted_for(b)
    ]
    assert not loose, "blocks no test runs and none declares:\n" + "\n".join(loose)
    # The escape stays rare: a new not-run block needs a reason no test can take.
    # (The sixth: building the compiled wheel, which CI does outside the suite.)
    assert len([b for b in ALL_BLOCKS if b.not_run]) <= 6
