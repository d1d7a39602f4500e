"""The build under test is the one it says it is (docs/performance.md).

``pyproject.toml`` lists the modules the compiled build compiles with mypyc.
``scripts/test_compiled.sh`` runs the whole suite against that wheel with
``KEYSTILE_BUILD=compiled``; every other run (the editable install) is the
pure-Python build. A compiled run that imported the pure modules (a stray
``src`` on the path, a build that silently compiled nothing) would test the
wrong code and still pass, so each run checks what it imported.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from keystile import Keystile
from keystile._mypyc import compiled
from tests.conftest import PEPPER

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
COMPILED = os.environ.get("KEYSTILE_BUILD", "pure") == "compiled"


@pytest.fixture
def engine() -> Iterator[Keystile]:
    """A memory store, a per-key limit (so responses carry its headers), one route."""
    ks = Keystile(
        {
            "store": "memory://",
            "limits": {"key": "100/minute"},
            "routes": [{"path": "/x", "scopes": ["events:read"]}],
        },
        pepper=PEPPER,
    )
    yield ks
    ks.close()


def compiled_modules() -> list[str]:
    """The modules the ``mypyc`` build hook of ``pyproject.toml`` includes."""
    text = PYPROJECT.read_text(encoding="utf-8")
    header = re.escape("[tool.hatch.build.targets.wheel.hooks.mypyc]")
    hook = re.search(rf"^{header}\n(.*?)^\[", text, re.S | re.M)
    assert hook is not None, "pyproject.toml has no mypyc build hook"
    include = re.search(r"^include = \[(.*?)\]", hook.group(1), re.S | re.M)
    assert include is not None, "the mypyc build hook lists no modules"
    paths = re.findall(r'"src/(keystile/[\w/]+)\.py"', include.group(1))
    return [p.replace("/", ".") for p in paths]


def test_the_hook_lists_the_request_path() -> None:
    assert set(compiled_modules()) >= {"keystile.asgi", "keystile.pipeline", "keystile.sansio"}


@pytest.mark.parametrize("name", compiled_modules())
def test_each_listed_module_is_compiled_exactly_in_the_compiled_build(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    if compiled(module) and not COMPILED:
        pytest.fail(
            f"{name} is compiled ({module.__file__}) in a run of the pure build: a"
            " compiled build made in the checkout left it in src/; delete src/**/*.so"
        )
    assert compiled(module) is COMPILED, f"{name} is pure in the compiled build: {module.__file__}"


def test_an_app_may_subclass_the_asgi_middleware(engine: Keystile) -> None:
    # A compiled class refuses interpreted subclasses unless it allows them.
    import asyncio

    from keystile.asgi import KeystileMiddleware

    refused: list[int] = []

    class Counting(KeystileMiddleware):
        async def _refuse(self, scope, send, refusal):  # type: ignore[no-untyped-def]
            refused.append(refusal.status)
            await super()._refuse(scope, send, refusal)

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("a request without a key never reaches the app")

    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    asyncio.run(Counting(app, engine)(scope, receive, send))
    assert refused == [401]
    assert sent[0]["status"] == 401


def test_an_app_may_subclass_the_wsgi_middleware(engine: Keystile) -> None:
    from werkzeug.test import Client

    from keystile.wsgi import KeystileMiddleware

    seen: list[str] = []

    class Logging(KeystileMiddleware):
        def __call__(self, environ: Any, start_response: Any) -> Any:
            seen.append(environ["PATH_INFO"])
            return super().__call__(environ, start_response)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("a request without a key never reaches the app")

    assert Client(Logging(app, engine=engine)).get("/x").status_code == 401
    assert seen == ["/x"]


def test_uvicorn_takes_the_asgi_middleware_for_asgi3(engine: Keystile) -> None:
    # Served as the top-level app, uvicorn tells ASGI 3 from ASGI 2 by
    # whether __call__ is a coroutine function; a compiled coroutine must
    # still say it is one (older mypyc did not), or every request fails.
    import uvicorn

    from keystile.asgi import KeystileMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = uvicorn.Config(KeystileMiddleware(app, engine), lifespan="off")
    config.load()
    assert config.interface == "asgi3"


def test_a_wsgi_app_may_start_its_response_with_a_tuple_of_headers(engine: Keystile) -> None:
    # PEP 3333 asks for a list; servers take a tuple too, and so must the
    # door that adds the rate-limit headers, compiled or not.
    from werkzeug.test import Client

    from keystile.wsgi import KeystileMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", (("Content-Type", "text/plain"),))
        return [b"ok"]

    secret = engine.keys.create(name="t", scopes=["events:read"]).secret
    reply = Client(KeystileMiddleware(app, engine=engine)).get(
        "/x", headers={"Authorization": f"Bearer {secret}"}
    )
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.headers["X-RateLimit-Limit"] == "100"


def test_the_principal_an_app_receives_copies_and_subclasses(engine: Keystile) -> None:
    # The one keystile object apps keep and pass around: kept out of the
    # compiled modules, where a frozen dataclass refuses copy.copy (it is
    # rebuilt through its frozen __setattr__) and Python subclasses.
    import copy
    import dataclasses

    from werkzeug.test import Client

    from keystile import Principal
    from keystile.wsgi import KeystileMiddleware

    received: list[Principal] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        received.append(environ["keystile.api_key"])
        start_response("200 OK", [])
        return [b""]

    secret = engine.keys.create(name="t", scopes=["events:read"], metadata={"team": "d"}).secret
    door = KeystileMiddleware(app, engine=engine)
    assert Client(door).get("/x", headers={"x-api-key": secret}).status_code == 200
    (principal,) = received
    assert type(principal) is Principal
    assert copy.copy(principal) == principal
    assert dataclasses.replace(principal, name="renamed").name == "renamed"

    class Tagged(Principal):
        pass

    fields = {f.name: getattr(principal, f.name) for f in dataclasses.fields(principal)}
    assert Tagged(**fields).id == principal.id
