"""The ``keystile`` command (also ``python -m keystile``).

Usage::

    keystile [--config PATH] [--verbose] keys create --name NAME [--scope S ...] [--preset P]
                                         [--org ORG] [--user U] [--expires-in-days N]
                                         [--rate-limit 100/hour] [--plan P]
                                         [--type secret|publishable|embed]
                                         [--allowed-origin HOST ...]
                                         [--allow-unknown-scope] [--json]
    keystile keys list [--org ORG] [--all] [--unused-since 90d] [--sort last-used] [--json]
    keystile keys usage KEY_ID [--days 30] [--json]
    keystile keys revoke KEY_ID [--json]
    keystile keys update KEY_ID [--name N] [--scope S ...] [--rate-limit R|none]
                                [--plan P|none] [--expires-in-days N]
                                [--metadata KEY=VALUE ...] [--allow-unknown-scope] [--json]
    keystile keys rotate KEY_ID [--grace 24h] [--json]
    keystile keys import [--from generic|drf-api-key] FILE.csv|FILE.json
                         [--scope S ...] [--org ORG] [--dry-run] [--json]
    keystile keys patterns [--json]       each key type's regex for secret scanners
    keystile audit [--org ORG] [--key KEY_ID] [--days 7] [--limit 1000] [--json]
    keystile db init
    keystile db status [--json]           store and limiter: versions, latency, row counts
    keystile check [--json]
    keystile explain METHOD PATH [--key KEY_ID | --scopes a,b] [--json]

``--config`` may come before or after the command; without it the config is
``$KEYSTILE_CONFIG``, then ``./keystile.yaml``. ``check`` and ``explain``
read only the config (``explain --key`` reads the key too, see
:mod:`keystile._cli_check`); the other commands also need the pepper (the variable
the config's ``pepper_env`` names) and the store.

Decisions worth knowing:

- ``keys create`` and ``keys update`` refuse a scope the config names
  nowhere, and ``create`` a key with no scope (and no preset), as the
  management API does; ``--allow-unknown-scope`` lets an operator through
  (see :mod:`keystile._cli_keys`).
- ``keys update --metadata KEY=VALUE`` sets one entry and keeps the others
  (``KEY=`` removes it); ``--expires-in-days N`` counts from now, as on create.
- ``keys update --scope`` replaces the key's scopes (it does not add to
  them); ``--rate-limit none`` removes the key's own limit so that
  ``limits.key`` applies again.
- ``keys create`` prints the secret once, on stdout only; with ``--json`` as
  the ``secret`` field of the one JSON object printed. No other command
  prints a secret (``rotate`` prints the new key's), and nothing secret ever
  goes to stderr. ``--json`` objects carry every public field of the key,
  never its digest; times are ISO 8601 UTC (``2026-03-29T10:30:00Z``) or null.
- A ``memory://`` store lives and dies with the process, so key commands on
  it warn that their keys are gone when the command exits.
- ``keys import`` brings keys over from another system with their stored
  hashes (see "Imports" below and docs/guides/migrating.md). The whole file
  is read and checked before anything is written; rows that are revoked,
  expired, or already imported (same lookup prefix) are skipped, so a
  failed import can be fixed and run again.
- ``keys list``, ``keys usage`` and ``audit`` read usage and the audit
  trail; their decisions (stale keys, sort order, status columns) are in
  :mod:`keystile._cli_usage`.

Exit status:

====  ==========================================================================
0     success (``explain`` of an unmatched path included)
1     a failed check: invalid, missing or empty config, bad YAML, missing pepper;
      unknown or inactive key id; a conflict
      (one user key per user and org; rotating a key whose successor is
      still active: the message names the successor, the key to rotate)
2     usage or input error: unknown option, empty or over-long name, days
      outside 1 to 365, malformed or unknown scope, no scope, bad rate limit or
      grace, unknown preset or plan
3     the store is unreachable (or its driver is not installed); ``db status``
      when the store or the limiter does not answer
4     nothing changed: ``keys revoke`` of a key already revoked
130   interrupted
====  ==========================================================================

Every error is one line on stderr, ``keystile: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TextIO

from keystile import (
    _cli_check,
    _cli_db,
    _cli_keys,
    _cli_limits,
    _cli_patterns,
    _cli_progress,
    _cli_usage,
)
from keystile import _cli_format as fmt
from keystile.__about__ import __version__
from keystile._cli_command import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandError,
)
from keystile._cli_command import engine as _engine
from keystile._cli_command import print_json as _print_json
from keystile._cli_command import verbose as _verbose
from keystile.errors import (
    ConfigError,
    KeyConflict,
    KeyInputError,
    KeyNotFound,
    KeystileError,
    ServiceUnavailable,
)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "build_parser", "main"]

# The key API names its bad argument (KeyInputError.field); say it as the flag.
_FLAGS = {"scopes": "--scope", "allowed_origins": "--allowed-origin", "allowed_ips": "--allow-ip"}
_FLAGS.update(
    (field, "--" + field.replace("_", "-"))
    for field in ("name", "preset", "org", "user", "expires_in_days", "rate_limit", "plan")
)
_FLAGS.update(type="--type", grace="--grace", days="--days", limit="--limit")
_ALLOW_UNKNOWN = "accept scopes the config names nowhere (and, on create, no scope)"
SAVE_NOW = "Save this key now: it won't be shown again."

Command = Callable[[argparse.Namespace, TextIO], int]


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``keystile: error:`` line and status 2.

    argparse would print the usage, then ``keystile keys create: error:``, and
    exit from deep inside ``parse_args``; raising lets ``main`` return instead.
    """

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# -- commands ----------------------------------------------------------------------


