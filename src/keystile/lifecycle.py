"""The key lifecycle: create, list, get, update, revoke, rotate, revoke_user.

Each operation is written once, as a generator (a *flow*) that validates its
input, yields the ``StoreCall`` it needs and turns the answer into a result.
``KeyManager`` drives the flows with the sync store (``ks.keys.create``) and
with the async store (``await ks.keys.acreate``); the drivers are the only
place where sync and async differ.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import limits

from keystile import keys as keyfmt
from keystile._flow import adrive, drive
from keystile._redact import redact_url
from keystile.errors import KeyInputError, KeyNotFound
from keystile.scopes import is_well_formed
from keystile.stores.base import KeyRecord, StoreCall, freeze
from keystile.usage import UsageDay, check_usage_days, totals_flow, usage_flow

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = ["KeyManager", "NewKey"]

T = TypeVar("T")
KeyList = list  # the builtin, since KeyManager.list shadows it in the class body
Flow = Generator[StoreCall, Any, T]

MAX_NAME = 100
MAX_IDENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class NewKey:
    """A key just made: the only object that ever holds its secret.

    ``secret`` is shown here once and never again; ``repr`` hides it.
    """

    secret: str = field(repr=False)
    record: KeyRecord

    @property
    def id(self) -> str:
        return self.record.id

    def __getattr__(self, name: str) -> Any:
        # Reads through to the record: new.name, new.scopes, new.expires_at...
        return getattr(self.record, name)

    def __repr__(self) -> str:
        return f"NewKey(id={self.record.id!r}, prefix={self.record.prefix!r}, secret=<hidden>)"


# -- validation ---------------------------------------------------------------


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise KeyInputError("name must be 1 to 100 characters", field="name")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise KeyInputError(f"name is {len(name)} characters; at most 100", field="name")
    if _CONTROL.search(name):
        raise KeyInputError("name must not contain control characters", field="name")
    return str(name)


def check_ident(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_IDENT or _CONTROL.search(value):
        raise KeyInputError(f"{what} must be 1 to {MAX_IDENT} printable characters", field=what)
    return value


def check_days(days: Any) -> int | None:
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        raise KeyInputError(
            "expires_in_days must be a whole number from 1 to 365", field="expires_in_days"
        )
    return days


def check_scopes(scopes: Any) -> tuple[str, ...]:
    if isinstance(scopes, str) or not isinstance(scopes, Iterable):
        raise KeyInputError("scopes must be a list of strings", field="scopes")
    out: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or not is_well_formed(scope):
            raise KeyInputError(f"malformed scope {scope!r}", field="scopes")
        if scope not in out:
            out.append(scope)
    return tuple(out)


def check_grace(grace: Any) -> float:
    """A rotation's grace period in seconds (``None``: 0, the old key stops at once)."""
    from keystile.config import parse_duration

    try:
        seconds = 0.0 if grace is None else parse_duration(grace)
    except Exception:
        raise KeyInputError(
            f"grace {grace!r} is not a duration such as '24h'", field="grace"
        ) from None
    if seconds < 0 or seconds > 365 * 86400:
        raise KeyInputError("grace must be between 0 and 365 days", field="grace")
    return seconds


def check_rate_limit(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str) or not limits.parse_many(value):
            raise ValueError(value)
    except ValueError:
        raise KeyInputError(
            f"rate_limit {value!r} is not a limit such as '100/hour'", field="rate_limit"
        ) from None
    return value


def check_metadata(value: Any) -> Mapping[str, Any]:
    if value is None:
        return freeze({})  # type: ignore[no-any-return]
    if not isinstance(value, Mapping):
        raise KeyInputError("metadata must be a mapping", field="metadata")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise KeyInputError("metadata must be JSON-serializable", field="metadata") from None
    return freeze(value)  # type: ignore[no-any-return]


def check_origins(origins: Any) -> tuple[str, ...]:
    if origins is None:
        return ()
    if isinstance(origins, str) or not isinstance(origins, Iterable):
        raise KeyInputError("allowed_origins must be a list of hosts", field="allowed_origins")
    out = []
    for origin in origins:
        if not isinstance(origin, str) or not re.fullmatch(
            r"(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?", origin
        ):
            raise KeyInputError(
                f"allowed origin {origin!r} must be a host such as 'app.example' or "
                "'*.example.com'",
                field="allowed_origins",
            )
        out.append(origin.lower())
    return tuple(out)


