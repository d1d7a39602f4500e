"""YAML (or a mapping) -> validated, immutable configuration.

Every mistake is a :class:`~keystile.errors.ConfigError` that says
``file:line``: the YAML is read with a loader that remembers where each
mapping, key and list item starts, so ``keystile check`` and a refused start
point at the line to fix rather than at a Python traceback. A mapping given
from Python is validated the same way, without lines.

Validation is strict on purpose: an unknown key (``limiter: {stratgy: ...}``)
is an error, not a silently ignored setting, because in an auth config a
typo usually means a protection the operator believes is on but is not.

Usage::

    config = load_config("keystile.yaml")
    config.route_table.match("GET", "/api/v1/events")
    config.scope_policy.preset("read-only")
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

from keystile._config_reader import (
    Section,
    choice,
    limit_problem,
    parse_duration,
    read_yaml,
    scope_check,
)
from keystile._redact import repr_redacting
from keystile.errors import ConfigError
from keystile.routes import RouteTable, parse_pattern
from keystile.scopes import ScopePolicy, find_cycle, is_pattern

__all__ = [
    "AuditConfig",
    "Config",
    "KeyTypeConfig",
    "LimiterConfig",
    "LimitsConfig",
    "RouteConfig",
    "ScopesConfig",
    "UsageConfig",
    "load_config",
    "parse_duration",
]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_ALPHABETS = {"base62": 62, "hex": 16}
# fmt: off
_TOP_KEYS = ("store", "pepper_env", "credentials", "cache", "store_timeout", "trusted_proxies",
             "limiter", "limits", "key_types", "scopes", "routes", "default", "errors",
             "imported_keys", "audit", "usage")
# fmt: on
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")


@dataclass(frozen=True)
class LimiterConfig:
    """``limiter:``: where counters live and how they are counted."""

    storage: str = "memory://"
    strategy: str = "moving-window"
    headers: tuple[str, ...] = ("x-ratelimit",)
    on_error: str = "closed"
    timeout: float = 0.25

    def __repr__(self) -> str:
        return repr_redacting(self, urls=("storage",))


@dataclass(frozen=True)
class LimitsConfig:
    """``limits:``: limit strings (``limits`` syntax); ``None`` means no such limit."""

    key: str | None = "1000/hour"
    org: str | None = None
    plans: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    failed_auth: str | None = None


@dataclass(frozen=True)
class KeyTypeConfig:
    """One key type's format and restrictions; an empty ``max_scopes`` means no ceiling."""

    name: str
    prefix: str
    alphabet: str = "base62"
    length: int = 43
    checksum: bool = True
    max_scopes: tuple[str, ...] = ()
    origin_bound: bool = False

    @property
    def randomness_bits(self) -> float:
        """Bits of randomness in the random part (at least 128 is enforced)."""
        return self.length * math.log2(_ALPHABETS[self.alphabet])


_DEFAULT_KEY_TYPES = {
    "secret": KeyTypeConfig("secret", "sk_"),
    "publishable": KeyTypeConfig("publishable", "pk_", max_scopes=("*:read",), origin_bound=True),
    "embed": KeyTypeConfig("embed", "emb_", origin_bound=True),
}
_DEFAULT_PRESETS: dict[str, tuple[str, ...]] = {"read-only": ("*:read",), "full": ("*",)}


@dataclass(frozen=True)
class UsageConfig:
    """Per-key request counts (SPEC section 8): kept in the process, written behind."""

    enabled: bool = True
    retention: float = 90 * 86400.0  # seconds; rows older than this go at each flush


@dataclass(frozen=True)
class AuditConfig:
    """Where audit events go (see :mod:`keystile.audit`); callbacks are added in Python."""

    log: bool = True
    # Kept in the key store by default (memory:// included), so that
    # ``ks.audit.events`` and the management API can read the trail back.
    store: bool = True
    webhook_url: str | None = None
    webhook_secret_env: str = "KEYSTILE_WEBHOOK_SECRET"
    webhook_timeout: float = 2.0
    webhook_retries: int = 3
    queue_size: int = 1000

    def __repr__(self) -> str:
        return repr_redacting(self, secret_urls=("webhook_url",))


