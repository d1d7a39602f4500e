"""What ``keystile`` prints: records as JSON objects and tables, and ``explain``.

Kept apart from :mod:`keystile.cli` (which parses arguments and runs
commands) so that the output formats can be read, and changed, in one place.
Nothing here ever sees a secret except :func:`key_json`, which adds the one it
is handed (``keys create`` and ``keys rotate``); digests and imported hashes
are never printed.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from keystile._redact import redact_url
from keystile.audit import AuditEvent
from keystile.config import Config, RouteConfig
from keystile.routes import RouteMatch
from keystile.sansio import normalize_path
from keystile.stores.base import KeyRecord
from keystile.usage import UsageDay, is_stale

__all__ = [
    "audit_json",
    "audit_table",
    "explain",
    "iso",
    "key_json",
    "key_status",
    "key_table",
    "safe_url",
    "table",
    "usage_table",
]


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (``2026-03-29T10:30:00Z``), or None."""
    if when is None:
        return None
    if when.tzinfo is None:  # stores hand back UTC; a naive value is UTC too
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_json(
    record: KeyRecord, secret: str | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """A key as a JSON object: every public field, the secret only when given.

    ``status`` is ``active``, ``revoked`` or ``expired`` at ``now`` (default:
    the current time); ``stale`` marks an active key unused for 90 days.
    """
    now = now or datetime.now(timezone.utc)
    data: dict[str, Any] = {"id": record.id}
    if secret is not None:
        data["secret"] = secret
    data.update(
        name=record.name,
        prefix=record.prefix,
        last4=record.last4,
        scopes=list(record.scopes),
        org=record.org,
        user=record.owner,
        kind=record.kind,
        type=record.type,
        plan=record.plan,
        rate_limit=record.rate_limit,
        allowed_origins=list(record.allowed_origins),
        restrictions={k: list(v) for k, v in record.restrictions.items()},
        metadata=_thaw(record.metadata),
        created_by=record.created_by,
        created_at=iso(record.created_at),
        expires_at=iso(record.expires_at),
        last_used_at=iso(record.last_used_at),
        revoked_at=iso(record.revoked_at),
        rotated_from=record.rotated_from,
        status=record.status(now),
        stale=is_stale(record, now),
    )
    return data


def _thaw(value: Any) -> Any:
    """Frozen metadata (mapping proxies, tuples) back into JSON types."""
    if isinstance(value, str) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Container[int] = ()
) -> str:
    """Aligned columns two spaces apart; the columns in ``right`` (numbers) align right.

    Control characters in a cell print as ``?``: a name or reason read from
    the store must not move the cursor or recolour the terminal.
    """
    grid = [list(header)] + [[_CONTROL.sub("?", cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in grid
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_COLUMNS = (
    "ID", "NAME", "STATUS", "PREFIX", "ORG", "KIND", "SCOPES", "EXPIRES", "LAST USED",
    "ROTATED FROM",
)  # fmt: skip


def key_status(record: KeyRecord, now: datetime) -> str:
    """The STATUS cell: ``active``, ``stale`` (active, unused 90 days), ``revoked``, ``expired``."""
    return "stale" if is_stale(record, now) else record.status(now)


def key_table(records: Sequence[KeyRecord], now: datetime) -> str:
    """The aligned table of ``keys list`` (never a secret: only the display prefix)."""
    return table(
        _KEY_COLUMNS,
        (
            (
                r.id,
                r.name,
                key_status(r, now),
                r.prefix,
                r.org,
                r.kind if r.type == "secret" else f"{r.kind}/{r.type}",
                ",".join(r.scopes) or "-",
                iso(r.expires_at) or "never",
                iso(r.last_used_at) or "never",
                r.rotated_from or "-",
            )
            for r in records
        ),
    )


# -- usage and the audit trail -----------------------------------------------------

_USAGE_COLUMNS = ("DATE", "TOTAL", "2XX", "3XX", "4XX", "429", "5XX")


def _by_class(by_status: Mapping[int, int]) -> list[int]:
    """Counts per status class; 4XX leaves 429 to its own column, so a row adds up to TOTAL."""
    counts = dict.fromkeys(_USAGE_COLUMNS[2:], 0)
    for status, n in by_status.items():
        name = "429" if status == 429 else f"{status // 100}XX"
        if name in counts:  # a final status is 200 to 599; anything else has no column
            counts[name] += n
    return list(counts.values())


def usage_table(days: Sequence[UsageDay]) -> str:
    """One row a UTC day, oldest first, then a ``total`` row and the totals by route."""
    counts = [[day.total, *_by_class(day.by_status)] for day in days]
    totals = [sum(column) for column in zip(*counts, strict=True)]
    labels = [day.date.isoformat() for day in days] + ["total"]
    text = table(
        _USAGE_COLUMNS,
        [[label, *map(str, row)] for label, row in zip(labels, [*counts, totals], strict=True)],
        right=range(1, len(_USAGE_COLUMNS)),
    )
    routes: dict[str, int] = {}
    for day in days:
        for route, n in day.by_route.items():
            routes[route] = routes.get(route, 0) + n
    if routes:
        ranked = sorted(routes.items(), key=lambda item: (-item[1], item[0]))
        text += "\n\n" + table(("ROUTE", "TOTAL"), ((r, str(n)) for r, n in ranked), right=(1,))
    return text


_AUDIT_COLUMNS = ("TIME", "EVENT", "KEY", "ORG", "STATUS", "CLIENT", "REASON")


def audit_json(event: AuditEvent) -> dict[str, Any]:
    """An event as ``audit --json`` prints it: the webhook's fields, times to the second."""
    data = event.as_dict()
    data["time"] = iso(event.time)
    return data


def audit_table(events: Sequence[AuditEvent]) -> str:
    """The audit trail as ``keystile audit`` prints it, newest first; never a secret."""
    return table(
        _AUDIT_COLUMNS,
        (
            (
                iso(e.time) or "-",
                e.event,
                e.key_id or "-",
                e.org or "-",
                str(e.status) if e.status is not None else "-",
                e.client or "-",
                e.reason or "-",
            )
            for e in events
        ),
    )


def safe_url(url: str) -> str:
    """A store URL fit to print: its password (and query) masked."""
    return redact_url(url)


# -- explain ---------------------------------------------------------------------


def explain(config: Config, method: str, target: str) -> str:
    """What the middleware would require of ``METHOD PATH``, as plain text.

    The path goes through the same normalisation as a request (a path the
    pipeline refuses with 400 is reported as such); the query string, if
    any, is ignored as the router ignores it.
    """
    method = method.upper()
    lines = [f"{method} {target}"]
    path = normalize_path(target.encode("utf-8"), percent_encoded=True)
    if path is None:
        lines.append(
            "refused with 400 before matching: malformed path "
            "(dot-segments, '//', encoded slash or control characters)"
        )
        return "\n".join(lines)
    # HEAD is checked as GET, as the pipeline does.
    match = config.route_table.match("GET" if method == "HEAD" else method, path)
    if match is None:
        lines.append(f"no rule matches; default: {config.default}")
        lines.append(f"  {_DEFAULTS[config.default]}")
        if config.default == "authenticated":
            lines += _limit_lines(config, None)
        return "\n".join(lines)
    lines += _rule_lines(config, match)
    return "\n".join(lines)


def explain_data(config: Config, method: str, target: str) -> dict[str, Any]:
    """The same answer as :func:`explain`, as JSON-ready data (``explain --json``)."""
    method = method.upper()
    path = normalize_path(target.encode("utf-8"), percent_encoded=True)
    data: dict[str, Any] = {"method": method, "path": target, "refused": None, "rule": None}
    if path is None:
        data["refused"] = {"status": 400, "code": "BAD_REQUEST", "reason": "malformed path"}
        return data
    match = config.route_table.match("GET" if method == "HEAD" else method, path)
    limits = config.limits
    data["limits"] = {
        "route": None,
        "key": limits.key,
        "org": limits.org,
        "plans": dict(limits.plans),
        "failed_auth": limits.failed_auth,
    }
    if match is None:
        data["default"] = config.default
        if config.default == "deny":
            data["refused"] = {"status": 403, "code": "FORBIDDEN", "reason": "no rule matches"}
        return data
    rule = match.rule
    data["limits"]["route"] = rule.limit
    data["rule"] = {
        "path": rule.path,
        "methods": list(rule.methods) if rule.methods else None,
        "line": rule.line,
        "public": rule.public,
        "scopes": list(rule.scopes),
        "scopes_any": list(rule.scopes_any),
        "org_param": rule.org_param,
        "embed": rule.embed,
        "params": dict(match.params),
    }
    return data


_DEFAULTS = {
    "deny": "refused with 403 FORBIDDEN, whatever key is sent",
    "authenticated": "any valid key passes; no scope is required",
    "public": "passes without a key; nothing is counted",
}


def _rule_lines(config: Config, match: RouteMatch) -> list[str]:
    rule = match.rule
    where = f"{config.source or '<config>'}:{rule.line}" if rule.line else config.source
    methods = ", ".join(rule.methods) if rule.methods else "any method"
    lines = [f"rule:      {rule.path} [{methods}]" + (f" ({where})" if where else "")]
    if match.params:
        lines.append("params:    " + ", ".join(f"{k}={v}" for k, v in match.params.items()))
    lines.append(f"public:    {'yes' if rule.public else 'no'}")
    if rule.public:
        lines.append("  no key needed; nothing is counted")
        return lines
    lines.append(f"scopes:    {_scopes_text(rule)}")
    if rule.org_param:
        value = match.params.get(rule.org_param, "{" + rule.org_param + "}")
        lines.append(f"org_param: {rule.org_param} (the key's org must be {value})")
    else:
        lines.append("org_param: -")
    if rule.embed:
        lines.append("embed:     yes (embed keys only, GET/HEAD, within their restrictions)")
    lines += _limit_lines(config, rule)
    return lines


def _scopes_text(rule: RouteConfig) -> str:
    parts = []
    if rule.scopes:
        parts.append("all of: " + ", ".join(rule.scopes))
    if rule.scopes_any:
        parts.append("any of: " + ", ".join(rule.scopes_any))
    return "; ".join(parts) or "none (any valid key)"


def _limit_lines(config: Config, rule: RouteConfig | None) -> list[str]:
    limits = config.limits
    plans = ", ".join(f"{name}={value}" for name, value in sorted(limits.plans.items()))
    rows = [
        ("route", f"{rule.limit} per key" if rule is not None and rule.limit else "-"),
        (
            "key default",
            f"{limits.key} (a key's own rate_limit replaces it)"
            if limits.key
            else "- (only a key's own rate_limit)",
        ),
        ("org", f"{limits.org} shared by the org's keys" if limits.org else "-"),
        ("plans", f"{plans} (by the key's plan)" if plans else "-"),
        (
            "failed_auth",
            f"{limits.failed_auth} per client address, counting 401s"
            if limits.failed_auth
            else "-",
        ),
    ]
    return ["limits:"] + [f"  {name + ':':<13}{text}" for name, text in rows]