MAX_ALLOWED_IPS = 100


def check_allowed_ips(value: Any) -> tuple[str, ...]:
    """At most 100 CIDRs (IPv4 or IPv6; a bare address is its /32 or /128), normalized.

    Host bits set (``10.0.0.7/8``) are refused rather than widened, as in
    ``trusted_proxies``, so the owner sees exactly which addresses pass.
    """
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise KeyInputError("allowed_ips must be a list of CIDRs", field="allowed_ips")
    out: list[str] = []
    for item in value:
        try:
            if not isinstance(item, str):
                raise ValueError("not a string")
            out.append(str(ipaddress.ip_network(item.strip(), strict=True)))
        except ValueError as exc:
            raise KeyInputError(
                f"allowed IP {item!r} is not a CIDR such as '203.0.113.0/24' or "
                f"'2001:db8::/32' ({exc})",
                field="allowed_ips",
            ) from None
    if len(out) > MAX_ALLOWED_IPS:
        raise KeyInputError(
            f"at most {MAX_ALLOWED_IPS} allowed IPs, not {len(out)}", field="allowed_ips"
        )
    return tuple(dict.fromkeys(out))


def check_restrictions(value: Any) -> Mapping[str, tuple[str, ...]]:
    if value is None:
        return freeze({})  # type: ignore[no-any-return]
    if not isinstance(value, Mapping):
        raise KeyInputError("restrictions must map a name to allowed values", field="restrictions")
    out: dict[str, tuple[str, ...]] = {}
    for name, allowed in value.items():
        if (
            not isinstance(name, str)
            or isinstance(allowed, str)
            or not isinstance(allowed, Iterable)
        ):
            raise KeyInputError(
                "restrictions must map a name to a list of values", field="restrictions"
            )
        out[name] = tuple(str(v) for v in allowed)
    return freeze(out)  # type: ignore[no-any-return]


# -- the manager --------------------------------------------------------------


