"""``keystile check`` warnings and what ``keystile explain`` adds to the bare rule.

``load_config`` refuses what is wrong; ``check`` also reports what is legal
but almost always a mistake:

- an empty file (no settings at all) fails, exit 1: every request would be
  refused by ``default: deny`` and nothing says why;
- an ``implies`` target that no route, preset, ``known`` or ``destructive``
  list names is a warning with ``file:line`` (``events:raed`` granted by
  ``admin`` passes silently otherwise).

``explain`` prints, beside the governing rule, every other rule that matches
the request and the precedence rule (docs/guides/scopes.md, "Which rule
governs a request") that put the winner first; with ``--key`` or
``--scopes`` it answers what those scopes would get.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from keystile._cli_command import EXIT_FAILED, CommandError
from keystile._config_reader import _LineDict, read_yaml
from keystile.config import Config, RouteConfig
from keystile.routes import LITERAL, PARAM, PATH, PathPattern, RouteTable, parse_pattern
from keystile.sansio import normalize_path
from keystile.scopes import is_pattern

__all__ = ["check_warnings", "other_candidates", "verdict"]

_KIND = {LITERAL: "a literal", PARAM: "{name}", PATH: "{name:path}"}


def check_warnings(path: Path, config: Config) -> list[str]:
    """``file:line: warning`` lines for ``check``; raise (exit 1) on an empty file."""
    data = read_yaml(str(path))
    if not data:
        raise CommandError(
            f"{path} is empty: with no routes every request is refused (default: deny); "
            "see docs/quickstart.md for a first config",
            EXIT_FAILED,
        )
    warnings = []
    if not config.routes:
        warnings.append(f"{path}: no routes: every request gets default: {config.default}")
    sc = config.scopes
    named = {*sc.known, *sc.destructive, *sc.default, *sc.implies}
    named |= {s for values in sc.presets.values() for s in values}
    named |= {s for kt in config.key_types.values() for s in kt.max_scopes}
    named |= {s for r in config.routes for s in (*r.scopes, *r.scopes_any)}
    implies = data.get("scopes", {}).get("implies") if isinstance(data, dict) else None
    lines = implies.key_lines if isinstance(implies, _LineDict) else {}
    for scope, targets in sc.implies.items():
        for target in targets:
            if not is_pattern(target) and target not in named:
                where = f"{path}:{lines[scope]}" if scope in lines else str(path)
                warnings.append(
                    f"{where}: scopes.implies.{scope}: {target!r} is named by no route, "
                    "preset or known list (a typo?)"
                )
    return warnings


def other_candidates(config: Config, method: str, path: str, winner: RouteConfig) -> list[str]:
    """A line per other rule that matches the request, saying why ``winner`` governs."""
    lines = []
    for rule in config.routes:
        if rule is winner or RouteTable([rule]).match(method, path) is None:
            continue
        why = _why(_pattern(winner), winner.methods, _pattern(rule), rule.methods)
        lines.append(f"also matches: {rule.path} (line {rule.line or '?'}); loses by {why}")
    return lines


def _pattern(rule: RouteConfig) -> PathPattern:
    return parse_pattern(rule.path)


def _why(
    a: PathPattern,
    a_methods: Sequence[str] | None,
    b: PathPattern,
    b_methods: Sequence[str] | None,
) -> str:
    """Which precedence rule (1 to 4) ranks ``a`` over ``b``, in words."""
    if a.literal_count != b.literal_count:
        return f"rule 1: {a.literal_count} literal segments against {b.literal_count}"
    if a.has_path != b.has_path:
        return "rule 2: a rule without {name:path} beats one with it"
    if (a_methods is None) != (b_methods is None):
        return "rule 3: a rule with a methods list beats one without"
    for i, (x, y) in enumerate(zip(a.segments, b.segments, strict=False), start=1):
        if x.kind != y.kind:
            return f"rule 4: segment {i} is {_KIND[x.kind]} against {_KIND[y.kind]}"
    return "rule 4"


def verdict(
    config: Config, method: str, target: str, scopes: Sequence[str], org: str | None
) -> str:
    """What a key holding ``scopes`` (of ``org``, if known) would get, as far as the config tells.

    Origin, IP allowlist, expiry and limits need a live request; the answer
    says so rather than guess.
    """
    path = normalize_path(target.encode("utf-8"), percent_encoded=True)
    if path is None:
        return "refused: 400 BAD_REQUEST (malformed path)"
    match = config.route_table.match("GET" if method.upper() == "HEAD" else method.upper(), path)
    if match is None:
        if config.default == "deny":
            return "refused: 403 FORBIDDEN (no rule matches; default: deny)"
        return f"admitted (no rule matches; default: {config.default})"
    rule = match.rule
    if rule.public:
        return "admitted (public route; the key is not even read)"
    policy = config.scope_policy
    missing = policy.missing(policy.expand(scopes), rule.scopes, rule.scopes_any)
    if missing:
        return f"refused: 403 FORBIDDEN (scope missing: {', '.join(missing)})"
    if rule.org_param:
        wanted = match.params.get(rule.org_param)
        if org is None:
            return f"admitted if the key's org is {wanted} (org_param {rule.org_param})"
        if org != wanted:
            return f"refused: 403 FORBIDDEN (the key's org {org} is not {wanted})"
    return "admitted (then rate limits, origin and IP rules apply)"