@dataclass(frozen=True)
class ScopesConfig:
    """``scopes:``: implications, presets, destructive and known scopes, the API default."""

    implies: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    presets: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType(dict(_DEFAULT_PRESETS))
    )
    destructive: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    default: tuple[str, ...] = ("read",)


@dataclass(frozen=True)
class RouteConfig:
    """One ``routes:`` rule; ``line`` is where it starts in the YAML, if known."""

    path: str
    methods: tuple[str, ...] | None = None
    public: bool = False
    scopes: tuple[str, ...] = ()
    scopes_any: tuple[str, ...] = ()
    org_param: str | None = None
    limit: str | None = None
    embed: bool = False
    line: int | None = None


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; build it with :func:`load_config`.

    The route table and the scope policy are compiled once, here, so nothing
    on the request path re-reads or re-validates settings::

        config = load_config("keystile.yaml")
        config.route_table.match("GET", "/api/v1/events")   # RouteMatch | None
        config.scope_policy.preset("read-only")             # concrete scopes

    Security caveat: the config holds no secret, only the *name* of the
    environment variable with the pepper (``pepper_env``); constructing a
    ``Config`` directly skips the YAML checks except route ties and patterns.
    """

    store: str = "sqlite:///keystile.db"
    pepper_env: str = "KEYSTILE_PEPPER"
    credentials: tuple[str, ...] = ("bearer", "x-api-key")
    cache_ttl: float = 2.0
    cache_size: int = 10000
    negative_cache_ttl: float = 0.5
    negative_cache_size: int = 1000
    store_timeout: float = 1.0
    trusted_proxies: tuple[Network, ...] = ()
    # ``unix`` in ``trusted_proxies``: a peer with no address (a Unix socket,
    # as behind nginx) is a proxy whose ``X-Forwarded-For`` is believed.
    trust_unix_socket: bool = False
    limiter: LimiterConfig = field(default_factory=LimiterConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    key_types: Mapping[str, KeyTypeConfig] = field(
        default_factory=lambda: MappingProxyType(dict(_DEFAULT_KEY_TYPES))
    )
    scopes: ScopesConfig = field(default_factory=ScopesConfig)
    routes: tuple[RouteConfig, ...] = ()
    default: str = "deny"
    errors: str = "json"
    # Accept keys imported from another system (``lookup.secret`` verified by
    # their own passlib hash once, then upgraded to keystile's digest).
    imported_keys: bool = False
    audit: AuditConfig = field(default_factory=AuditConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    source: str | None = None
    route_table: RouteTable = field(init=False, compare=False, repr=False)
    scope_policy: ScopePolicy = field(init=False, compare=False, repr=False)

    def __repr__(self) -> str:
        return repr_redacting(self, urls=("store",))

    def __post_init__(self) -> None:
        # Frozen: object.__setattr__ is the sanctioned way to fill derived fields.
        object.__setattr__(self, "route_table", RouteTable(self.routes, source=self.source))
        policy = ScopePolicy.from_config(self.scopes, known=self.known_scopes())
        object.__setattr__(self, "scope_policy", policy)

    def known_scopes(self) -> frozenset[str]:
        """Every concrete scope the config names anywhere (wildcard patterns excluded).

        Routes, ``implies`` keys and values, presets, ``destructive``,
        ``known``, ``scopes.default`` and the key types' ``max_scopes``.
        """
        sc = self.scopes
        names = [*sc.implies, *sc.destructive, *sc.known, *sc.default]
        names += [s for values in sc.implies.values() for s in values]
        names += [s for values in sc.presets.values() for s in values]
        names += [s for kt in self.key_types.values() for s in kt.max_scopes]
        names += [s for r in self.routes for s in (*r.scopes, *r.scopes_any)]
        return frozenset(s for s in names if not is_pattern(s))


# --- the sections -------------------------------------------------------------


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> Config:
    """Read and validate a config from a YAML file path or a mapping of the same shape.

    Raises :class:`~keystile.errors.ConfigError` with ``file:line`` (for a
    file) on the first mistake found.
    """
    if isinstance(source, Mapping):
        file, data = None, source
    else:
        file = os.fspath(source)
        data = read_yaml(file)
    top = Section(data, "", None, file)
    top.only(_TOP_KEYS)
    store = top.text("store", Config.store)
    if "://" not in store:
        raise top.fail("store", f"{store!r} is not a URL such as 'sqlite:///keystile.db'")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top.text("pepper_env", Config.pepper_env)):
        raise top.fail("pepper_env", "must be the name of an environment variable")
    credentials = top.strings("credentials", Config.credentials, _credential_problem)
    if not credentials:
        raise top.fail("credentials", "must name at least one place to read a key from")
    cache = top.sub("cache")
    cache.only(("ttl", "size", "negative_ttl", "negative_size"))
    scopes = _scopes(top.sub("scopes"))
    return Config(
        store=store,
        pepper_env=top.text("pepper_env", Config.pepper_env),
        credentials=credentials,
        cache_ttl=cache.duration("ttl", Config.cache_ttl, positive=False),
        cache_size=cache.integer("size", Config.cache_size, minimum=0),
        negative_cache_ttl=cache.duration(
            "negative_ttl", Config.negative_cache_ttl, positive=False
        ),
        negative_cache_size=cache.integer("negative_size", Config.negative_cache_size, minimum=0),
        store_timeout=top.duration("store_timeout", Config.store_timeout, positive=True),
        trusted_proxies=_networks(top),
        trust_unix_socket=any(item == "unix" for item, _ in top.items("trusted_proxies")),
        limiter=_limiter(top.sub("limiter")),
        limits=_limits(top.sub("limits")),
        key_types=_key_types(top.sub("key_types")),
        scopes=scopes,
        routes=tuple(_route(top, i, *entry) for i, entry in enumerate(top.items("routes"))),
        default=top.text("default", Config.default, ("deny", "authenticated", "public")),
        errors=top.text("errors", Config.errors, ("json", "problem")),
        imported_keys=top.flag("imported_keys", Config.imported_keys),
        audit=_audit(top.sub("audit")),
        usage=_usage(top.sub("usage")),
        source=file,
    )


# RFC 9110 section 11.1: an auth scheme is a token.
_SCHEME = re.compile(r"scheme:([!#$%&'*+.^_`|~0-9A-Za-z-]+)")


def _credential_problem(value: str) -> str | None:
    if value in ("bearer", "x-api-key") or re.fullmatch(r"query:[A-Za-z0-9_.-]+", value):
        return None
    scheme = _SCHEME.fullmatch(value)
    if scheme is not None:
        if scheme.group(1).lower() == "bearer":
            return f"{value!r} is Bearer itself: write bearer"
        return None
    if value.startswith("scheme:"):
        return (
            f"{value!r} is not an Authorization scheme: write scheme:NAME, "
            "NAME one word such as Api-Key"
        )
    return f"{value!r} is not bearer, x-api-key, query:NAME or scheme:NAME"


def _networks(top: Section) -> tuple[Network, ...]:
    out: list[Network] = []
    for item, line in top.items("trusted_proxies"):
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise top.fail("trusted_proxies", f"{item!r} is not a CIDR string", line)
        if item == "unix":
            continue  # Config.trust_unix_socket
        try:
            # strict: `10.0.0.7/8` is refused rather than widened, so the
            # operator sees exactly which addresses are trusted.
            out.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise top.fail(
                "trusted_proxies", f"{item!r} is not a CIDR or unix ({exc})", line
            ) from None
    return tuple(out)


def _audit(sec: Section) -> AuditConfig:
    sec.only(("log", "store", "webhook", "queue_size"))
    hook = sec.sub("webhook")
    hook.only(("url", "secret_env", "timeout", "retries"))
    url = hook.data.get("url")
    if url is not None and (not isinstance(url, str) or not re.match(r"https?://", url)):
        raise hook.fail("url", f"must be an http(s) URL, not {url!r}")
    return AuditConfig(
        log=sec.flag("log", AuditConfig.log),
        store=sec.flag("store", AuditConfig.store),
        webhook_url=url,
        webhook_secret_env=hook.text("secret_env", AuditConfig.webhook_secret_env),
        webhook_timeout=hook.duration("timeout", AuditConfig.webhook_timeout, positive=True),
        webhook_retries=hook.integer("retries", AuditConfig.webhook_retries, minimum=0),
        queue_size=sec.integer("queue_size", AuditConfig.queue_size, minimum=1),
    )


def _usage(sec: Section) -> UsageConfig:
    sec.only(("enabled", "retention"))
    retention = sec.duration("retention", UsageConfig.retention, positive=True)
    if retention < 86400:
        raise sec.fail("retention", "must be at least a day (1d), as counts are kept per day")
    return UsageConfig(enabled=sec.flag("enabled", UsageConfig.enabled), retention=retention)


def _limiter(sec: Section) -> LimiterConfig:
    sec.only(("storage", "strategy", "headers", "on_error", "timeout"))
    storage = sec.text("storage", LimiterConfig.storage)
    if "://" not in storage:
        raise sec.fail("storage", f"{storage!r} is not a limits storage URI such as 'memory://'")
    strategies = ("fixed-window", "moving-window", "sliding-window-counter")
    return LimiterConfig(
        storage=storage,
        strategy=sec.text("strategy", LimiterConfig.strategy, strategies),
        headers=sec.strings("headers", LimiterConfig.headers, choice(("x-ratelimit", "ietf"))),
        on_error=sec.text("on_error", LimiterConfig.on_error, ("closed", "open")),
        timeout=sec.duration("timeout", LimiterConfig.timeout, positive=True),
    )


def _limits(sec: Section) -> LimitsConfig:
    sec.only(("key", "org", "plans", "failed_auth"))
    plans_sec = sec.sub("plans")
    plans: dict[str, str] = {}
    for name, value in plans_sec.data.items():
        if not isinstance(name, str) or not name:
            raise plans_sec.fail(name, "a plan name must be a non-empty string")
        problem = limit_problem(value)
        if problem:
            raise plans_sec.fail(name, problem)
        plans[name] = value
    return LimitsConfig(
        key=sec.limit("key", LimitsConfig.key),
        org=sec.limit("org", None),
        plans=MappingProxyType(plans),
        failed_auth=sec.limit("failed_auth", None),
    )


def _key_types(sec: Section) -> Mapping[str, KeyTypeConfig]:
    sec.only(tuple(_DEFAULT_KEY_TYPES))
    types: dict[str, KeyTypeConfig] = {}
    for name, base in _DEFAULT_KEY_TYPES.items():
        kt = sec.sub(name)
        kt.only(("prefix", "alphabet", "length", "checksum", "max_scopes", "origin_bound"))
        prefix = kt.text("prefix", base.prefix)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", prefix):
            raise kt.fail("prefix", f"{prefix!r} must be 1 to 20 characters of A-Za-z0-9_-")
        made = KeyTypeConfig(
            name=name,
            prefix=prefix,
            alphabet=kt.text("alphabet", base.alphabet, tuple(_ALPHABETS)),
            length=kt.integer("length", base.length, minimum=1),
            checksum=kt.flag("checksum", base.checksum),
            max_scopes=kt.strings("max_scopes", base.max_scopes, scope_check(wildcards=True)),
            origin_bound=kt.flag("origin_bound", base.origin_bound),
        )
        if made.randomness_bits < 128:
            need = math.ceil(128 / math.log2(_ALPHABETS[made.alphabet]))
            raise kt.fail(
                "length",
                f"{made.length} {made.alphabet} characters carry "
                f"{made.randomness_bits:.0f} bits; at least {need} are needed for 128",
            )
        for other in types.values():
            if prefix.startswith(other.prefix) or other.prefix.startswith(prefix):
                raise kt.fail(
                    "prefix",
                    f"{prefix!r} and {other.name}'s {other.prefix!r} overlap; "
                    "a key's type could not be told from its prefix",
                )
        types[name] = made
    return MappingProxyType(types)


def _scopes(sec: Section) -> ScopesConfig:
    sec.only(("implies", "presets", "destructive", "known", "default"))
    any_scope, concrete = scope_check(wildcards=True), scope_check(wildcards=False)
    implies_sec = sec.sub("implies")
    implies: dict[str, tuple[str, ...]] = {}
    for key in implies_sec.data:
        problem = any_scope(key) if isinstance(key, str) else "a scope must be a string"
        if problem:
            raise implies_sec.fail(key, problem)
        implies[key] = implies_sec.strings(key, (), any_scope)
    cycle = find_cycle(implies)
    if cycle:  # almost always a typo; reported where the cycle closes
        raise implies_sec.fail(cycle[-2], f"cycle: {' -> '.join(cycle)}")
    destructive = sec.strings("destructive", (), concrete)
    policy = ScopePolicy(implies=implies, destructive=destructive)
    presets_sec = sec.sub("presets")
    presets = dict(_DEFAULT_PRESETS)  # built-ins stay unless redefined, as key_types do
    for name in presets_sec.data:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise presets_sec.fail(name, "a preset name must be a word of A-Za-z0-9_.-")
        presets[name] = presets_sec.strings(name, (), any_scope)
        for scope in presets[name]:
            if not is_pattern(scope) and policy.reaches_destructive(scope):
                raise presets_sec.fail(
                    name,
                    f"{scope!r} grants a destructive scope (or `*`), which a preset never does",
                )
    return ScopesConfig(
        implies=MappingProxyType(implies),
        presets=MappingProxyType(presets),
        destructive=destructive,
        known=sec.strings("known", (), concrete),
        default=sec.strings("default", ScopesConfig.default, any_scope),
    )


def _route(top: Section, index: int, item: object, line: int | None) -> RouteConfig:
    sec = Section(item, f"routes[{index}]", line, top.file)
    sec.only(("path", "methods", "public", "scopes", "scopes_any", "org_param", "limit", "embed"))
    if "path" not in sec:
        raise ConfigError("a route needs a path", file=top.file, line=sec.line)
    pattern = parse_pattern(sec.data["path"], line=sec.line_of("path"), source=top.file)
    methods: tuple[str, ...] | None = None
    if "methods" in sec:
        upper = choice(_METHODS)
        listed = sec.strings("methods", (), lambda m: upper(m.upper()))
        methods = tuple(dict.fromkeys(m.upper() for m in listed))
        if not methods:
            raise sec.fail("methods", "must list at least one method (omit it for all)")
    org_param = sec.data.get("org_param")
    if org_param is not None and (
        not isinstance(org_param, str) or org_param not in pattern.params
    ):
        raise sec.fail(
            "org_param",
            f"{org_param!r} is not a parameter of {pattern.text} "
            f"(parameters: {', '.join(pattern.params) or 'none'})",
        )
    route = RouteConfig(
        path=pattern.text,
        methods=methods,
        public=sec.flag("public", False),
        scopes=sec.strings("scopes", (), scope_check(wildcards=False)),
        scopes_any=sec.strings("scopes_any", (), scope_check(wildcards=False)),
        org_param=org_param,
        limit=sec.limit("limit", None),
        embed=sec.flag("embed", False),
        line=sec.line,
    )
    # Settings that a public route would silently ignore are refused, so no
    # one believes a route is protected or limited when it is not.
    if route.public:
        for key in ("scopes", "scopes_any", "org_param", "limit", "embed"):
            if key in sec and sec.data[key] not in (None, False, [], ()):
                raise sec.fail(key, "a public route takes no key, so it cannot have this")
    if route.embed and methods and not set(methods) <= {"GET", "HEAD"}:
        raise sec.fail("methods", "embed keys only ever GET or HEAD; an embed route must too")
    return route
