"""Loading the YAML config: defaults, the SPEC example, and every mistake with its file:line."""

from __future__ import annotations

import dataclasses
import ipaddress
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keystile.config import (
    Config,
    KeyTypeConfig,
    LimiterConfig,
    LimitsConfig,
    RouteConfig,
    ScopesConfig,
    load_config,
    parse_duration,
)
from keystile.errors import ConfigError

SPEC_EXAMPLE = """\
store: "sqlite:///keystile.db"
pepper_env: KEYSTILE_PEPPER
credentials: [bearer, x-api-key]
cache: {ttl: 2s}
store_timeout: 1s
trusted_proxies: [10.0.0.0/8, "2001:db8::/32", 192.0.2.7]

limiter:
  storage: "memory://"
  strategy: moving-window
  headers: [x-ratelimit]
  on_error: closed
  timeout: 250ms

limits:
  key: "1000/hour"
  org: "10000/day"
  plans: {free: "60/minute", pro: "600/minute"}
  failed_auth: "20/minute"

key_types:
  secret:      {prefix: "sk_"}
  publishable: {prefix: "pk_", max_scopes: ["*:read"]}
  embed:       {prefix: "emb_"}

scopes:
  implies:
    admin: ["*"]
    "events:write": ["events:read"]
  presets:
    read-only: ["*:read"]
    full: ["*"]
  destructive: [servers:delete, backups:restore, members:pull]
  known: [events:read, events:write, results, members:read]

routes:
  - {path: /health, public: true}
  - {path: /api/v1/events, methods: [GET], scopes: [events:read]}
  - {path: "/api/v1/events/{event_id}", methods: [PUT, patch], scopes: [events:write]}
  - path: "/api/v1/events/{event_id}/results"
    methods: [POST]
    scopes_any: [results, admin]
    limit: "100/minute"
  - {path: "/api/v1/orgs/{org}/members", scopes: [members:read], org_param: org}
  - {path: "/embed/{event}/{view}", methods: [GET], embed: true}
default: deny
errors: json
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keystile.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_spec_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    config = load_config(path)
    assert config.source == str(path)
    assert config.cache_ttl == 2.0
    assert config.store_timeout == 1.0
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert config.limiter == LimiterConfig(timeout=0.25)
    assert config.limits == LimitsConfig(
        key="1000/hour",
        org="10000/day",
        plans={"free": "60/minute", "pro": "600/minute"},
        failed_auth="20/minute",
    )
    assert config.key_types["publishable"] == KeyTypeConfig(
        "publishable", "pk_", max_scopes=("*:read",), origin_bound=True
    )
    assert config.scopes.implies == {"admin": ("*",), "events:write": ("events:read",)}
    assert config.scopes.destructive == ("servers:delete", "backups:restore", "members:pull")
    assert config.routes[2] == RouteConfig(
        "/api/v1/events/{event_id}", methods=("PUT", "PATCH"), scopes=("events:write",), line=39
    )
    assert [r.line for r in config.routes] == [37, 38, 39, 40, 44, 45]
    assert config.routes[3].scopes_any == ("results", "admin")
    assert config.routes[4].org_param == "org"
    assert config.routes[5].embed


def test_an_empty_file_and_an_empty_mapping_give_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == dataclasses.replace(
        Config(), source=str(tmp_path / "keystile.yaml")
    )
    config = load_config({})
    assert config == Config()
    assert config.key_types["secret"] == KeyTypeConfig("secret", "sk_")
    assert config.key_types["embed"] == KeyTypeConfig("embed", "emb_", origin_bound=True)
    assert config.scopes.presets == {"read-only": ("*:read",), "full": ("*",)}
    assert config.scopes.default == ("read",)
    assert config.limits.key == "1000/hour"


def test_a_key_type_keeps_its_defaults_for_fields_not_given(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "key_types:\n  publishable: {prefix: rh_pk_}\n"))
    assert config.key_types["publishable"] == KeyTypeConfig(
        "publishable", "rh_pk_", max_scopes=("*:read",), origin_bound=True
    )
    assert config.key_types["secret"].prefix == "sk_"


def test_a_key_type_can_match_another_products_format() -> None:
    fmt = {"prefix": "sq_live_", "alphabet": "hex", "length": 64, "checksum": False}
    secret = load_config({"key_types": {"secret": fmt}}).key_types["secret"]
    assert (secret.prefix, secret.alphabet, secret.length, secret.checksum) == (
        "sq_live_", "hex", 64, False
    )  # fmt: skip
    assert secret.randomness_bits == 256


def test_presets_given_are_added_to_the_built_in_ones() -> None:
    scopes = load_config({"scopes": {"presets": {"ci": ["results"], "full": ["*:read"]}}}).scopes
    assert scopes.presets == {"read-only": ("*:read",), "full": ("*:read",), "ci": ("results",)}


def test_a_null_limit_means_no_such_limit() -> None:
    limits = load_config({"limits": {"key": None}}).limits
    assert limits == LimitsConfig(key=None)


def test_the_config_is_immutable() -> None:
    config = load_config({"limits": {"plans": {"free": "1/second"}}, "scopes": {"implies": {}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.default = "public"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.limits.plans["free"] = "1000/second"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.key_types["secret"] = KeyTypeConfig("secret", "x_")  # type: ignore[index]
    assert isinstance(config.routes, tuple)


def test_known_scopes_are_every_concrete_scope_the_config_names(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert config.known_scopes() == {
        "admin", "events:read", "events:write", "results", "members:read",
        "servers:delete", "backups:restore", "members:pull", "read",
    }  # fmt: skip


def test_the_route_table_and_scope_policy_are_compiled_once(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SPEC_EXAMPLE))
    assert config.route_table is config.route_table
    found = config.route_table.match("HEAD", "/api/v1/events/")
    assert found is not None
    assert found.rule is config.routes[1]
    assert config.scope_policy.preset("read-only") == ("events:read", "members:read")


def test_a_mapping_is_validated_without_a_place() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"limiter": {"stratgy": "moving-window"}})
    assert (caught.value.file, caught.value.line) == (None, None)
    assert str(caught.value).startswith("unknown key 'limiter.stratgy'")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("250ms", 0.25, id="ms"),
        pytest.param("2s", 2.0, id="s"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("1m", 60.0, id="m"),
        pytest.param("24h", 86400.0, id="h"),
        pytest.param("7d", 604800.0, id="d"),
        pytest.param("30", 30.0, id="bare-string"),
        pytest.param(" 2 s ", 2.0, id="spaces"),
        pytest.param(5, 5.0, id="int"),
        pytest.param(0.5, 0.5, id="float"),
        pytest.param(0, 0.0, id="zero"),
        pytest.param(timedelta(minutes=2), 120.0, id="timedelta"),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("2 parsecs", id="unknown-unit"),
        pytest.param("2S", id="unit-case"),
        pytest.param("-1s", id="negative-string"),
        pytest.param(-1, id="negative-number"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="null"),
        pytest.param("1h30m", id="compound"),
    ],
)
def test_parse_duration_refuses_bad_input(value: Any) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(value)


# Each case: YAML, the line the error must name, and a fragment of the message.
BAD_CONFIGS = [
    pytest.param("store: x\nstorr: y\n", 2, "unknown key 'storr'", id="unknown-top-key"),
    pytest.param(
        "limiter:\n  storage: memory://\n  stratgy: fixed-window\n",
        3,
        "unknown key 'limiter.stratgy'",
        id="unknown-nested-key-with-hint",
    ),
    pytest.param(
        "cache: {ttl: 2s, tll: 3s}\n", 1, "unknown key 'cache.tll'", id="unknown-flow-key"
    ),
    pytest.param(
        "routes:\n  - path: /a\n    scope: [x]\n",
        3,
        "unknown key 'routes[0].scope'",
        id="unknown-route-key",
    ),
    pytest.param(
        "key_types:\n  restricted: {prefix: rk_}\n",
        2,
        "key_types.restricted",
        id="user-defined-key-type",
    ),
    pytest.param(
        "store: x\nstore: y\n", 2, "duplicate key 'store' (first at line 1)", id="duplicate-key"
    ),
    pytest.param("store: [unclosed\n", 2, "invalid YAML", id="yaml-syntax"),
    pytest.param("- a\n- b\n", 1, "the config must be a mapping", id="top-level-list"),
    pytest.param("\n\nlimiter: fast\n", 3, "limiter must be a mapping", id="section-not-mapping"),
    pytest.param("store: sqlite.db\n", 1, "is not a URL", id="store-not-url"),
    pytest.param("pepper_env: 1PEPPER\n", 1, "environment variable", id="bad-pepper-env"),
    pytest.param("credentials: [bearer, cookie]\n", 1, "'cookie'", id="unknown-credential"),
    pytest.param("credentials:\n  - bearer\n  - 'query:'\n", 3, "query:NAME", id="query-no-name"),
    pytest.param("credentials: []\n", 1, "at least one", id="no-credentials"),
    pytest.param(
        "credentials:\n  - bearer\n  - 'scheme:'\n", 3, "scheme:NAME", id="scheme-no-name"
    ),
    pytest.param(
        "credentials:\n  - bearer\n  - 'scheme:Api Key'\n",
        3,
        "not an Authorization scheme",
        id="scheme-with-a-space",
    ),
    pytest.param(
        "credentials: [x-api-key, 'scheme:Api-Key,Token']\n",
        1,
        "not an Authorization scheme",
        id="scheme-with-a-comma",
    ),
    pytest.param(
        "credentials: [x-api-key, 'scheme:BEARER']\n", 1, "write bearer", id="scheme-bearer"
    ),
    pytest.param("credentials: bearer\n", 1, "must be a list", id="credentials-not-list"),
    pytest.param("cache:\n  size: big\n", 2, "cache.size: must be a whole number", id="size-type"),
    pytest.param("cache:\n  size: true\n", 2, "cache.size", id="size-bool"),
    pytest.param(
        "cache:\n  ttl: 2 parsecs\n",
        2,
        "cache.ttl: '2 parsecs' is not a duration",
        id="bad-duration",
    ),
    pytest.param(
        "store_timeout: 0\n", 1, "store_timeout: must be longer than zero", id="zero-timeout"
    ),
    pytest.param(
        "trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.7/8\n",
        3,
        "has host bits set",
        id="cidr-host-bits",
    ),
    pytest.param("trusted_proxies: [not-an-ip]\n", 1, "is not a CIDR", id="cidr-garbage"),
    pytest.param(
        "limiter:\n  strategy: leaky-bucket\n", 2, "one of fixed-window", id="bad-strategy"
    ),
    pytest.param("limiter:\n  headers: [x-ratelimit, draft]\n", 2, "'draft'", id="bad-header"),
    pytest.param("limiter:\n  on_error: ignore\n", 2, "one of closed, open", id="bad-on-error"),
    pytest.param("limiter:\n  timeout: 0ms\n", 2, "longer than zero", id="zero-limiter-timeout"),
    pytest.param("limits:\n  key: lots\n", 2, "'lots' is not a rate limit", id="bad-limit"),
    pytest.param("limits:\n  org: 10/parsec\n", 2, "limits.org", id="bad-granularity"),
    pytest.param("limits:\n  key: 0/second\n", 2, "allows no request", id="zero-limit"),
    pytest.param("limits:\n  key: 100\n", 2, "must be a rate limit", id="limit-not-string"),
    pytest.param(
        "limits:\n  plans:\n    free: 60/minute\n    pro: 600/fortnight\n",
        4,
        "limits.plans.pro",
        id="bad-plan-limit",
    ),
    pytest.param("limits:\n  plans: {free: null}\n", 2, "limits.plans.free", id="null-plan"),
    pytest.param(
        "key_types:\n  secret: {prefix: 'sk live'}\n", 2, "1 to 20 characters", id="prefix-charset"
    ),
    pytest.param("key_types:\n  secret: {prefix: ''}\n", 2, "non-empty", id="prefix-empty"),
    pytest.param(
        "key_types:\n  secret: {prefix: abcdefghijklmnopqrstu}\n", 2, "1 to 20", id="prefix-long"
    ),
    pytest.param(
        "key_types:\n  secret:\n    alphabet: base64\n", 3, "one of base62, hex", id="bad-alphabet"
    ),
    pytest.param(
        "key_types:\n  secret:\n    alphabet: hex\n    length: 31\n",
        4,
        "31 hex characters carry 124 bits; at least 32",
        id="too-little-randomness",
    ),
    pytest.param(
        "key_types:\n  embed:\n    length: 21\n",
        3,
        "at least 22",
        id="too-little-randomness-base62",
    ),
    pytest.param(
        "key_types:\n  secret: {prefix: sk_}\n  publishable: {prefix: sk_pub_}\n",
        3,
        "'sk_pub_' and secret's 'sk_' overlap",
        id="prefix-overlap",
    ),
    pytest.param(
        "key_types:\n  embed:\n    prefix: pk_\n", 3, "overlap", id="prefix-equal-to-default"
    ),
    pytest.param(
        "key_types:\n  secret: {checksum: 'no'}\n", 2, "true or false", id="checksum-not-bool"
    ),
    pytest.param(
        "key_types:\n  publishable: {max_scopes: ['*:*']}\n", 2, "'*:*'", id="bad-max-scope"
    ),
    pytest.param(
        "scopes:\n  known: [events:read, 'events: write']\n",
        2,
        "'events: write'",
        id="bad-known-scope",
    ),
    pytest.param(
        "scopes:\n  known:\n    - ok\n    - 'x:*'\n",
        4,
        "wildcard is not allowed",
        id="wildcard-known",
    ),
    pytest.param(
        "scopes:\n  destructive: ['*']\n", 2, "wildcard is not allowed", id="wildcard-destructive"
    ),
    pytest.param("scopes:\n  implies:\n    'a b': [c]\n", 3, "'a b'", id="bad-implies-key"),
    pytest.param("scopes:\n  implies:\n    a: [b, 'c:']\n", 3, "'c:'", id="bad-implies-value"),
    pytest.param(
        "scopes:\n  implies:\n    a: [b]\n    b: [c]\n    c: [a]\n",
        5,
        "scopes.implies.c: cycle: a -> b -> c -> a",
        id="implies-cycle",
    ),
    pytest.param("scopes:\n  implies:\n    a: [a]\n", 3, "cycle: a -> a", id="implies-self-loop"),
    pytest.param(
        "scopes:\n  destructive: [servers:delete]\n  presets:\n    ops: [servers:delete]\n",
        4,
        "'servers:delete' grants a destructive scope",
        id="preset-destructive",
    ),
    pytest.param(
        "scopes:\n  implies: {admin: ['*']}\n  presets:\n    ops: [admin]\n",
        4,
        "'admin' grants a destructive scope (or `*`)",
        id="preset-implies-star",
    ),
    pytest.param("scopes:\n  presets:\n    'read only': [x]\n", 3, "preset name", id="preset-name"),
    pytest.param("routes:\n  - {methods: [GET]}\n", 2, "a route needs a path", id="route-no-path"),
    pytest.param("routes:\n  - /health\n", 2, "routes[0] must be a mapping", id="route-string"),
    pytest.param("routes:\n  - path: health\n", 2, "starting with '/'", id="route-relative"),
    pytest.param(
        "routes:\n  - path: /a\n  - path: '/b/{x:int}'\n",
        3,
        "unknown converter 'int'",
        id="route-bad-converter",
    ),
    pytest.param(
        "routes:\n  - path: /a\n    methods: [GET, FETCH]\n",
        3,
        "'FETCH' is not one of GET",
        id="route-bad-method",
    ),
    pytest.param(
        "routes:\n  - path: /a\n    methods: []\n",
        3,
        "at least one method",
        id="route-no-methods",
    ),
    pytest.param(
        "routes:\n  - path: /a\n    scopes: ['events:*']\n",
        3,
        "wildcard is not allowed",
        id="route-wildcard-scope",
    ),
    pytest.param(
        "routes:\n  - path: /a\n    scopes_any:\n      - ok\n      - 'bad scope'\n",
        5,
        "'bad scope'",
        id="route-bad-scope-any-item-line",
    ),
    pytest.param(
        "routes:\n  - path: '/orgs/{org_id}'\n    org_param: org\n",
        3,
        "'org' is not a parameter of /orgs/{org_id} (parameters: org_id)",
        id="org-param-missing",
    ),
    pytest.param(
        "routes:\n  - path: /health\n    public: true\n    scopes: [x]\n",
        4,
        "routes[0].scopes: a public route",
        id="public-with-scopes",
    ),
    pytest.param(
        "routes:\n  - path: /health\n    public: true\n    limit: 10/second\n",
        4,
        "a public route",
        id="public-with-limit",
    ),
    pytest.param("routes:\n  - {path: /a, public: 'yes'}\n", 2, "true or false", id="public-str"),
    pytest.param(
        "routes:\n  - path: /e/{x}\n    embed: true\n    methods: [GET, POST]\n",
        4,
        "embed route",
        id="embed-with-post",
    ),
    pytest.param(
        "routes:\n  - path: /a\n    limit: 5/fortnight\n", 3, "routes[0].limit", id="route-limit"
    ),
    pytest.param(
        "routes:\n  - {path: '/a/{x}', methods: [GET]}\n  - {path: /b}\n"
        "  - {path: '/a/{y}/', methods: [HEAD, POST]}\n",
        4,
        "route at line 2 ties with route at line 4",
        id="route-tie",
    ),
    pytest.param("default: allow\n", 1, "one of deny, authenticated, public", id="bad-default"),
    pytest.param("errors: xml\n", 1, "one of json, problem", id="bad-errors"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD_CONFIGS)
def test_a_mistake_is_reported_with_its_file_and_line(
    tmp_path: Path, text: str, line: int | None, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.file, error.line) == (str(path), line)
    place = f"{path}:{line}: " if line else f"{path}: "
    assert str(error).startswith(place)
    assert fragment in error.message


def test_an_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'strategy'"):
        load_config(write(tmp_path, "limiter:\n  stratgy: fixed-window\n"))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.file == str(tmp_path / "nope.yaml")
    assert "cannot read" in caught.value.message


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML") as caught:
        load_config(write(tmp_path, "store: !!python/object/apply:os.system ['true']\n"))
    assert caught.value.line == 1


def test_an_authorization_scheme_is_a_credential_source() -> None:
    config = load_config({"credentials": ["bearer", "scheme:Api-Key", "scheme:Token"]})
    assert config.credentials == ("bearer", "scheme:Api-Key", "scheme:Token")


def test_lists_drop_duplicates_and_methods_are_upper_cased() -> None:
    config = load_config(
        {
            "credentials": ["bearer", "bearer", "query:api_key"],
            "routes": [{"path": "/a", "methods": ["get", "GET", "post"], "scopes": ["x", "x"]}],
        }
    )
    assert config.credentials == ("bearer", "query:api_key")
    assert config.routes[0].methods == ("GET", "POST")
    assert config.routes[0].scopes == ("x",)


def test_scopes_default_is_configurable() -> None:
    assert load_config({"scopes": {"default": ["events:read"]}}).scopes == ScopesConfig(
        default=("events:read",)
    )
