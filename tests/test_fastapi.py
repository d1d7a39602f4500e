"""keystile.fastapi: public docs under ``default: deny``, the OpenAPI document, and
a dependency that fails loudly when the middleware is not in front of it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from keystile import Keystile, Principal
from keystile.asgi import KeystileMiddleware
from keystile.config import Config
from keystile.errors import ConfigError
from keystile.fastapi import install_error_handler, require_scopes, with_public_docs
from tests.conftest import PEPPER

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "limits": {"key": None},
    "scopes": {"known": ["events:read", "events:write"]},
    "routes": [
        {"path": "/health", "public": True},
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/api/v1/events/{event_id}", "methods": ["PUT"], "limit": "1/minute"},
    ],
    "default": "deny",
}
DOCS = ["/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"]


def make_app(**options: Any) -> FastAPI:
    app = FastAPI(**options)

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/api/v1/events")
    def list_events(
        key: Annotated[Principal, Depends(require_scopes("events:read"))],
    ) -> dict[str, str]:
        return {"key": key.id}

    @app.put("/api/v1/events/{event_id}", responses={403: {"description": "ours"}})
    def put_event(
        event_id: str,
        key: Annotated[Principal, Depends(require_scopes("events:write"))],
    ) -> dict[str, str]:
        return {"key": key.id}

    return app


@pytest.fixture
def engine() -> Iterator[Keystile]:
    with Keystile(with_public_docs(make_app(), CONFIG), pepper=PEPPER) as ks:
        yield ks


def client(app: FastAPI, config: Any) -> TestClient:
    app.add_middleware(KeystileMiddleware, config=config)
    install_error_handler(app)
    return TestClient(app)


# -- docs routes -----------------------------------------------------------------------


def test_fastapi_docs_are_refused_under_default_deny_without_the_helper() -> None:
    app = make_app()
    with client(app, Keystile(CONFIG, pepper=PEPPER)) as http:
        for path in DOCS:
            assert http.get(path).status_code == 403, path


def test_with_public_docs_keeps_fastapis_own_docs_routes_public(engine: Keystile) -> None:
    app = make_app()
    with client(app, with_public_docs(app, CONFIG)) as http:
        for path in DOCS:
            assert http.get(path).status_code == 200, path
            assert http.head(path).status_code in (200, 405), path  # HEAD checked as GET
        assert http.post("/openapi.json").status_code == 403  # GET only
        assert http.get("/docsx").status_code == 403
        assert http.get("/api/v1/events").status_code == 401  # nothing else opened


@pytest.mark.parametrize(
    ("options", "public", "refused"),
    [
        pytest.param(
            {"docs_url": "/api-docs", "redoc_url": None},
            ["/api-docs", "/docs/oauth2-redirect", "/openapi.json"],  # a setting of its own
            ["/docs", "/redoc"],
            id="moved-docs-no-redoc",
        ),
        pytest.param(
            {"openapi_url": "/spec.json", "swagger_ui_oauth2_redirect_url": None},
            ["/docs", "/redoc", "/spec.json"],
            ["/openapi.json", "/docs/oauth2-redirect"],
            id="moved-document",
        ),
        pytest.param({"openapi_url": None}, [], DOCS, id="no-document-no-ui"),
    ],
)
def test_only_the_docs_routes_the_app_serves_are_opened(
    options: dict[str, Any], public: list[str], refused: list[str]
) -> None:
    app = make_app(**options)
    with client(app, with_public_docs(app, CONFIG)) as http:
        for path in public:
            assert http.get(path).status_code == 200, path
        for path in refused:
            assert http.get(path).status_code == 403, path


def test_a_rule_the_config_has_for_a_docs_path_is_kept() -> None:
    config = {**CONFIG, "routes": [*CONFIG["routes"], {"path": "/docs/", "scopes": ["admin"]}]}
    app = make_app()
    with client(app, with_public_docs(app, config)) as http:
        assert http.get("/docs").status_code == 401  # the config's rule, not a public one
        assert http.get("/openapi.json").status_code == 200


def test_with_public_docs_reads_a_yaml_file_with_its_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "keystile.yaml"
    path.write_text("store: 'memory://'\nroutes:\n  - {path: /a, public: true}\n")
    config = with_public_docs(make_app(), path)
    assert isinstance(config, Config) and config.source == str(path)
    assert [r.path for r in config.routes] == ["/a", "/openapi.json", "/docs", *DOCS[1:3]]
    path.write_text("store: 'memory://'\ndefault: maybe\n")
    with pytest.raises(ConfigError) as caught:
        with_public_docs(make_app(), path)
    assert (caught.value.file, caught.value.line) == (str(path), 2)


def test_with_public_docs_refuses_an_engine_with_the_way_to_do_it(engine: Keystile) -> None:
    with pytest.raises(TypeError, match=r"Keystile\(with_public_docs\(app"):
        with_public_docs(make_app(), engine)  # type: ignore[arg-type]


# -- the OpenAPI document ---------------------------------------------------------------


def openapi(app: FastAPI) -> dict[str, Any]:
    with client(app, with_public_docs(app, CONFIG)) as http:
        reply = http.get("/openapi.json")
    assert reply.status_code == 200
    document: dict[str, Any] = reply.json()
    return document


def test_each_operation_carries_the_scopes_it_requires() -> None:
    paths = openapi(make_app())["paths"]
    assert paths["/api/v1/events"]["get"]["security"] == [
        {"BearerKey": ["events:read"]},
        {"ApiKeyHeader": ["events:read"]},
    ]
    assert paths["/api/v1/events/{event_id}"]["put"]["security"] == [
        {"BearerKey": ["events:write"]},
        {"ApiKeyHeader": ["events:write"]},
    ]
    assert "security" not in paths["/health"]["get"]


def test_guarded_operations_document_401_403_429_with_keystiles_body() -> None:
    document = openapi(make_app())
    schema = document["components"]["schemas"]["KeystileRefusal"]
    assert schema["required"] == ["error", "code", "status"]
    assert {"required_scopes", "retry_after"} <= set(schema["properties"])
    events = document["paths"]["/api/v1/events"]["get"]["responses"]
    for status in ("401", "403", "429"):
        content = events[status]["content"]["application/json"]
        assert content["schema"] == {"$ref": "#/components/schemas/KeystileRefusal"}
        assert content["example"]["status"] == int(status)
    assert events["403"]["content"]["application/json"]["example"]["required_scopes"] == [
        "events:read"
    ]
    assert "Retry-After" in events["429"]["headers"]
    assert "WWW-Authenticate" in events["401"]["headers"]
    put = document["paths"]["/api/v1/events/{event_id}"]["put"]["responses"]
    assert put["403"] == {"description": "ours"}  # the operation's own answer stands
    assert "401" in put and "429" in put
    assert set(document["paths"]["/health"]["get"]["responses"]) == {"200"}


def _conforms(body: dict[str, Any], schema: dict[str, Any]) -> bool:
    types = {"string": str, "integer": int, "array": list}
    properties = schema["properties"]
    return set(schema["required"]) <= set(body) and all(
        name in properties and isinstance(value, types[properties[name]["type"]])
        for name, value in body.items()
    )


def test_the_documented_body_is_the_one_clients_get(engine: Keystile) -> None:
    reader = engine.keys.create(name="r", scopes=["events:read"], org="acme").secret
    writer = engine.keys.create(name="w", scopes=["events:write"], org="acme").secret
    app = make_app()
    with client(app, engine) as http:
        schema = http.get("/openapi.json").json()["components"]["schemas"]["KeystileRefusal"]
        bearer = {"Authorization": f"Bearer {reader}"}
        missing = http.get("/api/v1/events")  # the middleware: no key
        lacking = http.put("/api/v1/events/e1", headers=bearer)  # the dependency: scope
        http.put("/api/v1/events/e1", headers={"Authorization": f"Bearer {writer}"})
        limited = http.put("/api/v1/events/e1", headers={"Authorization": f"Bearer {writer}"})
    for reply, code in ((missing, 401), (lacking, 403), (limited, 429)):
        assert reply.status_code == code and _conforms(reply.json(), schema), reply.json()
        assert schema["properties"]["code"]["enum"].count(reply.json()["code"]) == 1
    assert lacking.json()["required_scopes"] == ["events:write"]


# -- require_scopes without the middleware in front ---------------------------------------


def test_require_scopes_without_the_middleware_is_a_500_that_says_so(
    engine: Keystile, caplog: pytest.LogCaptureFixture
) -> None:
    secret = engine.keys.create(name="r", scopes=["events:read"], org="acme").secret
    app = make_app()
    install_error_handler(app)  # no middleware
    with TestClient(app) as http, caplog.at_level(logging.ERROR, logger="keystile"):
        reply = http.get("/api/v1/events", headers={"Authorization": f"Bearer {secret}"})
    assert reply.status_code == 500  # the server's mistake, not the client's 401
    assert reply.json()["code"] == "INTERNAL_ERROR"
    assert "www-authenticate" not in reply.headers
    logged = [r.getMessage() for r in caplog.records if r.name == "keystile"]
    assert len(logged) == 1 and "KeystileMiddleware is missing" in logged[0]
    assert "GET /api/v1/events" in logged[0] and secret not in logged[0]


def test_require_scopes_on_a_route_passed_without_a_key_is_a_500_that_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = {**CONFIG, "routes": [{"path": "/api/v1/events", "public": True}]}
    app = make_app()
    http = client(app, Keystile(config, pepper=PEPPER))
    with http, caplog.at_level(logging.ERROR, logger="keystile"):
        reply = http.get("/api/v1/events", headers={"Authorization": "Bearer sk_x"})
    assert reply.status_code == 500
    logged = [r.getMessage() for r in caplog.records if r.name == "keystile"]
    assert len(logged) == 1 and "without reading a key" in logged[0]