def _keys_create(args: argparse.Namespace, out: TextIO) -> int:
    options: dict[str, Any] = {
        "scopes": args.scope or [],
        "preset": args.preset,
        "org": args.org,
        "user": args.user,
        "type": args.type,
        "expires_in_days": args.expires_in_days,
        "rate_limit": args.rate_limit,
        "plan": args.plan,
        "allowed_origins": args.allowed_origin,
        "allowed_ips": args.allow_ip,
    }
    options = {k: v for k, v in options.items() if v is not None}
    with _engine(args) as ks:
        _cli_keys.check_scopes(
            ks,
            args.scope or [],
            {"name": args.name, **options},
            need_one=args.preset is None,
            allow=args.allow_unknown_scope,
        )
        new = ks.keys.create(args.name, **options)
    record = new.record
    if args.json:
        _print_json(out, fmt.key_json(record, new.secret))
        return EXIT_OK
    owner = f"user {record.owner}" if record.owner else "bot"
    out.write(
        f'Created key {record.id} "{record.name}" for org {record.org} '
        f"({owner}, {record.type} key)\n"
    )
    out.write(f"  scopes:  {', '.join(record.scopes) or '-'}\n")
    out.write(f"  expires: {fmt.iso(record.expires_at) or 'never'}\n\n")
    out.write(f"  {new.secret}\n\n{SAVE_NOW}\n")
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace, out: TextIO) -> int:
    with _engine(args) as ks:
        _cli_keys.check_not_revoked(ks, args.key_id)
        record = ks.keys.revoke(args.key_id)
    if args.json:
        _print_json(out, fmt.key_json(record))
    else:
        out.write(f'Revoked key {record.id} "{record.name}" (org {record.org})\n')
    return EXIT_OK


