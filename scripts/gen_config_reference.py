"""Write docs/reference/config.md from the config schema in keystile.config.

Names, types and defaults come from the dataclasses themselves; only the
YAML spelling of each field and a one-line description live here. The script
refuses to run when the two disagree (a field nobody described, a
description of a field that is gone, a top-level key ``load_config`` does not
accept), so the reference cannot drift from the code:

    python scripts/gen_config_reference.py           # rewrite the page
    python scripts/gen_config_reference.py --check   # exit 1 if it is stale

``tests/test_docs.py`` runs the check too.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keystile import config as schema

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "reference" / "config.md"


@dataclass(frozen=True)
class Entry:
    """One YAML key: the dataclass field it fills, and what it means."""

    key: str  # as written in YAML, relative to the section (``cache.ttl``)
    field: str  # the dataclass field (``cache_ttl``)
    text: str
    duration: bool = False  # stored as float seconds, written as 250ms / 2s / 1m


@dataclass(frozen=True)
class Section:
    title: str
    path: str  # where the section sits in the YAML (``limiter``, ``routes[]``)
    cls: type[Any]
    intro: str
    entries: tuple[Entry, ...]
    internal: tuple[str, ...] = ()  # fields that are not YAML keys, and why not
    defaults: Any = None  # the instance whose values are the defaults


def _d(key: str, field: str, text: str) -> Entry:
    return Entry(key, field, text, duration=True)


SECTIONS: tuple[Section, ...] = (
    Section(
        "Top level",
        "",
        schema.Config,
        "The file is one mapping. Every key is optional; an unknown key is an error "
        "(a typo in an auth config usually means a protection that is not on).",
        (
            Entry(
                "store",
                "store",
                "Where keys are kept: any SQLAlchemy URL "
                "(`sqlite:///keystile.db`, `postgresql+psycopg://…`, `mysql+pymysql://…`), "
                "or `memory://` to keep them in the process (tests).",
            ),
            Entry(
                "pepper_env",
                "pepper_env",
                "The environment variable holding the pepper, "
                "the HMAC key of the stored digests. The config never holds the pepper.",
            ),
            Entry(
                "credentials",
                "credentials",
                "Where a key is read from, in order: `bearer` "
                "(`Authorization: Bearer`), `x-api-key`, `query:NAME` (off by default: "
                "query strings end up in logs), `scheme:NAME` (`Authorization: NAME KEY`, "
                "read as Bearer is, for clients of another library such as "
                "djangorestframework-api-key's `scheme:Api-Key`).",
            ),
            _d(
                "cache.ttl",
                "cache_ttl",
                "How long a verified key is trusted without the "
                "store; revocation reaches other processes within it (`0` turns the cache off).",
            ),
            Entry("cache.size", "cache_size", "At most this many verified keys are cached."),
            _d(
                "cache.negative_ttl",
                "negative_cache_ttl",
                "How long an unknown key is "
                "remembered as unknown, so a flood of bad keys does not reach the store.",
            ),
            Entry(
                "cache.negative_size",
                "negative_cache_size",
                "At most this many unknown keys are remembered, apart from "
                "the known ones: a flood of random keys turns these over and never pushes a "
                "verified key out of `cache.size` (`0` turns off remembering unknown keys).",
            ),
            _d(
                "store_timeout",
                "store_timeout",
                "A store call over this is an outage: 503 "
                "with `Retry-After`, never a hang (enforced client-side).",
            ),
            Entry(
                "trusted_proxies",
                "trusted_proxies",
                "CIDRs whose `X-Forwarded-For` is "
                "believed for the client address (failed-auth limits, audit); "
                "`unix` for a proxy that connects over a Unix socket.",
            ),
            Entry("limiter", "limiter", "See [limiter](#limiter)."),
            Entry("limits", "limits", "See [limits](#limits)."),
            Entry("key_types", "key_types", "See [key_types](#key_types)."),
            Entry("scopes", "scopes", "See [scopes](#scopes)."),
            Entry("routes", "routes", "See [routes](#routes)."),
            Entry(
                "default",
                "default",
                "Unmatched requests: `deny` (403), `authenticated` (any valid key), or `public`.",
            ),
            Entry(
                "errors",
                "errors",
                "Refusal bodies: `json` (`{error, code, status}`) or "
                "`problem` (RFC 9457 `application/problem+json`).",
            ),
            Entry(
                "imported_keys",
                "imported_keys",
                "Accept keys imported from another system "
                "(`lookup_prefix.secret`, verified once by their own passlib hash, then "
                "upgraded). See [Migrating](../guides/migrating.md).",
            ),
            Entry("audit", "audit", "See [audit](#audit)."),
            Entry("usage", "usage", "See [usage](#usage)."),
        ),
        internal=("source", "route_table", "scope_policy", "trust_unix_socket"),
    ),
    Section(
        "limiter",
        "limiter",
        schema.LimiterConfig,
        "Where counters live and how they are counted; see [Rate limits](../rate-limits.md).",
        (
            Entry(
                "storage",
                "storage",
                "A `limits` storage URI: `memory://` (one process), "
                "`redis://`, `redis+cluster://`, `redis+sentinel://`, `valkey://`, "
                "`memcached://`.",
            ),
            Entry(
                "strategy",
                "strategy",
                "`fixed-window`, `moving-window` or "
                "`sliding-window-counter`; `keystile check` refuses one the storage lacks.",
            ),
            Entry(
                "headers",
                "headers",
                "`x-ratelimit` (`X-RateLimit-*`), and `ietf` for `RateLimit` / `RateLimit-Policy`.",
            ),
            Entry(
                "on_error",
                "on_error",
                "Storage down: `closed` answers 503; `open` lets the "
                "request through without rate-limit headers, and logs.",
            ),
            _d(
                "timeout",
                "timeout",
                "How long a limiter call waits for the storage to answer (a connect, "
                "a reply) before the storage counts as down. Waiting for a free "
                "connection or for the process's own threads or event loop is not counted.",
            ),
        ),
    ),
    Section(
        "limits",
        "limits",
        schema.LimitsConfig,
        "Limit strings in the `limits` syntax (`100/minute`, `10/second;1000/day`); "
        "`null` means no such limit. All that apply are checked, all or nothing.",
        (
            Entry("key", "key", "Every key; a key's own `rate_limit` replaces it."),
            Entry("org", "org", "Shared by all keys of one organization."),
            Entry("plans", "plans", "Plan name to limit, applied by the key's `plan`."),
            Entry(
                "failed_auth",
                "failed_auth",
                "Per client address, counting 401s; once spent, "
                "429 before the credential is even read.",
            ),
        ),
    ),
    Section(
        "key_types",
        "key_types.<type>",
        schema.KeyTypeConfig,
        "One entry per type (`secret`, `publishable`, `embed`); a type left out keeps its "
        "defaults, shown per type below. Keys carry at least 128 random bits.",
        (
            Entry(
                "prefix",
                "prefix",
                "1 to 20 characters of `A-Za-z0-9_-`; prefixes of different types may not overlap.",
            ),
            Entry("alphabet", "alphabet", "`base62` or `hex`, for the random part."),
            Entry("length", "length", "Characters in the random part."),
            Entry(
                "checksum",
                "checksum",
                "Append 6 base62 characters of CRC32, so a mistyped "
                "key is refused without a lookup.",
            ),
            Entry(
                "max_scopes",
                "max_scopes",
                "A ceiling on what such a key may grant, `implies` included "
                "(see [ceilings](../guides/scopes.md#ceilings-what-a-key-type-may-ever-hold)), "
                "checked on every create and update; empty means none.",
            ),
            Entry(
                "origin_bound",
                "origin_bound",
                "Such keys need `allowed_origins` and work "
                "only from them (`Origin`, else `Referer`).",
            ),
        ),
        internal=("name",),
    ),
    Section(
        "scopes",
        "scopes",
        schema.ScopesConfig,
        "The scope algebra; see the [scopes cookbook](../guides/scopes.md).",
        (
            Entry(
                "implies",
                "implies",
                "A granted scope also grants these "
                '(`admin: ["*"]`, `"events:write": ["events:read"]`).',
            ),
            Entry(
                "presets",
                "presets",
                "Named scope lists for `keys create --preset`; a "
                "preset never grants a destructive scope. Built-ins stay unless redefined.",
            ),
            Entry(
                "destructive",
                "destructive",
                "Granted only by exact name or `*`, never by `resource:*`, `*:action` or a preset.",
            ),
            Entry(
                "known",
                "known",
                "More scopes the management API may grant (those the "
                "config names elsewhere are known already).",
            ),
            Entry(
                "default",
                "default",
                "Scopes of a key made over the management API when the request names none.",
            ),
        ),
    ),
    Section(
        "routes",
        "routes[]",
        schema.RouteConfig,
        "A list of rules. `{name}` is one path segment, `{name:path}` the rest. The most "
        "specific rule wins, never the first listed: more literal segments, then no "
        "`{name:path}`, then a method list over none, then the leftmost literal (see "
        "[which rule governs a request](../guides/scopes.md#which-rule-governs-a-request)); "
        "a tie is an error.",
        (
            Entry("path", "path", "The pattern (required)."),
            Entry(
                "methods",
                "methods",
                "Methods the rule covers; omitted: all. HEAD is checked as GET.",
            ),
            Entry("public", "public", "No key needed and nothing counted; takes no other setting."),
            Entry("scopes", "scopes", "The key needs all of these."),
            Entry("scopes_any", "scopes_any", "The key needs one of these."),
            Entry("org_param", "org_param", "A path parameter the key's org must equal (403)."),
            Entry("limit", "limit", "An extra limit for this route, per key."),
            Entry("embed", "embed", "Embed keys only, GET/HEAD, within their restrictions."),
        ),
        internal=("line",),
    ),
    Section(
        "audit",
        "audit",
        schema.AuditConfig,
        "Where audit events go (callbacks are added in Python: `ks.audit.subscribe`).",
        (
            Entry("log", "log", "Log each event (never a secret)."),
            Entry(
                "store",
                "store",
                "Keep events in the key store (its audit table; memory:// too), "
                "where `ks.audit.events` and the management API read them back.",
            ),
            Entry(
                "webhook.url",
                "webhook_url",
                "POST each event here, signed with HMAC-SHA256, off the request path.",
            ),
            Entry(
                "webhook.secret_env",
                "webhook_secret_env",
                "The environment variable holding the webhook's signing secret.",
            ),
            _d("webhook.timeout", "webhook_timeout", "Per delivery attempt."),
            Entry("webhook.retries", "webhook_retries", "Attempts after the first."),
            Entry(
                "queue_size",
                "queue_size",
                "Events waiting for the store and the webhook; when it is "
                "full, new events are dropped and counted (and logged).",
            ),
        ),
    ),
    Section(
        "usage",
        "usage",
        schema.UsageConfig,
        "Per-key request counts by day, route and status, kept in the process and "
        "written behind with `last_used_at`; see [Usage and audit](../usage.md).",
        (
            Entry("enabled", "enabled", "Count requests per key (`false` turns counting off)."),
            _d(
                "retention",
                "retention",
                "Rows older than this are deleted at each flush; at least `1d`.",
            ),
        ),
    ),
)

# How annotations (strings, under `from __future__ import annotations`) read in YAML.
TYPES = {
    "str": "string",
    "str | None": "string or null",
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "tuple[str, ...]": "list of strings",
    "tuple[str, ...] | None": "list of strings",
    "tuple[Network, ...]": "list of CIDRs",
    "Mapping[str, str]": "mapping: name → limit",
    "Mapping[str, tuple[str, ...]]": "mapping: name → list of scopes",
    "LimiterConfig": "mapping",
    "UsageConfig": "mapping",
    "LimitsConfig": "mapping",
    "ScopesConfig": "mapping",
    "AuditConfig": "mapping",
    "Mapping[str, KeyTypeConfig]": "mapping: type → settings",
    "tuple[RouteConfig, ...]": "list of rules",
}


class Drift(Exception):
    """The schema and the descriptions here disagree."""


def check_coverage() -> None:
    """Every init field described or declared internal, and nothing more."""
    problems: list[str] = []
    for section in SECTIONS:
        fields = {f.name for f in dataclasses.fields(section.cls)}
        described = [e.field for e in section.entries]
        for name in sorted(fields - set(described) - set(section.internal)):
            problems.append(f"{section.cls.__name__}.{name} has no description")
        for name in sorted((set(described) | set(section.internal)) - fields):
            problems.append(f"{section.cls.__name__}.{name} is described but no longer exists")
        for entry in section.entries:
            annotation = _field(section.cls, entry.field).type
            if str(annotation) not in TYPES:
                problems.append(f"{section.cls.__name__}.{entry.field}: unknown type {annotation}")
    top = {e.key.split(".")[0] for e in SECTIONS[0].entries}
    if top != set(schema._TOP_KEYS):
        problems.append(
            f"top-level keys differ from load_config's: {sorted(top ^ set(schema._TOP_KEYS))}"
        )
    if problems:
        raise Drift("; ".join(problems))


def _field(cls: type[Any], name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _duration(seconds: float) -> str:
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _yaml(value: Any, duration: bool = False) -> str:
    """A default as it would be written in the YAML file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if duration:
        return _duration(float(value))
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return f'"{value}"' if any(c in value for c in ":*{}[],#") or not value else value
    if isinstance(value, Mapping):
        if any(dataclasses.is_dataclass(v) for v in value.values()):
            return ", ".join(value)
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return str(value)


