"""Every example app, protected by the one shared examples/keystile.yaml."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import PEPPER

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIG = EXAMPLES / "keystile.yaml"

Send = Callable[[str, str, dict[str, str]], tuple[int, Any]]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"keystile_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _asgi_client(module: ModuleType) -> Iterator[Send]:
    from starlette.testclient import TestClient

    with TestClient(module.app) as client:

        def send(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
            reply = client.request(method, path, headers=headers)
            return reply.status_code, reply.json()

        yield send


def _flask_client(module: ModuleType) -> Iterator[Send]:
    client = module.app.test_client()

    def send(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        reply = client.open(path, method=method, headers=headers)
        return reply.status_code, reply.get_json()

    yield send


def _django_client(module: ModuleType) -> Iterator[Send]:
    from django.test import Client

    client = Client()

    def send(method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        reply = client.generic(method, path, headers=headers)
        return reply.status_code, reply.json()

    yield send


CLIENTS = {
    "starlette_app": _asgi_client,
    "fastapi_app": _asgi_client,
    "flask_app": _flask_client,
    "django_app": _django_client,
}


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    monkeypatch.delenv("KEYSTILE_CONFIG", raising=False)
    with Keystile(str(CONFIG)) as ks:
        yield {
            "read": ks.keys.create(name="reader", scopes=["events:read"], org="acme").secret,
            "write": ks.keys.create(name="writer", scopes=["events:write"], org="acme").secret,
            "results": ks.keys.create(name="ci", scopes=["results"], org="acme").secret,
        }


@pytest.mark.parametrize("name", list(CLIENTS))
def test_example_app_is_protected_by_the_shared_config(name: str, keys: dict[str, str]) -> None:
    module = _load(name)
    for send in CLIENTS[name](module):

        def call(method: str, path: str, key: str | None = None, send: Send = send) -> Any:
            return send(method, path, {"Authorization": f"Bearer {key}"} if key else {})

        assert call("GET", "/health") == (200, {"ok": True})
        status, body = call("GET", "/api/v1/events")
        assert status == 401 and body["code"] == "UNAUTHORIZED"
        status, body = call("GET", "/api/v1/events", keys["read"])
        assert status == 200 and body["org"] == "acme" and body["key"].startswith("key_")
        status, body = call("PUT", "/api/v1/events/42", keys["read"])
        assert status == 403 and body["required_scopes"] == ["events:write"]
        assert call("PUT", "/api/v1/events/42", keys["write"]) == (200, {"updated": "42"})
        status, body = call("POST", "/api/v1/events/42/results", keys["results"])
        assert status == 200 and body["event"] == "42"
        status, body = call("GET", "/api/v1/nowhere", keys["read"])
        assert status == 403 and body["code"] == "FORBIDDEN"


def test_fastapi_dependency_declares_the_security_schemes(keys: dict[str, str]) -> None:
    module = _load("fastapi_app")
    schema = module.app.openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <API key>",
    }
    assert schemes["ApiKeyHeader"]["in"] == "header"
    assert schemes["ApiKeyHeader"]["name"] == "x-api-key"
    operation = schema["paths"]["/api/v1/events"]["get"]
    assert {"BearerKey": ["events:read"]} in operation["security"]  # with the scopes it needs


def test_fastapi_dependency_refuses_a_missing_scope_in_code(keys: dict[str, str]) -> None:
    from fastapi import Depends, FastAPI
    from starlette.testclient import TestClient

    from keystile.asgi import KeystileMiddleware
    from keystile.fastapi import install_error_handler, require_scopes

    app = FastAPI()
    app.add_middleware(KeystileMiddleware, config=str(CONFIG))
    install_error_handler(app)

    needs_write = Depends(require_scopes("events:write"))

    @app.get("/api/v1/events")
    def events(key: Any = needs_write) -> dict[str, str]:
        return {"key": key.id}

    with TestClient(app) as client:
        denied = client.get("/api/v1/events", headers={"x-api-key": keys["read"]})
        assert denied.status_code == 403
        assert denied.json()["required_scopes"] == ["events:write"]
        allowed = client.get("/api/v1/events", headers={"x-api-key": keys["write"]})
        assert allowed.status_code == 200


def test_demo_serves_and_its_curl_lines_answer_as_printed(tmp_path: Path) -> None:
    import os
    import shlex
    import socket
    import subprocess
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "KEYSTILE_PEPPER"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keystile", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("/dashboard/api-keys" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        assert any("made a pepper in keystile-demo/pepper" in line for line in lines)
        curls = [line for line in lines if line.startswith("curl")]
        for _ in range(100):  # wait for the server to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for line in curls:
            command, expected = line.split("#")
            argv = shlex.split(command)
            method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
            url = next(a for a in argv if a.startswith("http://"))
            headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
            request = urllib.request.Request(url, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    status = reply.status
            except urllib.error.HTTPError as err:
                status = err.code
                err.close()
            assert status == int(expected.strip()), line
        # The key dashboard, signed in by the demo session, lists the minted key.
        (dashboard,) = [line.split()[-1] for line in lines if "/dashboard/api-keys" in line]
        assert dashboard == f"http://127.0.0.1:{port}/dashboard/api-keys/"
        with urllib.request.urlopen(dashboard, timeout=5) as reply:
            page = reply.read().decode()
        assert reply.status == 200 and "demo reader" in page and "No keys yet" not in page
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    assert (tmp_path / "keystile-demo" / "demo.db").exists()
    assert (tmp_path / "keystile-demo" / "pepper").stat().st_mode & 0o777 == 0o600


def test_demo_keeps_its_pepper_so_the_keys_of_the_last_run_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from starlette.testclient import TestClient

    from keystile.demo import DEMO_CONFIG, build_app, demo_pepper

    monkeypatch.delenv("KEYSTILE_PEPPER", raising=False)
    config = {**DEMO_CONFIG, "store": f"sqlite:///{tmp_path / 'demo.db'}"}
    first_out, second_out = io.StringIO(), io.StringIO()
    first = demo_pepper(tmp_path, first_out)
    assert (tmp_path / "pepper").stat().st_mode & 0o777 == 0o600
    with Keystile(config, pepper=first) as ks:
        key = ks.keys.create(name="last run", scopes=["events:read"], org="demo")
    second = demo_pepper(tmp_path, second_out)
    assert second == first
    with Keystile(config, pepper=second) as ks, TestClient(build_app(ks)) as client:
        reply = client.get("/api/v1/events", headers={"Authorization": f"Bearer {key.secret}"})
        assert (reply.status_code, reply.json()["key"]) == (200, key.id)
    assert first not in first_out.getvalue() + second_out.getvalue()  # never printed
    assert "using the pepper kept in" in second_out.getvalue()


def test_demo_prints_a_line_per_request_with_the_key_id_and_never_the_secret() -> None:
    import io

    from starlette.testclient import TestClient

    from keystile.demo import DEMO_CONFIG, build_app

    out = io.StringIO()
    with Keystile({**DEMO_CONFIG, "store": "memory://"}, pepper=PEPPER) as ks:
        key = ks.keys.create(name="reader", scopes=["events:read"], org="demo")
        bearer = {"Authorization": f"Bearer {key.secret}"}
        with TestClient(build_app(ks, out)) as client:
            client.get("/api/v1/events", headers=bearer)
            client.get("/api/v1/events?api_key=" + key.secret)
            client.put("/api/v1/events/1", headers=bearer)
            client.get("/health")
    assert out.getvalue().splitlines() == [
        f"demo: GET /api/v1/events -> 200 {key.id}",
        "demo: GET /api/v1/events -> 401 (no key)",
        f"demo: PUT /api/v1/events/1 -> 403 {key.id}",
        "demo: GET /health -> 200 (no key)",
    ]