def _keys_update(args: argparse.Namespace, out: TextIO) -> int:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.scope is not None:
        changes["scopes"] = args.scope
    if args.rate_limit is not None:
        changes["rate_limit"] = None if args.rate_limit.lower() == "none" else args.rate_limit
    if args.allow_ip is not None and args.clear_allow_ip:
        raise CommandError("give --allow-ip or --clear-allow-ip, not both", EXIT_USAGE)
    if args.allow_ip is not None:
        changes["allowed_ips"] = args.allow_ip
    if args.clear_allow_ip:
        changes["allowed_ips"] = []
    if args.plan is not None:
        changes["plan"] = None if args.plan.lower() == "none" else args.plan
    if args.expires_in_days is not None:
        changes["expires_in_days"] = args.expires_in_days
    if not changes and not args.metadata:
        raise CommandError(
            "nothing to update: give --name, --scope, --rate-limit, --plan, --expires-in-days, "
            "--metadata, --allow-ip or --clear-allow-ip",
            EXIT_USAGE,
        )
    with _engine(args) as ks:
        _cli_keys.check_scopes(
            ks, args.scope or [], changes, need_one=False, allow=args.allow_unknown_scope
        )
        if args.metadata:
            current = ks.keys.get(args.key_id).metadata
            changes["metadata"] = _cli_keys.metadata_changes(current, args.metadata)
        record = ks.keys.update(args.key_id, **changes)
    if args.json:
        _print_json(out, fmt.key_json(record))
    else:
        out.write(
            f'Updated key {record.id} "{record.name}"\n'
            f"  scopes:     {', '.join(record.scopes) or '-'}\n"
            f"  rate limit: {record.rate_limit or 'default'}\n"
            f"  plan:       {record.plan or '-'}\n"
            f"  expires:    {fmt.iso(record.expires_at) or 'never'}\n"
            f"  allowed IPs: {', '.join(record.allowed_ips) or 'any'}\n"
        )
    return EXIT_OK


def _keys_rotate(args: argparse.Namespace, out: TextIO) -> int:
    with _engine(args) as ks:
        new = ks.keys.rotate(args.key_id, grace=args.grace)
        old = ks.keys.get(args.key_id)
    # No grace revokes the old key at once; otherwise it expires after the grace.
    until = fmt.iso(old.revoked_at or old.expires_at)
    if args.json:
        data = fmt.key_json(new.record, new.secret)
        data["previous_expires_at"] = until
        _print_json(out, data)
        return EXIT_OK
    fate = "is revoked now" if old.revoked_at else f"stays valid until {until}"
    out.write(
        f'Rotated key {old.id} -> {new.id} "{new.record.name}"\n'
        f"  the old key {fate}\n\n"
        f"  {new.secret}\n\n{SAVE_NOW}\n"
    )
    return EXIT_OK


# -- keys import -------------------------------------------------------------------
#
# Keys made by another system keep working: each is stored with that system's
# hash and found by its public lookup prefix (the key reads
# ``lookup_prefix.secret``); its first successful use verifies the hash once,
# through passlib, and upgrades it to keystile's digest.
#
# A file is CSV (a header row) or JSON (a list of objects, or {"keys": [...]};
# Django ``dumpdata`` rows, which keep their columns under "fields", work too).
# Column names per source (keystile field -> the source's column):
_IMPORT_COLUMNS: dict[str, dict[str, str]] = {
    "generic": {
        f: f
        for f in (
            "name",
            "hash",
            "lookup_prefix",
            "scopes",
            "org",
            "user",
            "plan",
            "rate_limit",
            "expires_at",
            "revoked",
        )
    },
    # djangorestframework-api-key's table rest_framework_api_key_apikey: its
    # ``id`` repeats the hash and ``created`` has no counterpart; both are ignored.
    "drf-api-key": {
        "name": "name",
        "hash": "hashed_key",
        "lookup_prefix": "prefix",
        "expires_at": "expiry_date",
        "revoked": "revoked",
    },
}
# drf-api-key 3.x hashes the whole key with unsalted SHA-512 (its own Django
# hasher, "sha512$$<hex>"); the same digest is passlib's ``hex_sha512``.
_DRF_SHA512 = re.compile(r"sha512\$\$([0-9a-f]{128})")
_TRUE, _FALSE = ("true", "t", "1", "yes", "y"), ("false", "f", "0", "no", "n", "")


@dataclass(frozen=True)
class _ImportRow:
    """One key to import, checked; ``where`` names its row for messages."""

    where: str
    name: str
    hash: str
    lookup_prefix: str
    options: dict[str, Any]
    expires_at: datetime | None
    revoked: bool


