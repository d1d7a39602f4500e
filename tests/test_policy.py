"""The decision reads a compiled policy, and the core imports nothing above it (STYLE.md)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from keystile import Keystile
from keystile.config import LimiterConfig
from keystile.limiter import open_limiter, refunds_on
from keystile.pipeline import Admit, Lookups, decide
from keystile.policy import Policy
from keystile.sansio import RequestView
from tests.conftest import PEPPER

SRC = Path(__file__).resolve().parent.parent / "src" / "keystile"

# The core: no framework, no driver, no store, no engine (STYLE.md, "Arrows point down").
CORE = (
    "pipeline",
    "policy",
    "principal",
    "routes",
    "scopes",
    "sansio",
    "keys",
    "limiting",
    "config",
)
ABOVE = ("engine", "asgi", "wsgi", "flask", "django", "fastapi", "management", "cli", "lifecycle")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_nothing_above_it(module: str) -> None:
    imported = _imported_modules(SRC / f"{module}.py")
    above = sorted(
        name for name in imported if name.startswith("keystile.") and name.split(".")[1] in ABOVE
    )
    assert above == [], f"keystile.{module} imports {above}"


def test_the_decision_runs_on_a_policy_and_lookups_alone() -> None:
    config = {
        "store": "memory://",
        "routes": [{"path": "/open", "public": True}, {"path": "/x", "scopes": ["x:read"]}],
    }
    with Keystile(config, pepper=PEPPER) as ks:
        flow = decide(ks.policy, Lookups(ks.cache, ks.now), RequestView("GET", b"/open"))
        with pytest.raises(StopIteration) as done:
            next(flow)  # a public route: no I/O asked
        assert isinstance(done.value.value, Admit)
        assert done.value.value.route is not None and done.value.value.route.rule.path == "/open"


def test_the_policy_cannot_be_changed_after_it_is_compiled() -> None:
    with Keystile({"store": "memory://"}, pepper=PEPPER) as ks:
        with pytest.raises(dataclasses.FrozenInstanceError):
            ks.policy.refunds = False  # type: ignore[misc]
        assert isinstance(ks.policy, Policy)


@pytest.mark.parametrize(
    ("storage", "refunds"),
    [
        ("memory://", True),
        ("redis://127.0.0.1:6379/0", True),
        ("async+redis://127.0.0.1:6379/0", True),
        ("memcached://127.0.0.1:11211", False),
    ],
)
def test_the_policy_knows_whether_the_limiter_refunds_before_it_is_opened(
    storage: str, refunds: bool
) -> None:
    config = LimiterConfig(storage=storage, strategy="fixed-window")
    limiter = open_limiter(config)  # no connection is made here
    try:
        assert refunds_on(config) is refunds
        assert limiter.refunds is refunds
    finally:
        limiter.close()


def test_the_remembered_route_tells_targets_apart_and_stays_bounded() -> None:
    from keystile import policy as policy_module

    config = {
        "store": "memory://",
        "routes": [
            {"path": "/a/{x}", "methods": ["GET"], "scopes": ["a:read"]},
            {"path": "/a/{x}", "methods": ["POST"], "scopes": ["a:write"]},
        ],
    }
    with Keystile(config, pepper=PEPPER) as ks:
        policy = ks.policy

        def scopes(view: RequestView) -> object:
            method, match = policy.route(view)
            sound = method is not None
            return match.rule.scopes if sound and match else (sound, match)

        for _ in range(2):  # the second time from memory, the same answers
            assert scopes(RequestView("GET", b"/a/1")) == ("a:read",)
            assert scopes(RequestView("HEAD", b"/a/1")) == ("a:read",)
            assert policy.route(RequestView("HEAD", b"/a/1"))[0] == "GET"  # routed as GET
            assert scopes(RequestView("POST", b"/a/1")) == ("a:write",)
            assert scopes(RequestView("GET", b"/a/1/b")) == (True, None)
            assert scopes(RequestView("GET", b"/a/%2e%2e", path_encoded=True)) == (False, None)
            # Not percent-encoded (WSGI): a literal segment, not a dot-segment.
            assert scopes(RequestView("GET", b"/a/%2e%2e")) == ("a:read",)
            mounted = RequestView("GET", b"/api/a/1", root_path="/api")
            assert scopes(mounted) == ("a:read",)
            assert scopes(RequestView("GET", b"/api/a/1")) == (True, None)  # not mounted
            assert scopes(RequestView("GET", b"/a/1", raw_uri=b"/a/..%2f")) == (False, None)
        for i in range(policy_module.MAX_ROUTED + 10):
            policy.route(RequestView("GET", f"/a/{i}".encode()))
        assert len(policy._routed) <= policy_module.MAX_ROUTED
        policy._routed.clear()
        long = RequestView("GET", b"/a/" + b"x" * policy_module.MAX_ROUTED_PATH)
        assert scopes(long) == ("a:read",) and not policy._routed  # routed, not remembered
        assert scopes(RequestView("GET", b"/a/1")) == ("a:read",)
