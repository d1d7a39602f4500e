"""The read-only commands: ``keys list``, ``keys usage`` and ``audit`` (SPEC section 8).

Usage::

    keystile keys list  [--org ORG] [--all] [--unused-since 90d] [--sort created|last-used]
                        [--json]
    keystile keys usage KEY_ID [--days 30] [--json]
    keystile audit      [--org ORG] [--key KEY_ID] [--days 7] [--limit 1000] [--json]

Decisions worth knowing:

- ``keys list`` shows active keys; ``--all`` adds the revoked and expired
  ones. Its STATUS column reads ``active``, ``stale``, ``revoked`` or
  ``expired``. *Stale* is an active key unused for 90 days, or never used
  and created more than 90 days ago (:func:`keystile.usage.is_stale`): one
  to review, and likely revoke. In JSON, ``status`` stays ``active`` for it
  and ``stale`` is true, so that a script testing for working keys still
  finds it.
- ``--unused-since D`` keeps the keys last used more than D ago, and the
  never-used keys created more than D ago (a key made yesterday is new, not
  forgotten). D is a number and a unit: ``30s``, ``15m``, ``12h``, ``90d``.
- ``--sort last-used`` puts the least recently used first, the never-used
  ones before all (oldest created first): the keys to look at come first.
  The default order is creation, oldest first.
- ``ROTATED FROM`` names the key that a key replaced (``keys rotate``).
- ``keys usage`` prints one row per UTC day, oldest first, zeros included,
  then a ``total`` row and the totals per route pattern. Its 4XX column
  leaves out 429, which has its own, so a row's columns add up to its
  TOTAL. ``--json`` prints the days as the HTTP API does
  (``{"date", "total", "byStatus", "byRoute"}``). Counts are written
  behind: a server process's last 30 seconds arrive with its next flush.
  A warning says when days show 0 because nothing was counted (``usage:
  {enabled: false}``) or kept (``--days`` beyond ``usage.retention``).
- ``audit`` prints the trail newest first: at most ``--limit`` events (1000
  by default), with a warning when there may be more. ``--key`` must name a
  key that exists (exit 1 otherwise, as a typo would otherwise print an
  empty trail).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO

from keystile import _cli_format as fmt
from keystile._cli_command import EXIT_OK, CommandError, engine, print_json, warn
from keystile.stores.base import KeyRecord
from keystile.usage import check_usage_days, unused_since

__all__ = ["add_commands", "add_key_commands", "parse_age"]

_AGE = re.compile(r"([1-9]\d{0,5})([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    """Read ``--unused-since``: a whole number and a unit (``30s``, ``15m``, ``12h``, ``90d``).

    A bare number is refused rather than read as seconds: ``--unused-since
    90`` is far likelier to mean days than a minute and a half.
    """
    found = _AGE.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a number and a unit, such as 30s, 15m, 12h or 90d"
        )
    return timedelta(**{_UNIT[found.group(2)]: int(found.group(1))})


def _last_used_order(record: KeyRecord) -> tuple[bool, datetime, datetime, str]:
    # Never used first (by creation), then the least recently used.
    used = record.last_used_at
    return (used is not None, used or record.created_at, record.created_at, record.id)


def _keys_list(args: argparse.Namespace, out: TextIO) -> int:
    with engine(args) as ks:
        now = ks.now()
        records = ks.keys.list_all(org=args.org) if args.all else ks.keys.list(org=args.org)
    if args.unused_since is not None:
        records = [r for r in records if unused_since(r, now - args.unused_since)]
    if args.sort == "last-used":
        records = sorted(records, key=_last_used_order)
    if args.json:
        print_json(out, [fmt.key_json(r, now=now) for r in records])
    elif records:
        out.write(fmt.key_table(records, now) + "\n")
    else:
        what = "keys" if args.all else "active keys"
        where = f" in org {args.org}" if args.org else ""
        since = f" unused for {_age_text(args.unused_since)}" if args.unused_since else ""
        out.write(f"no {what}{where}{since}\n")
    return EXIT_OK


def _keys_usage(args: argparse.Namespace, out: TextIO) -> int:
    check_usage_days(args.days)  # bad input fails before the store is opened
    with engine(args) as ks:
        record = ks.keys.get(args.key_id)
        days = ks.keys.usage(args.key_id, days=args.days)
        usage = ks.config.usage
    # A zero must not pass for "unused" where nothing was counted or kept.
    if not usage.enabled:
        warn("counting is off in this config (usage: {enabled: false}): recent days show 0")
    kept = int(usage.retention // 86400)
    if args.days > kept:
        warn(f"counts older than usage.retention ({kept} days) are deleted: earlier days show 0")
    if args.json:
        print_json(out, [day.as_json() for day in days])
        return EXIT_OK
    span = f"{days[0].date} to {days[-1].date}" if len(days) > 1 else str(days[0].date)
    out.write(
        f'Requests of key {record.id} "{record.name}" (org {record.org}) per UTC day, {span}\n\n'
    )
    out.write(fmt.usage_table(days) + "\n")
    return EXIT_OK


def _audit(args: argparse.Namespace, out: TextIO) -> int:
    check_usage_days(args.days)
    with engine(args) as ks:
        if not ks.config.audit.store:
            raise CommandError(
                f"{ks.config.source or 'the config'} keeps no audit trail in the store "
                "(audit.store is false)"
            )
        if args.key is not None:
            ks.keys.get(args.key)  # KeyNotFound: exit 1, naming the id
        events = ks.audit.events(org=args.org, key_id=args.key, days=args.days, limit=args.limit)
    if len(events) == args.limit:
        warn(f"showing the newest {args.limit} events; there may be more (raise --limit)")
    if args.json:
        print_json(out, [fmt.audit_json(event) for event in events])
    elif events:
        out.write(fmt.audit_table(events) + "\n")
    else:
        scope = "".join(
            [f" of key {args.key}" if args.key else "", f" in org {args.org}" if args.org else ""]
        )
        out.write(f"no audit events{scope} in the last {_plural(args.days, 'day')}\n")
    return EXIT_OK


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _age_text(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def add_key_commands(key_commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``keys list`` and ``keys usage`` on the ``keys`` subparsers."""
    listing = key_commands.add_parser(
        "list", parents=parents, help="active keys (--all: every key), never a secret"
    )
    listing.add_argument("--org", help="only this organization's keys")
    listing.add_argument("--all", action="store_true", help="revoked and expired keys too")
    listing.add_argument(
        "--unused-since",
        metavar="DURATION",
        type=parse_age,
        help="keys not used for DURATION (30s, 15m, 12h, 90d), never-used ones included",
    )
    listing.add_argument(
        "--sort",
        choices=("created", "last-used"),
        default="created",
        help="created (default, oldest first) or last-used (least recently used first)",
    )
    listing.set_defaults(func=_keys_list)

    usage = key_commands.add_parser(
        "usage", parents=parents, help="a key's requests per day, by status and route"
    )
    usage.add_argument("key_id", metavar="KEY_ID")
    usage.add_argument("--days", type=int, default=30, metavar="N", help="1 to 366 (default: 30)")
    usage.set_defaults(func=_keys_usage)


def add_commands(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``audit`` on the top-level subparsers."""
    audit = commands.add_parser(
        "audit", parents=parents, help="the audit trail, newest first, never a secret"
    )
    audit.add_argument("--org", help="only this organization's events")
    audit.add_argument("--key", metavar="KEY_ID", help="only this key's events")
    audit.add_argument("--days", type=int, default=7, metavar="N", help="1 to 366 (default: 7)")
    audit.add_argument(
        "--limit", type=_positive, default=1000, metavar="N", help="at most N events (1000)"
    )
    audit.set_defaults(func=_audit)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value
