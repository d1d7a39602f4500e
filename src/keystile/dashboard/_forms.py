"""The dashboard's forms: parsing a posted body, the permission choices, each field's check.

Nothing here does I/O. The checks are the management API's and the key
lifecycle's own (``ScopeRules``, ``check_name``, ``check_allowed_ips``);
this module only turns form fields into their arguments and their refusals
into a message beside the field they concern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from keystile.errors import KeyInputError
from keystile.lifecycle import check_allowed_ips, check_name
from keystile.management._input import ApiError, Caller, ScopeRules
from keystile.scopes import WILDCARD, ScopePolicy, is_pattern

__all__ = [
    "CUSTOM",
    "EXPIRY_CHOICES",
    "GRACE_CHOICES",
    "MAX_FORM",
    "BadForm",
    "CreateInput",
    "Form",
    "Invalid",
    "Permissions",
    "field_of",
    "read_allowed_ips",
    "read_create",
    "read_grace",
    "sentence",
]

MAX_FORM = 64 * 1024
"""Largest form body read (bytes); a form with every scope ticked is a few KiB."""
MAX_FIELDS = 2000
CUSTOM = "custom"
EXPIRY_CHOICES: tuple[tuple[str, str], ...] = (
    ("never", "Never"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("60", "60 days"),
    ("90", "90 days"),
    ("180", "180 days"),
    ("365", "1 year"),
)
GRACE_CHOICES: tuple[tuple[str, str], ...] = (
    ("none", "None: the current key stops at once"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
)
_PRESET_LABELS = {"full": "Full access", "read-only": "Read only"}
_FORM_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# What the key lifecycle calls a field -> the form field the message goes beside.
_FIELDS = {
    "name": "name",
    "scopes": "permissions",
    "expires_in_days": "expires",
    "kind": "kind",
    "allowed_ips": "allowed_ips",
}


class Invalid(Exception):
    """One or more fields are wrong: ``errors`` maps each form field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


class BadForm(Exception):
    """The body is not a form this page sent (400, with no field to blame)."""


def field_of(err: KeyInputError) -> str:
    """The form field a lifecycle refusal is about (``""``: the form as a whole)."""
    return _FIELDS.get(err.field or "", "")


def sentence(message: str) -> str:
    """A refusal's text as a sentence for the page: capital first, full stop last."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


class Form:
    """An ``application/x-www-form-urlencoded`` body, as the browser posted it."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = tuple(pairs)

    @classmethod
    def parse(cls, raw: bytes) -> Form:
        try:
            text = raw.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise BadForm("the form could not be read; reload the page and try again") from None
        return cls(pairs)

    def one(self, name: str) -> str | None:
        """The field's value; a field sent twice is refused (two parsers, two readings)."""
        values = self.all(name)
        if len(values) > 1:
            raise BadForm(f"the field {name!r} was sent more than once")
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


# -- permissions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class ScopeChoice:
    """One checkbox of Custom: a scope, its tier, and whether it is ticked."""

    scope: str
    tier: str  # read | write | destructive
    checked: bool = False
    held_only: bool = False  # on the key already, but this caller may not add it


@dataclass(frozen=True)
class ScopeGroup:
    name: str
    choices: tuple[ScopeChoice, ...]


