"""SPEC section 5: a secret never appears in a repr; URLs hold passwords and tokens too."""

from __future__ import annotations

import pytest

from keystile import Keystile
from keystile._cli_format import safe_url
from keystile._redact import redact_url
from keystile.config import load_config
from keystile.stores.base import StoreCall
from tests.conftest import PEPPER

URLS = [
    pytest.param(
        "postgresql+psycopg://app:hunter2@db:5432/keys",
        "postgresql+psycopg://***@db:5432/keys",
        id="password",
    ),
    pytest.param("redis://:hunter2@cache:6379/0", "redis://***@cache:6379/0", id="password-only"),
    pytest.param("https://hunter2@hooks.example/x", "https://***@hooks.example/x", id="user-token"),
    pytest.param("redis://cache/0?password=hunter2", "redis://cache/0?***", id="query-password"),
    pytest.param(
        "redis+sentinel://:hunter2@s1:26379,s2:26379/main",
        "redis+sentinel://***@s1:26379,s2:26379/main",
        id="several-hosts",
    ),
    pytest.param("https://h.example/a#hunter2", "https://h.example/a", id="fragment"),
    pytest.param("not a url@hunter2", "***", id="no-scheme-with-at"),
    pytest.param("sqlite:///keystile.db", "sqlite:///keystile.db", id="sqlite-kept-whole"),
    pytest.param("memory://", "memory://", id="memory-kept-whole"),
]


@pytest.mark.parametrize(("url", "shown"), URLS)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert safe_url(url) == shown  # the CLI prints store URLs the same way


def test_a_webhook_url_shows_only_its_host() -> None:
    slack = "https://hooks.slack.example/services/T0/B0/hunter2"
    assert redact_url(slack, keep_path=False) == "https://hooks.slack.example/***"


def test_config_engine_and_store_reprs_hide_every_password() -> None:
    raw = {
        "store": "postgresql+psycopg://postgres:hunter2@127.0.0.1:5432/test",
        "limiter": {"storage": "redis://:hunter3@127.0.0.1:6379/0"},
        "audit": {"webhook": {"url": "https://hooks.slack.example/services/T0/B0/hunter4"}},
    }
    config = load_config(raw)
    shown = [repr(config), repr(config.limiter), repr(config.audit)]
    # The engine connects lazily: nothing here needs the services up.
    with Keystile({k: v for k, v in raw.items() if k != "audit"}, pepper=PEPPER) as ks:
        shown += [repr(ks), repr(ks.keys), repr(ks.store), repr(ks.limiter)]
    for text in shown:
        assert "hunter" not in text, text
    assert "127.0.0.1:5432/test" in shown[0] and "127.0.0.1:6379" in shown[1]


def test_a_store_call_does_not_show_the_digest_it_looks_up() -> None:
    digest = "d" * 64
    assert digest not in repr(StoreCall("find_by_digest", (digest,)))
