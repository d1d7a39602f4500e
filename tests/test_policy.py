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
CORE = ("pipeline", "policy", "routes", "scopes", "sansio", "keys", "limiting", "config")
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
