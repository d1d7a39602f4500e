"""What ``keys create``, ``keys update`` and ``keys revoke`` check before they write.

The management API refuses a scope the config does not know (a typo such as
``event:read`` would make a key that passes no route) and a key made of no
scope at all; the command line refuses the same, through the same
:class:`~keystile.management._input.ScopeRules`, with exit 2. An operator who
means it passes ``--allow-unknown-scope`` (scopes a route added in the next
deploy will name, say). Each refusal happens before the store is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from keystile._cli_command import EXIT_UNCHANGED, EXIT_USAGE, CommandError
from keystile._cli_format import iso
from keystile.engine import Keystile
from keystile.lifecycle import check_days, check_name, check_rate_limit
from keystile.management._input import ApiError, Caller, ScopeRules

__all__ = ["check_not_revoked", "check_scopes", "metadata_changes"]

_FIRST: dict[str, Callable[[Any], Any]] = {
    "name": check_name,
    "expires_in_days": check_days,
    "rate_limit": check_rate_limit,
}

# The command line is the operator's own shell: it may grant what an admin may.
_OPERATOR = Caller("cli", "default", True)
NO_SCOPE = (
    "a key with no scope passes only routes that require none: give --scope S "
    "(repeatable) or --preset P, or --allow-unknown-scope to create it anyway"
)


def check_scopes(
    ks: Keystile, scopes: Sequence[str], options: dict[str, Any], *, need_one: bool, allow: bool
) -> None:
    """Refuse (exit 2) a scope the config names nowhere, or, if ``need_one``, no scope at all.

    ``create`` needs one unless ``--preset`` gives them (a preset's scopes
    are the config's own, so known); ``update`` checks only a new ``--scope``.
    The other arguments the key API checks without the store are checked
    first, so that a bad ``--name`` is reported as such whatever the scopes.
    """
    for field, check in _FIRST.items():
        if options.get(field) is not None:
            check(options[field])
    if allow:
        return
    if not scopes:
        if need_one:
            raise CommandError(NO_SCOPE, EXIT_USAGE)
        return
    rules = ScopeRules(ks.config.known_scopes(), ks.scopes)
    try:
        rules.check(list(scopes), _OPERATOR, explicit=True)
    except ApiError as exc:
        hint = " (or pass --allow-unknown-scope)" if "malformed" not in str(exc) else ""
        raise CommandError(f"argument --scope: {exc}{hint}", EXIT_USAGE) from None


def metadata_changes(current: Any, pairs: Sequence[str]) -> dict[str, Any]:
    """The key's metadata with each ``KEY=VALUE`` set (``KEY=`` removes KEY).

    Merged into what the key holds rather than replacing it: ``--metadata
    team=billing`` should not drop the ``imported_from`` an import left.
    """
    merged = {str(k): v for k, v in dict(current).items()}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CommandError(f"argument --metadata: {pair!r} is not KEY=VALUE", EXIT_USAGE)
        if value:
            merged[name] = value
        else:
            merged.pop(name, None)
    return merged


def check_not_revoked(ks: Keystile, key_id: str) -> None:
    """Exit 4 when the key is already revoked: nothing changed, and a script can tell.

    Distinct from 1 (an unknown id), so an idempotent clean-up can accept 4
    and still stop on a mistyped id.
    """
    record = ks.keys.get(key_id)  # KeyNotFound (exit 1) for an unknown id
    if record.revoked_at is not None:
        raise CommandError(
            f"key {key_id} was already revoked at {iso(record.revoked_at)}; nothing changed",
            EXIT_UNCHANGED,
        )