def _read_table(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The rows of a CSV or JSON file, each with a label such as ``keys.csv:3``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text", EXIT_USAGE) from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = []
        for row in reader:
            if None in row:
                raise CommandError(f"{path}:{reader.line_num}: more cells than columns", EXIT_USAGE)
            rows.append((f"{path.name}:{reader.line_num}", dict(row)))
        return rows
    if path.suffix.lower() != ".json":
        raise CommandError(f"{path}: the file must end in .csv or .json", EXIT_USAGE)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{path}: not JSON ({exc})", EXIT_USAGE) from None
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        data = data["keys"]
    if not isinstance(data, list):
        raise CommandError(f"{path}: expected a list of objects", EXIT_USAGE)
    out = []
    for index, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise CommandError(f"{path.name} item {index}: not an object", EXIT_USAGE)
        if isinstance(item.get("fields"), dict):  # Django dumpdata
            item = item["fields"]
        out.append((f"{path.name} item {index}", item))
    return out


def _import_hash(value: str, where: str, context: Any) -> str:
    """The row's hash as the key will keep it, checked while the file is read.

    ``keystile.keys.imported_hash`` refuses a hash passlib cannot parse, so
    a bad row stops the import before any row is written.
    """
    from keystile.keys import imported_hash

    try:
        return imported_hash(value)
    except ValueError as exc:
        # The message names the scheme, never the hash (not a secret, but it
        # has no business in a terminal either).
        raise CommandError(f"{where}: {exc}", EXIT_USAGE) from None


def _import_time(value: Any, where: str) -> datetime | None:
    if value in (None, ""):
        return None
    text = str(value).strip().replace(" ", "T", 1)
    # Python 3.10 reads neither "Z" nor PostgreSQL's "+00" offsets.
    text = re.sub(r"(?:Z|([+-]\d\d))$", lambda m: (m.group(1) or "+00") + ":00", text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{where}: {value!r} is not an ISO 8601 time", EXIT_USAGE) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _import_flag(value: Any, where: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise CommandError(f"{where}: revoked is {value!r}, not true or false", EXIT_USAGE)


def _import_rows(
    path: Path, source: str, scopes: list[str] | None, org: str | None, context: Any
) -> list[_ImportRow]:
    """Every row of ``path``, checked, before anything is written."""
    columns = _IMPORT_COLUMNS[source]
    rows: list[_ImportRow] = []
    for where, raw in _read_table(path):
        row: dict[str, Any] = {field: raw.get(column) for field, column in columns.items()}
        for field in ("hash", "lookup_prefix"):
            if not isinstance(row[field], str) or not row[field].strip():
                raise CommandError(f"{where}: no {columns[field]!r}", EXIT_USAGE)
        lookup = row["lookup_prefix"].strip()
        if "." in lookup or len(lookup) > 64:
            raise CommandError(
                f"{where}: a lookup prefix is at most 64 characters without a '.'", EXIT_USAGE
            )
        options: dict[str, Any] = {"metadata": {"imported_from": source}}
        row_scopes = row.get("scopes")
        if isinstance(row_scopes, str):  # CSV: separated by spaces or commas
            row_scopes = [s for s in re.split(r"[\s,]+", row_scopes) if s]
        if row_scopes or scopes:
            options["scopes"] = row_scopes or scopes
        for field in ("org", "user", "plan", "rate_limit"):
            value = row.get(field) or (org if field == "org" else None)
            if value:
                options[field] = value
        rows.append(
            _ImportRow(
                where=where,
                name=str(row["name"] or "").strip() or f"imported {lookup}",
                hash=_import_hash(row["hash"].strip(), where, context),
                lookup_prefix=lookup,
                options=options,
                expires_at=_import_time(row["expires_at"], where),
                revoked=_import_flag(row["revoked"], where),
            )
        )
    return rows


def _skip_reason(row: _ImportRow, now: datetime, seen: set[str]) -> str | None:
    if row.revoked:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if row.lookup_prefix in seen:
        return "already imported"
    return None


def _keys_import(args: argparse.Namespace, out: TextIO) -> int:
    from keystile.keys import imported_hash_context

    context = imported_hash_context()
    rows = _import_rows(Path(args.file), args.source, args.scope, args.org, context)
    imported: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with _engine(args) as ks:
        if not ks.config.imported_keys:
            raise CommandError(
                f"{ks.config.source or 'the config'} does not accept imported keys: "
                "set 'imported_keys: true' first"
            )
        # Only active keys are visible here: see docs/guides/migrating.md on
        # running an import once, at cut-over.
        seen = {r.lookup_prefix for r in ks.keys.list() if r.lookup_prefix}
        now = ks.now()
        for row in _cli_progress.progress(rows, f"importing {len(rows)} keys"):
            reason = _skip_reason(row, now, seen)
            if reason:
                skipped.append(
                    {"row": row.where, "lookup_prefix": row.lookup_prefix, "reason": reason}
                )
                continue
            seen.add(row.lookup_prefix)
            options = dict(row.options)
            if row.expires_at is not None:
                options["expires_at"] = row.expires_at  # the exported instant, kept
            if args.dry_run:
                imported.append(
                    {"row": row.where, "lookup_prefix": row.lookup_prefix, "name": row.name}
                )
                continue
            try:
                record = ks.keys.import_key(
                    row.name, hash=row.hash, lookup_prefix=row.lookup_prefix, **options
                )
            except KeyInputError as exc:
                done = f"; {len(imported)} imported before it" if imported else ""
                raise CommandError(f"{row.where}: {exc}{done}", EXIT_USAGE) from None
            imported.append(fmt.key_json(record))
    if args.json:
        _print_json(out, {"dry_run": args.dry_run, "imported": imported, "skipped": skipped})
        return EXIT_OK
    verb = "Would import" if args.dry_run else "Imported"
    out.write(f"{verb} {len(imported)} key{'' if len(imported) == 1 else 's'} from {args.file}\n")
    for item in imported:
        out.write(f"  {item.get('id', item.get('row'))}  {item['name']}\n")
    for skip in skipped:
        out.write(f"  skipped {skip['row']} ({skip['lookup_prefix']}): {skip['reason']}\n")
    reasons = [skip["reason"] for skip in skipped]
    out.write(_cli_progress.summary(len(rows), len(imported), reasons, dry_run=args.dry_run))
    return EXIT_OK


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from keystile.demo import run

    return run(host=args.host, port=args.port, directory=args.dir, out=out)


# -- the parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``keystile`` (each leaf sets ``func``)."""
    # SUPPRESS: a --config given after the command must not be reset by the
    # top-level default, and vice versa.
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the YAML config (default: $KEYSTILE_CONFIG, then ./keystile.yaml)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what keystile does to stderr (never a secret)",
    )
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = _Parser(
        prog="keystile",
        parents=[common],
        description="API keys, scopes and rate limits: manage keys, check the config.",
    )
    parser.add_argument("--version", action="version", version=f"keystile {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keys = commands.add_parser(
        "keys",
        parents=[common],
        help="create, list, revoke, update, rotate, import keys; read usage",
    )
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    both = [common, as_json]

    create = key_commands.add_parser("create", parents=both, help="mint a key (secret shown once)")
    create.add_argument("--name", required=True, help="1 to 100 characters")
    create.add_argument("--scope", action="append", metavar="S", help="a scope (repeatable)")
    create.add_argument("--preset", metavar="read-only|full", help="scopes from a config preset")
    create.add_argument("--org", help="the key's organization (default: 'default')")
    create.add_argument("--user", metavar="U", help="owner user; omit for a bot key")
    create.add_argument("--expires-in-days", type=int, metavar="N", help="1 to 365")
    create.add_argument("--rate-limit", metavar="100/hour", help="replaces limits.key")
    create.add_argument("--plan", metavar="P", help="a plan of limits.plans")
    create.add_argument("--type", choices=("secret", "publishable", "embed"))
    create.add_argument(
        "--allowed-origin",
        action="append",
        metavar="HOST",
        help="origin host for publishable/embed keys (repeatable)",
    )
    create.add_argument(
        "--allow-ip",
        action="append",
        metavar="CIDR",
        help="answer only from this address or network (repeatable, at most 100)",
    )
    create.add_argument("--allow-unknown-scope", action="store_true", help=_ALLOW_UNKNOWN)
    create.set_defaults(func=_keys_create)

    _cli_usage.add_key_commands(key_commands, both)

    revoke = key_commands.add_parser("revoke", parents=both, help="revoke a key now")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(func=_keys_revoke)

    update = key_commands.add_parser("update", parents=both, help="rename, rescope, relimit")
    update.add_argument("key_id", metavar="KEY_ID")
    update.add_argument("--name", metavar="N")
    update.add_argument(
        "--scope",
        action="append",
        metavar="S",
        help="the new scopes, replacing the old ones (repeatable)",
    )
    update.add_argument("--rate-limit", metavar="R", help="a limit such as 100/hour, or none")
    update.add_argument(
        "--allow-ip",
        action="append",
        metavar="CIDR",
        help="the new address allowlist, replacing the old one (repeatable)",
    )
    update.add_argument(
        "--clear-allow-ip", action="store_true", help="answer from any address again"
    )
    update.add_argument("--plan", metavar="P", help="a plan of limits.plans, or none")
    update.add_argument(
        "--expires-in-days", type=int, metavar="N", help="expire N days from now (1 to 365)"
    )
    update.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="set one metadata entry, KEY= removes it (repeatable)",
    )
    update.add_argument("--allow-unknown-scope", action="store_true", help=_ALLOW_UNKNOWN)
    update.set_defaults(func=_keys_update)

    rotate = key_commands.add_parser("rotate", parents=both, help="new secret; old one expires")
    rotate.add_argument("key_id", metavar="KEY_ID")
    rotate.add_argument(
        "--grace", default="24h", help="how long the old secret keeps working (default: 24h)"
    )
    rotate.set_defaults(func=_keys_rotate)

    importing = key_commands.add_parser(
        "import", parents=both, help="bring keys over from another system, hashes and all"
    )
    importing.add_argument("file", metavar="FILE", help="a .csv (with a header row) or .json file")
    importing.add_argument(
        "--from",
        dest="source",
        choices=tuple(_IMPORT_COLUMNS),
        default="generic",
        help="the file's columns (default: generic: name, hash, lookup_prefix, scopes, ...)",
    )
    importing.add_argument(
        "--scope", action="append", metavar="S", help="scopes for rows that name none (repeatable)"
    )
    importing.add_argument("--org", help="the organization for rows that name none")
    importing.add_argument("--dry-run", action="store_true", help="check the file, write nothing")
    importing.set_defaults(func=_keys_import)

    _cli_patterns.add_commands(key_commands, both)

    db = commands.add_parser("db", parents=[common], help="the key store")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    _cli_db.add_commands(db_commands, both)

    _cli_usage.add_commands(commands, both)
    _cli_limits.add_commands(commands, both)

    _cli_check.add_commands(commands, [common, as_json])

    demo = commands.add_parser(
        "demo", parents=[common], help="serve the example app with a minted key"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--dir", default="keystile-demo", help="where the demo keeps its SQLite file")
    demo.set_defaults(func=_demo)
    return parser


# -- main -------------------------------------------------------------------------------


def _fail(message: str, status: int) -> int:
    # Only the first line: a message is one line by contract, whatever its source.
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    sys.stderr.write(f"keystile: error: {first}\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``keystile`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except CommandError as exc:
        return _fail(str(exc), exc.status)
    except SystemExit as exc:  # --help and --version exit from inside argparse
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    with _verbose(getattr(args, "verbose", False)):
        return _run(args.func, args)


def _run(command: Command, args: argparse.Namespace) -> int:
    try:
        return command(args, sys.stdout)
    except CommandError as exc:
        return _fail(str(exc), exc.status)
    except KeyInputError as exc:
        flag = _FLAGS.get(exc.field or "")
        return _fail(f"argument {flag}: {exc}" if flag else str(exc), EXIT_USAGE)
    except (KeyNotFound, KeyConflict, ConfigError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except ServiceUnavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except KeystileError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `keystile keys list | head`: the reader left. Point stdout at devnull
        # so that the interpreter's final flush does not fail in its turn.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        return _fail(exc.strerror or str(exc), EXIT_FAILED)
    except Exception as exc:  # a bug: still one line, naming the exception, no traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED)
