"""``keystile check`` and ``keystile explain``: the config read as an operator needs it.

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

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from keystile import _cli_format as fmt
from keystile._cli_command import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    config_path,
    engine,
    print_json,
)
from keystile._config_reader import _LineDict, read_yaml
from keystile.config import Config, RouteConfig, load_config
from keystile.pipeline import _embed_refusal as embed_refusal
from keystile.routes import LITERAL, PARAM, PATH, PathPattern, RouteTable, parse_pattern
from keystile.sansio import normalize_path
from keystile.scopes import is_pattern
from keystile.stores.base import KeyRecord

__all__ = ["add_commands", "check_warnings", "other_candidates", "verdict"]

_KIND = {LITERAL: "a literal", PARAM: "{name}", PATH: "{name:path}"}


def add_commands(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``check`` and ``explain`` on the top-level subparsers."""
    check = commands.add_parser("check", parents=parents, help="validate the config")
    check.set_defaults(func=_check)
    explain = commands.add_parser(
        "explain", parents=parents, help="the rule, scopes and limits for a request"
    )
    explain.add_argument("method", metavar="METHOD")
    explain.add_argument("path", metavar="PATH")
    explain.add_argument("--key", metavar="KEY_ID", help="what this key would get")
    explain.add_argument("--scopes", metavar="a,b", help="what a key with these scopes would get")
    explain.set_defaults(func=_explain)


def _check(args: argparse.Namespace, out: TextIO) -> int:
    path = config_path(args)
    config = load_config(path)
    count = len(config.routes)
    warnings = check_warnings(path, config)
    for warning in warnings:
        sys.stderr.write(f"keystile: warning: {warning}\n")
    if args.json:
        print_json(out, {"ok": True, "config": str(path), "routes": count, "warnings": warnings})
        return EXIT_OK
    out.write(f"ok: {path} ({count} route{'' if count == 1 else 's'})\n")
    return EXIT_OK


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    if not re.fullmatch(r"[A-Za-z]{1,20}", args.method):
        raise CommandError(f"{args.method!r} is not an HTTP method such as GET", EXIT_USAGE)
    if not args.path.startswith("/"):
        raise CommandError(f"PATH must start with '/': {args.path!r}", EXIT_USAGE)
    config = load_config(config_path(args))
    if args.key and args.scopes is not None:
        raise CommandError("give --key or --scopes, not both", EXIT_USAGE)
    answer = None
    if args.key:
        with engine(args) as ks:
            record = ks.keys.get(args.key)
        now = datetime.now(timezone.utc)
        if not record.is_active(now):
            answer = f"refused: 401 UNAUTHORIZED (key {record.id} is {record.status(now)})"
        else:
            answer = verdict(config, args.method, args.path, record.scopes, record)
    elif args.scopes is not None:
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        answer = verdict(config, args.method, args.path, scopes)
    if args.json:
        data = fmt.explain_data(config, args.method, args.path)
        if answer is not None:
            data["verdict"] = answer
        print_json(out, data)
        return EXIT_OK
    out.write(fmt.explain(config, args.method, args.path) + "\n")
    path = normalize_path(args.path.encode("utf-8"), percent_encoded=True)
    method = "GET" if args.method.upper() == "HEAD" else args.method.upper()
    match = None if path is None else config.route_table.match(method, path)
    if match is not None and path is not None:
        for line in other_candidates(config, method, path, match.rule):
            out.write(line + "\n")
    if answer is not None:
        out.write(f"verdict:   {answer}\n")
    return EXIT_OK


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
    config: Config, method: str, target: str, scopes: Sequence[str], key: KeyRecord | None = None
) -> str:
    """What a key holding ``scopes`` (``key``, if given) would get, as far as the config tells.

    The pipeline's order (SPEC section 4): the route, then the key's type
    rules (embed keys), its org against ``org_param``, its scopes (clamped
    to its type's ``max_scopes``). Origin, IP allowlist, expiry and limits
    need a live request; the answer says so rather than guess.
    """
    method = "GET" if method.upper() == "HEAD" else method.upper()
    path = normalize_path(target.encode("utf-8"), percent_encoded=True)
    if path is None:
        return "refused: 400 BAD_REQUEST (malformed path)"
    match = config.route_table.match(method, path)
    if match is None and config.default != "authenticated":
        if config.default == "deny":
            return "refused: 403 FORBIDDEN (no rule matches; default: deny)"
        return "admitted (no rule matches; default: public)"
    if match is not None and match.rule.public:
        return "admitted (public route; the key is not even read)"
    if key is not None and key.type == "embed":
        refusal = embed_refusal(key, match, method)
        if refusal is not None:
            return f"refused: {refusal.status} {refusal.code} ({refusal.message})"
    if match is None:
        return "admitted (no rule matches; default: authenticated)"
    rule = match.rule
    if rule.org_param and key is not None and match.params.get(rule.org_param) != key.org:
        wanted = match.params.get(rule.org_param)
        return f"refused: 403 FORBIDDEN (the key's org {key.org} is not {wanted})"
    policy = config.scope_policy
    grants = policy.expand(scopes)
    key_type = config.key_types.get(key.type) if key is not None else None
    if key_type is not None and key_type.max_scopes:
        grants = policy.clamp(grants, key_type.max_scopes)
    missing = policy.missing(grants, rule.scopes, rule.scopes_any)
    if missing:
        return f"refused: 403 INSUFFICIENT_SCOPE (scope missing: {', '.join(missing)})"
    if rule.org_param and key is None:
        wanted = match.params.get(rule.org_param)
        return f"admitted if the key's org is {wanted} (org_param {rule.org_param})"
    return "admitted (then rate limits, origin and IP rules apply)"
