"""The YAML loader under fuzzing: a config loads, or ConfigError says why; nothing else."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keystile import ConfigError
from keystile.config import Config, load_config

_keys = st.sampled_from(
    [
        "store",
        "routes",
        "limits",
        "limiter",
        "scopes",
        "default",
        "errors",
        "cache",
        "key_types",
        "credentials",
        "trusted_proxies",
        "audit",
        "imported_keys",
        "path",
        "methods",
        "scopes_any",
        "public",
        "org_param",
        "limit",
        "embed",
        "key",
        "org",
        "plans",
        "implies",
        "presets",
        "destructive",
        "known",
        "ttl",
        "strategy",
        "storage",
        "headers",
        "on_error",
        "timeout",
        "x",
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "/a/{x}",
            "/a/{x:path}",
            "GET",
            "*",
            "events:read",
            "1/minute",
            "2s",
            "memory://",
            "sqlite:///x.db",
            "deny",
            "json",
            "{",
            "",
            "a:*",
            "10.0.0.0/8",
        ]
    ),
    st.text(max_size=12),
)
_values: Any = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_any_mapping_loads_or_raises_config_error(data: dict[str, Any]) -> None:
    try:
        assert isinstance(load_config(data), Config)
    except ConfigError as exc:
        assert str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_file_loads_or_raises_config_error_with_the_file(text: str) -> None:
    fd, path = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as stream:
            stream.write(text)
        try:
            assert isinstance(load_config(path), Config)
        except ConfigError as exc:
            assert str(exc).startswith(path)
    except UnicodeEncodeError:
        pass  # hypothesis made a lone surrogate: not a file anyone can write
    finally:
        os.unlink(path)