class Permissions:
    """The "Permissions" field of one config: its presets, and Custom's scopes by resource.

    Built once per app from the management API's ``ScopeRules`` (the known
    scopes) and the scope policy (presets, destructive scopes, implies).
    """

    def __init__(self, rules: ScopeRules, policy: ScopePolicy) -> None:
        self.rules = rules
        self.policy = policy
        presets = [
            Preset(name, _PRESET_LABELS.get(name, name), scopes)
            for name, scopes in policy.presets.items()
            if scopes  # a preset with nothing to grant in this config is no choice
        ]
        order = list(_PRESET_LABELS)
        presets.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
        self.presets = tuple(presets)
        self._by_name = {p.name: p for p in presets}
        concrete = sorted(rules.known)
        self._concrete = concrete
        self._resources = sorted({s.partition(":")[0] for s in concrete if ":" in s})
        # A pattern is offered when it grants something: `*:delete` over
        # destructive `servers:delete` only would grant nothing at all.
        granting = [s for s in concrete if ":" in s and not policy.reaches_destructive(s)]
        self._actions = sorted({s.partition(":")[2] for s in granting})
        self._open = frozenset(s.partition(":")[0] for s in granting)

    def tier(self, scope: str) -> str:
        """``destructive`` if holding it grants a destructive scope; else ``read`` or ``write``."""
        if self.policy.reaches_destructive(scope):
            return "destructive"
        action = scope.partition(":")[2] if ":" in scope else scope
        return "read" if action == "read" else "write"

    def choices(self) -> list[tuple[str, str]]:
        """The options of the Permissions select: (value, label)."""
        return [(p.name, p.label) for p in self.presets] + [(CUSTOM, "Custom")]

    def preset_of(self, scopes: Iterable[str]) -> str:
        """The preset whose scopes these are exactly, else ``custom``."""
        held = set(scopes)
        for preset in self.presets:
            if set(preset.scopes) == held:
                return preset.name
        return CUSTOM

    def label_of(self, scopes: Iterable[str]) -> str | None:
        """A preset's label when ``scopes`` are exactly that preset (the list's summary)."""
        name = self.preset_of(scopes)
        return None if name == CUSTOM else self._by_name[name].label

    def groups(
        self, caller: Caller, checked: Iterable[str] = (), held: Iterable[str] = ()
    ) -> list[ScopeGroup]:
        """Custom's checkboxes: every scope ``caller`` may grant, grouped by resource.

        Patterns and scopes that reach a destructive one are offered to
        admins only (as the management API allows them to admins only).
        ``held`` scopes (the key's own, on its page) are listed even when
        the caller may not add them, so that they can be kept or removed.
        """
        ticked = set(checked)
        held_set = set(held)
        admin = caller.is_admin
        groups: dict[str, list[ScopeChoice]] = {}

        def offer(group: str, scope: str) -> None:
            tier = self.tier(scope)
            allowed = admin or (not is_pattern(scope) and tier != "destructive")
            if not allowed and scope not in held_set:
                return
            groups.setdefault(group, []).append(
                ScopeChoice(scope, tier, scope in ticked, held_only=not allowed)
            )

        if admin or held_set & {WILDCARD, *(f"*:{a}" for a in self._actions)}:
            offer("All resources", WILDCARD)
            for action in self._actions:
                offer("All resources", f"*:{action}")
        for resource in self._resources:
            if resource in self._open:
                offer(resource, f"{resource}:*")
            for scope in self._concrete:
                if scope.partition(":")[0] == resource and ":" in scope:
                    offer(resource, scope)
        for scope in self._concrete:
            if ":" not in scope:
                offer("Other", scope)
        listed = {c.scope for choices in groups.values() for c in choices}
        for scope in sorted(held_set - listed):  # held, yet unknown to this config
            groups.setdefault("Not in this configuration", []).append(
                ScopeChoice(scope, self.tier(scope), scope in ticked, held_only=True)
            )
        return [ScopeGroup(name, tuple(choices)) for name, choices in groups.items()]

    def read(self, form: Form, caller: Caller, held: Sequence[str] = ()) -> tuple[str, ...]:
        """The scopes a submitted Permissions field grants, or ``Invalid``.

        ``held`` are the key's current scopes (on its page): those may stay
        even if the caller could not grant them; only what is *added* is
        checked, by the management API's ``ScopeRules``. A forged choice (a
        pattern or a destructive scope from a member) is refused here and
        nothing is written.
        """
        choice = form.one("permissions")
        if choice in self._by_name:
            wanted: Sequence[str] = self._by_name[choice].scopes
        elif choice == CUSTOM:
            wanted = list(dict.fromkeys(form.all("scope")))
            if not wanted:
                raise Invalid({"permissions": "Choose at least one permission under Custom."})
        else:
            names = ", ".join(label for _, label in self.choices())
            raise Invalid({"permissions": f"Choose one of: {names}."})
        added = [s for s in wanted if s not in held]
        try:
            self.rules.check(added, caller, explicit=False)
        except ApiError as err:
            raise Invalid({"permissions": sentence(err.refusal.message)}) from None
        return tuple(wanted)


# -- the create form ------------------------------------------------------------------


@dataclass(frozen=True)
class CreateInput:
    """What "Create key" asks the key lifecycle for."""

    name: str
    kind: str
    scopes: tuple[str, ...]
    expires_in_days: int | None
    form_id: str


def read_create(form: Form, caller: Caller, permissions: Permissions) -> CreateInput:
    """Check every field of the create form; ``Invalid`` names each field at fault."""
    errors: dict[str, str] = {}
    name = _checked(errors, "name", lambda: check_name(form.one("name") or ""))
    kind = form.one("kind")
    if kind not in ("user", "bot"):
        errors["kind"] = "Choose User key or Bot key."
    scopes: tuple[str, ...] = ()
    try:
        scopes = permissions.read(form, caller)
    except Invalid as err:
        errors.update(err.errors)
    days = read_expiry(form.one("expires"), errors)
    form_id = form.one("form_id") or ""
    if not _FORM_ID.fullmatch(form_id):
        raise BadForm("the form is out of date; open Create key again")
    if errors:
        raise Invalid(errors)
    return CreateInput(str(name), str(kind), scopes, days, form_id)


def read_expiry(value: str | None, errors: dict[str, str]) -> int | None:
    """``never`` or a whole number of days from 1 to 365 (the select offers a few)."""
    if value in (None, "", "never"):
        return None
    if value.isascii() and value.isdigit() and 1 <= int(value) <= 365:
        return int(value)
    errors["expires"] = "Choose Never, or from 1 to 365 days."
    return None


def read_grace(value: str | None) -> str | None:
    """The rotate form's grace: one of ``GRACE_CHOICES``; ``None`` for none."""
    if value == "none":
        return None
    if value in dict(GRACE_CHOICES):
        return value
    raise Invalid({"grace": "Choose a grace period from the list."})


def read_allowed_ips(value: str | None) -> tuple[str, ...]:
    """One CIDR a line (or separated by commas or spaces); empty allows any address."""
    items = [item for item in re.split(r"[\s,]+", value or "") if item]
    try:
        return check_allowed_ips(items)
    except KeyInputError as err:
        raise Invalid({"allowed_ips": sentence(str(err))}) from None


def _checked(errors: dict[str, str], field: str, check: Any) -> Any:
    try:
        return check()
    except KeyInputError as err:
        errors[field] = sentence(str(err))
        return None