def _default(section: Section, entry: Entry) -> str:
    field = _field(section.cls, entry.field)
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value) or (
        section.cls is schema.Config and entry.field == "routes"
    ):
        return "—"
    return "`" + _yaml(value, entry.duration) + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _key_type_defaults() -> list[str]:
    types = schema.Config().key_types
    names = list(types)
    section = next(s for s in SECTIONS if s.cls is schema.KeyTypeConfig)
    lines = ["| key | type | " + " | ".join(f"`{n}`" for n in names) + " | description |"]
    lines.append("|---|---|" + "---|" * len(names) + "---|")
    for entry in section.entries:
        kind = TYPES[str(_field(section.cls, entry.field).type)]
        values = " | ".join(f"`{_yaml(getattr(types[n], entry.field))}`" for n in names)
        lines.append(f"| `{entry.key}` | {kind} | {values} | {_cell(entry.text)} |")
    return lines


def render() -> str:
    """The whole page, as it must be on disk."""
    check_coverage()
    out = [
        "<!-- Generated by scripts/gen_config_reference.py from keystile.config: do not edit. -->",
        "",
        "# Configuration reference",
        "",
        "Every key of `keystile.yaml`, with its type and default, generated from the "
        "dataclasses in `keystile.config` (`load_config` builds them). Durations are "
        "written `250ms`, `2s`, `1m`, `24h`, `7d` or as a number of seconds; limits as in "
        "the [`limits`](https://limits.readthedocs.io) library. `keystile check` validates "
        "a file and points at the line of the first mistake.",
    ]
    for section in SECTIONS:
        out += ["", f"## {section.title}", "", section.intro, ""]
        if section.cls is schema.KeyTypeConfig:
            out += _key_type_defaults()
            continue
        prefix = section.path + "." if section.path else ""
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for entry in section.entries:
            kind = TYPES[str(_field(section.cls, entry.field).type)]
            if entry.duration:
                kind = "duration"
            out.append(
                f"| `{prefix}{entry.key}` | {kind} | {_default(section, entry)} "
                f"| {_cell(entry.text)} |"
            )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str]) -> int:
    try:
        text = render()
    except Drift as exc:
        sys.stderr.write(f"gen_config_reference: {exc}\n")
        return 2
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{OUTPUT} is stale: run python scripts/gen_config_reference.py\n")
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
