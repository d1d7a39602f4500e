"""``keystile limits``: org limit overrides from the command line (SPEC section 10).

    keystile limits override --org acme 100000/day
    keystile limits clear --org acme
    keystile limits list [--json]

Each goes through ``ks.limits`` (:mod:`keystile.overrides`), so the change is
kept in the key store, audited, and reaches running processes as a
revocation does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

from keystile._cli_command import EXIT_FAILED, EXIT_OK, CommandError, engine, print_json
from keystile._cli_format import table

__all__ = ["add_commands"]


def add_commands(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``limits override|clear|list`` on the top-level subparsers."""
    limits = commands.add_parser(
        "limits", parents=parents, help="org limit overrides, without a deploy"
    )
    actions = limits.add_subparsers(dest="limits_command", metavar="ACTION", required=True)
    override = actions.add_parser(
        "override", parents=parents, help="replace limits.org for one org"
    )
    override.add_argument("--org", required=True, help="the organization")
    override.add_argument("limit", metavar="LIMIT", help="a limit such as 100000/day")
    override.set_defaults(func=_override)
    clear = actions.add_parser("clear", parents=parents, help="back to limits.org for one org")
    clear.add_argument("--org", required=True, help="the organization")
    clear.set_defaults(func=_clear)
    listing = actions.add_parser("list", parents=parents, help="every override")
    listing.set_defaults(func=_list)


def _override(args: argparse.Namespace, out: TextIO) -> int:
    with engine(args) as ks:
        ks.limits.set_override(org=args.org, limit=args.limit)
        default = ks.config.limits.org or "none"
    if args.json:
        print_json(out, {"org": args.org, "limit": args.limit.strip()})
    else:
        out.write(f"Org {args.org} now has the limit {args.limit.strip()} (config: {default})\n")
    return EXIT_OK


def _clear(args: argparse.Namespace, out: TextIO) -> int:
    with engine(args) as ks:
        had = ks.limits.clear_override(org=args.org)
        default = ks.config.limits.org or "none"
    if not had:
        raise CommandError(f"org {args.org} has no override", EXIT_FAILED)
    if args.json:
        print_json(out, {"org": args.org, "limit": None})
    else:
        out.write(f"Org {args.org} is back to the config's limit ({default})\n")
    return EXIT_OK


def _list(args: argparse.Namespace, out: TextIO) -> int:
    with engine(args) as ks:
        found = ks.limits.overrides()
        default = ks.config.limits.org or "none"
    if args.json:
        print_json(out, {"overrides": found, "config": ks.config.limits.org})
        return EXIT_OK
    if not found:
        out.write(f"No overrides: every org has the config's limit ({default})\n")
        return EXIT_OK
    out.write(table(["ORG", "LIMIT"], [[org, limit] for org, limit in found.items()]) + "\n")
    out.write(f"Every other org: {default}\n")
    return EXIT_OK