class KeyManager:
    """``ks.keys``: the key lifecycle, sync and async (``a``-prefixed twins).

    >>> new = ks.keys.create(name="CI upload", scopes=["results"], org="acme")  # doctest: +SKIP
    >>> new.secret   # shown once; only its HMAC digest is stored    # doctest: +SKIP
    """

    def __init__(self, engine: Keystile) -> None:
        self._ks = engine

    def __repr__(self) -> str:
        return f"KeyManager(store={redact_url(self._ks.config.store)!r})"

    # drivers
    def _run(self, flow: Flow[T]) -> T:
        store = self._ks.store
        return drive(flow, lambda call: store.execute(call.op, *call.args))

    async def _arun(self, flow: Flow[T]) -> T:
        store = self._ks.astore
        return await adrive(flow, lambda call: store.aexecute(call.op, *call.args))

    # public API: one line each way
    def create(self, name: str, **options: Any) -> NewKey:
        return self._run(self._create(name, **options))

    async def acreate(self, name: str, **options: Any) -> NewKey:
        return await self._arun(self._create(name, **options))

    def list(self, org: str | None = None) -> list[KeyRecord]:
        return self._run(self._list(org))

    async def alist(self, org: str | None = None) -> KeyList[KeyRecord]:
        return await self._arun(self._list(org))

    def get(self, key_id: str) -> KeyRecord:
        return self._run(self._get(key_id))

    async def aget(self, key_id: str) -> KeyRecord:
        return await self._arun(self._get(key_id))

    def update(self, key_id: str, **changes: Any) -> KeyRecord:
        return self._run(self._update(key_id, **changes))

    async def aupdate(self, key_id: str, **changes: Any) -> KeyRecord:
        return await self._arun(self._update(key_id, **changes))

    def revoke(self, key_id: str) -> KeyRecord:
        return self._run(self._revoke(key_id))

    async def arevoke(self, key_id: str) -> KeyRecord:
        return await self._arun(self._revoke(key_id))

    def rotate(self, key_id: str, grace: str | float | None = None) -> NewKey:
        """A successor of ``key_id`` with a new secret; the old key lives ``grace`` more.

        The successor keeps the old key's name, scopes, owner and expiry.
        With no grace (``None``, ``0``) the old key is revoked at once;
        otherwise it expires when the grace ends (or earlier, at its own
        expiry). ``KeyNotFound`` if the key is unknown, revoked or expired.

        A key is rotated once: while its successor is active, rotating it
        again raises ``KeyConflict`` naming the successor, which is the key
        to rotate next. (A second successor would inherit the grace-shortened
        expiry and die with the old key.) The store decides this under the
        old key's lock, so of two rotations racing one wins.
        """
        return self._run(self._rotate(key_id, grace))

    async def arotate(self, key_id: str, grace: str | float | None = None) -> NewKey:
        return await self._arun(self._rotate(key_id, grace))

    def revoke_user(self, *, org: str, user: str) -> KeyList[str]:
        return self._run(self._revoke_user(org, user))

    async def arevoke_user(self, *, org: str, user: str) -> KeyList[str]:
        return await self._arun(self._revoke_user(org, user))

    def list_all(self, org: str | None = None) -> KeyList[KeyRecord]:
        """Every key of ``org``, revoked and expired ones too, oldest first."""
        return self._run(self._list_all(org))

    async def alist_all(self, org: str | None = None) -> KeyList[KeyRecord]:
        return await self._arun(self._list_all(org))

    def usage(self, key_id: str, days: int = 30) -> KeyList[UsageDay]:
        """A key's requests per UTC day, oldest first, one entry a day (zeros too).

        Counts are written behind; this process's are flushed first, other
        processes' arrive with their next flush (every 30 s, and at exit).
        """
        days = check_usage_days(days)
        self._ks.flush()
        return self._run(usage_flow(key_id, days, self._ks.now()))

    async def ausage(self, key_id: str, days: int = 30) -> KeyList[UsageDay]:
        days = check_usage_days(days)
        await _flushed(self._ks)
        return await self._arun(usage_flow(key_id, days, self._ks.now()))

    def usage_totals(self, org: str | None = None, days: int = 30) -> dict[str, int]:
        """Requests per key over the last ``days``: every active key of ``org``, 0 if unused."""
        days = check_usage_days(days)
        self._ks.flush()
        return self._run(totals_flow(org, days, self._ks.now()))

    async def ausage_totals(self, org: str | None = None, days: int = 30) -> dict[str, int]:
        days = check_usage_days(days)
        await _flushed(self._ks)
        return await self._arun(totals_flow(org, days, self._ks.now()))

    def import_key(self, name: str, *, hash: str, lookup_prefix: str, **options: Any) -> KeyRecord:
        """A key another system issued, kept by its own hash (``docs/guides/migrating.md``).

        ``hash`` must be one passlib parses (``KeyInputError`` otherwise, at
        once rather than at the key's first request). ``expires_at``, an
        aware datetime, keeps the old system's expiry to the instant;
        ``expires_in_days`` and the other options are ``create``'s.
        """
        return self._run(self._import(name, hash, lookup_prefix, **options))

    # flows
    def _build(
        self,
        name: Any,
        *,
        scopes: Sequence[str] | None = None,
        preset: str | None = None,
        org: str = "default",
        user: str | None = None,
        type: str = "secret",
        expires_in_days: int | None = None,
        rate_limit: str | None = None,
        plan: str | None = None,
        allowed_origins: Sequence[str] | None = None,
        allowed_ips: Sequence[str] | None = None,
        restrictions: Mapping[str, Sequence[str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_by: str | None = None,
        kind: str | None = None,
    ) -> tuple[str, KeyRecord]:
        ks = self._ks
        cfg = ks.config
        if type not in cfg.key_types:
            raise KeyInputError(f"unknown key type {type!r}", field="type")
        granted = check_scopes(scopes if scopes is not None else ())
        if preset is not None:
            granted = tuple(dict.fromkeys(granted + ks.scopes.preset(preset)))
        org_ = check_ident(org, "org")
        owner = check_ident(user, "user", optional=True)
        kind = kind or ("user" if owner else "bot")
        if kind not in ("user", "bot") or (kind == "user" and owner is None):
            raise KeyInputError("kind is 'user' (with a user) or 'bot'", field="kind")
        if plan is not None and cfg.limits.plans and plan not in cfg.limits.plans:
            raise KeyInputError(
                f"unknown plan {plan!r}; the config knows {sorted(cfg.limits.plans)}",
                field="plan",
            )
        type_cfg = cfg.key_types[type]
        self._check_ceiling(type, granted)
        origins = check_origins(allowed_origins)
        if type_cfg.origin_bound and not origins:
            raise KeyInputError(f"{type} keys need allowed_origins", field="allowed_origins")
        embed_only = check_restrictions(restrictions)
        if embed_only and type != "embed":
            raise KeyInputError("restrictions apply to embed keys only", field="restrictions")
        days = check_days(expires_in_days)
        now = ks.now()
        secret = ks.formats[type].generate()
        record = KeyRecord(
            id=keyfmt.new_key_id(),
            digest=ks.digest(secret),
            prefix=keyfmt.display_prefix(secret),
            last4=keyfmt.last4(secret),
            name=check_name(name),
            scopes=granted,
            org=org_ or "default",
            owner=owner,
            kind=kind,
            type=type,
            plan=plan,
            rate_limit=check_rate_limit(rate_limit),
            allowed_origins=origins,
            allowed_ips=check_allowed_ips(allowed_ips),
            restrictions=embed_only,
            metadata=check_metadata(metadata),
            created_by=check_ident(created_by, "created_by", optional=True),
            created_at=now,
            expires_at=None if days is None else now + timedelta(days=days),
        )
        return secret, record

    def _check_ceiling(self, key_type: str, scopes: Sequence[str]) -> None:
        """Refuse scopes whose effective grant passes the key type's ``max_scopes``.

        The one check behind every way scopes are set (create, import and
        update; from Python, the CLI and the management API), so no door
        can skip it. ``implies`` counts: ``reports:read`` implying
        ``reports:export`` is past a ``*:read`` ceiling.
        """
        type_cfg = self._ks.config.key_types.get(key_type)
        if type_cfg is None or not type_cfg.max_scopes:
            return
        over = self._ks.scopes.over_ceiling(scopes, type_cfg.max_scopes)
        if over:
            named = []
            for scope, reached in over.items():
                more = [g for g in reached if g != scope]
                named.append(f"{scope} (which grants {', '.join(more)})" if more else scope)
            raise KeyInputError(
                f"{key_type} keys may hold at most {', '.join(type_cfg.max_scopes)}; "
                f"not {'; '.join(named)}",
                field="scopes",
            )

    def _create(self, name: Any, **options: Any) -> Flow[NewKey]:
        secret, record = self._build(name, **options)
        yield StoreCall("insert", (record, record.created_at))
        self._ks.emit("key.created", record)
        return NewKey(secret, record)

    def _import(
        self,
        name: Any,
        hash: str,
        lookup_prefix: str,
        *,
        expires_at: datetime | None = None,
        **options: Any,
    ) -> Flow[KeyRecord]:
        if expires_at is not None and options.get("expires_in_days") is not None:
            raise KeyInputError("give expires_at or expires_in_days, not both", field="expires_at")
        _, record = self._build(name, **options)
        if not isinstance(lookup_prefix, str) or not lookup_prefix:
            raise KeyInputError("an imported key needs its lookup prefix", field="lookup_prefix")
        try:
            hash = keyfmt.imported_hash(hash)
        except ValueError as exc:
            raise KeyInputError(str(exc), field="hash") from None
        record = record.replace(
            digest=None,
            imported_hash=hash,
            lookup_prefix=lookup_prefix,
            prefix=lookup_prefix[: keyfmt.DISPLAY_PREFIX_LENGTH],
            last4="",
            expires_at=_import_expiry(expires_at, record.created_at, record.expires_at),
        )
        yield StoreCall("insert", (record, record.created_at))
        self._ks.emit("key.imported", record)
        return record

    def _list(self, org: str | None) -> Flow[KeyList[KeyRecord]]:
        records: KeyList[KeyRecord] = yield StoreCall("list", (org, self._ks.now()))
        return records

    def _list_all(self, org: str | None) -> Flow[KeyList[KeyRecord]]:
        records: KeyList[KeyRecord] = yield StoreCall("list_all", (org,))
        return records

    def _get(self, key_id: str) -> Flow[KeyRecord]:
        record: KeyRecord | None = yield StoreCall("get", (key_id,))
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        return record

    def _update(self, key_id: str, **changes: Any) -> Flow[KeyRecord]:
        checks: dict[str, Callable[[Any], Any]] = {
            "name": check_name,
            "scopes": check_scopes,
            "rate_limit": check_rate_limit,
            "plan": lambda p: check_ident(p, "plan", optional=True),
            "metadata": check_metadata,
            "allowed_origins": check_origins,
            "allowed_ips": check_allowed_ips,
            "expires_in_days": check_days,
        }
        unknown = set(changes) - set(checks)
        if unknown:
            raise KeyInputError(
                f"cannot update {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
            )
        values = {name: checks[name](value) for name, value in changes.items()}
        plans = self._ks.config.limits.plans
        if values.get("plan") is not None and plans and values["plan"] not in plans:
            # As create refuses it: a plan the config lacks would silently get no limit.
            raise KeyInputError(
                f"unknown plan {values['plan']!r}; the config knows {sorted(plans)}", field="plan"
            )
        now = self._ks.now()
        current = yield from self._get(key_id)
        if not current.is_active(now):
            raise KeyNotFound(f"key {key_id!r} is revoked or expired")
        if "expires_in_days" in values:
            # Counted from now, as on create: the key's new lifetime, not an extension.
            days = values.pop("expires_in_days")
            values["expires_at"] = None if days is None else now + timedelta(days=days)
        if "scopes" in values:
            # Before the store call: a refused update changes nothing.
            self._check_ceiling(current.type, values["scopes"])
        record: KeyRecord = yield StoreCall("update", (key_id, values))
        self._ks.forget(record)
        event = "key.scopes_changed" if "scopes" in values else "key.updated"
        self._ks.emit(event, record, reason="changed " + ",".join(sorted(values)))
        return record

    def _revoke(self, key_id: str) -> Flow[KeyRecord]:
        record: KeyRecord | None = yield StoreCall("revoke", (key_id, self._ks.now()))
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        self._ks.forget(record)
        self._ks.emit("key.revoked", record)
        return record

    def _revoke_many(self, key_ids: Sequence[str], reason: str) -> Flow[KeyList[KeyRecord]]:
        """Revoke many keys in one store call (a leak report's batch); as ``_revoke`` each."""
        records: KeyList[KeyRecord] = yield StoreCall(
            "revoke_many", (list(key_ids), self._ks.now())
        )
        for record in records:
            self._ks.forget(record)
            self._ks.emit("key.revoked", record, reason=reason)
        return records

    def _revoke_user(self, org: str, user: str) -> Flow[KeyList[str]]:
        check_ident(org, "org")
        check_ident(user, "user")
        ids: KeyList[str] = yield StoreCall("revoke_user", (org, user, self._ks.now()))
        for key_id in ids:
            self._ks.forget_id(key_id)
        self._ks.emit("key.user_revoked", None, org=org, reason=f"user {user}: {len(ids)} keys")
        return ids

    def _rotate(self, key_id: str, grace: str | float | None) -> Flow[NewKey]:
        seconds = check_grace(grace)
        old = yield from self._get(key_id)
        now = self._ks.now()
        if not old.is_active(now):
            raise KeyNotFound(f"key {key_id!r} is revoked or expired")
        secret = self._ks.formats[old.type].generate()
        new = old.replace(
            id=keyfmt.new_key_id(),
            digest=self._ks.digest(secret),
            prefix=keyfmt.display_prefix(secret),
            last4=keyfmt.last4(secret),
            created_at=now,
            last_used_at=None,
            revoked_at=None,
            rotated_from=old.id,
            imported_hash=None,
            lookup_prefix=None,
        )
        updated: KeyRecord | None = yield StoreCall(
            "rotate", (old.id, new, now + timedelta(seconds=seconds), now)
        )
        if updated is None:
            raise KeyNotFound(f"key {key_id!r} is revoked or expired")
        self._ks.forget(updated)
        self._ks.emit("key.rotated", new, reason=f"from {old.id}")
        return NewKey(secret, new)


def _import_expiry(expires_at: Any, now: datetime, default: datetime | None) -> datetime | None:
    """The old system's expiry, to the instant (not rounded to whole days).

    Unbounded by ``expires_in_days``'s 365: the old system promised it. A
    naive time is refused rather than guessed at; a past one would import
    a key that is dead on arrival.
    """
    if expires_at is None:
        return default
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        raise KeyInputError("expires_at must be a timezone-aware datetime", field="expires_at")
    if expires_at <= now:
        raise KeyInputError("expires_at is already past", field="expires_at")
    return expires_at.astimezone(timezone.utc)


async def _flushed(engine: Keystile) -> None:
    """Write this process's pending counts without blocking the event loop."""
    import anyio.to_thread

    await anyio.to_thread.run_sync(engine.flush)
