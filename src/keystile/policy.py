"""The compiled request policy: everything a decision reads, built once from a config.

``Policy.compile`` turns a validated ``Config`` and the digest function into
the one object that ``pipeline.decide`` reads: the route table, the key
formats, the scope algebra, the limits and what each key record works out
to (its principal, its limits per route). It is built once per engine and
never changed; its memos only remember answers that follow from it, so two
requests never see two policies. The decision imports this module, never the
engine: the engine builds the policy and performs the effects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keystile.config import Config, RouteConfig
from keystile.keys import KeyFormat
from keystile.limiting import LimitCall, LimitSpec, specs_for_key
from keystile.principal import Principal
from keystile.routes import RouteMatch, RouteTable
from keystile.sansio import Network, RequestView, routed_path
from keystile.scopes import ScopePolicy
from keystile.stores.base import KeyRecord

__all__ = ["KeyContext", "Policy", "Principal"]

MAX_GRANT_SETS = 4096  # distinct scope lists remembered with their closure
MAX_ROUTED = 4096  # distinct request targets remembered with their rule
MAX_ROUTED_PATH = 512  # bytes: longer paths are routed afresh (memory stays ~2 MB)

# What ``Policy.route`` answers: the method routed on (None: a path to refuse)
# and the rule's match.
Routed = tuple[str | None, RouteMatch | None]


@dataclass(slots=True)
class KeyContext:
    """What the policy works out from one key record, once per record.

    The policy keeps one per cached ``KeyRecord`` object, so a key that
    changes (a new record) gets a new context: the principal the app sees,
    whether the key's type binds it to origins, and its limits per route.
    """

    record: KeyRecord
    principal: Principal
    origin_bound: bool
    limit_calls: dict[int, LimitCall] = field(default_factory=dict)  # by id() of the rule
    # The key's allowed_ips, parsed once; empty: any address.
    networks: tuple[Network, ...] = ()
    # By id() of the rule: the scopes the key lacks there, and its limits
    # guarded by the last address's failed-auth budget (that budget, the call).
    missing: dict[int, tuple[str, ...]] = field(default_factory=dict)
    guarded: dict[int, tuple[tuple[LimitSpec, ...], LimitCall]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Policy:
    """What a request is judged against; build it with ``Policy.compile``.

    Read-only once built. ``grants_of`` and ``context`` remember their
    answers (bounded), which follow from the policy and the record alone.
    """

    config: Config
    routes: RouteTable
    scopes: ScopePolicy
    formats: Mapping[str, KeyFormat]
    # The stored form of a secret (HMAC-SHA256 keyed by the pepper).
    digest: Callable[[str], str] = field(repr=False)
    # Whether the limiter takes back a unit (``LimitCall.refund``): the exact
    # failed-auth budget spends before a lookup only where it can.
    refunds: bool
    imports_enabled: bool
    rule_ids: Mapping[int, int] = field(repr=False)  # id() of a rule -> its index
    _grants: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict, repr=False)
    _contexts: dict[int, KeyContext] = field(default_factory=dict, repr=False)
    _routed: dict[tuple[Any, ...], Routed] = field(default_factory=dict, repr=False)

    @classmethod
    def compile(cls, config: Config, digest: Callable[[str], str], *, refunds: bool) -> Policy:
        return cls(
            config=config,
            routes=config.route_table,
            scopes=config.scope_policy,
            formats={
                name: KeyFormat(t.prefix, t.alphabet, t.length, t.checksum)
                for name, t in config.key_types.items()
            },
            digest=digest,
            refunds=refunds,
            imports_enabled=config.imported_keys,
            rule_ids={id(rule): i for i, rule in enumerate(config.routes)},
        )

    # -- credentials ------------------------------------------------------------------

    def key_type_of(self, credential: str) -> str | None:
        """The key type whose format ``credential`` has (checksum included), or None."""
        for name, fmt in self.formats.items():
            if credential.startswith(fmt.prefix) and fmt.matches(credential):
                return name
        return None

    def has_own_prefix(self, credential: str) -> bool:
        """Whether ``credential`` starts like one of this config's key types."""
        return any(credential.startswith(fmt.prefix) for fmt in self.formats.values())

    def import_lookup_prefix(self, credential: str) -> str | None:
        """The public part of an imported key, used to find it.

        ``prefix.secret`` (djangorestframework-api-key) gives ``prefix``;
        ``kg_prefix_secret`` (fastapi-keygate) gives ``kg_prefix``.
        """
        keygate = _KEYGATE.fullmatch(credential)
        if keygate is not None:
            return f"kg_{keygate.group(1)}"
        lookup, dot, rest = credential.partition(".")
        if not dot or not lookup or not rest or len(lookup) > 64:
            return None
        return lookup

    # -- the route -----------------------------------------------------------------------

    def route(self, view: RequestView) -> Routed:
        """``(None, None)`` for a path to refuse (400), else ``(method, the rule's match)``.

        ``method`` is the one routed on: GET for HEAD and websockets. The
        answer follows from the method and the target alone, and clients
        repeat their targets, so it is remembered (bounded): the
        normalization and the table walk run once per distinct target.
        """
        target = (
            view.method,
            view.websocket,
            view.path,
            view.path_encoded,
            view.root_path,
            view.raw_uri,
        )
        routed = self._routed.get(target)
        if routed is None:
            path = routed_path(view)
            if path is None:
                routed = (None, None)
            else:
                method = "GET" if view.websocket or view.method == "HEAD" else view.method
                routed = (method, self.routes.match(method, path))
            if len(view.path) <= MAX_ROUTED_PATH:  # a long target is no repeat caller's
                if len(self._routed) >= MAX_ROUTED:
                    self._routed.clear()
                self._routed[target] = routed
        return routed

    # -- what a key record works out to ----------------------------------------------------

    def grants_of(self, scopes: tuple[str, ...]) -> frozenset[str]:
        """The closure of a key's scopes through ``implies``."""
        grants = self._grants.get(scopes)
        if grants is None:
            if len(self._grants) >= MAX_GRANT_SETS:
                self._grants.clear()
            grants = self._grants[scopes] = self.scopes.expand(scopes)
        return grants

    def context(self, record: KeyRecord) -> KeyContext:
        """What a decision derives from ``record``, worked out once per record object.

        The cache hands out the same record object until the key changes or
        its entry expires, so this is one dict lookup on a cache hit. The
        context holds the record, so its ``id()`` cannot be reused while the
        entry lives.
        """
        context = self._contexts.get(id(record))
        if context is not None and context.record is record:
            return context
        if len(self._contexts) >= self.config.cache_size:
            self._contexts.clear()
        key_type = self.config.key_types[record.type]
        grants = self.grants_of(record.scopes)
        principal = Principal.of(record, self.scopes, grants)
        if key_type.max_scopes:
            # Defence in depth for rows past the ceiling (written before it was
            # enforced, or by hand): the key gets only what both grant.
            clamped = self.scopes.clamp(grants, key_type.max_scopes)
            if clamped is not grants:
                kept = tuple(s for s in record.scopes if self.scopes.grants(clamped, s))
                principal = Principal.of(record.replace(scopes=kept), self.scopes, clamped)
        networks = tuple(ipaddress.ip_network(cidr) for cidr in record.allowed_ips)
        context = self._contexts[id(record)] = KeyContext(
            record, principal, key_type.origin_bound, networks=networks
        )
        return context

    def limit_call(self, rule: RouteConfig | None, context: KeyContext) -> LimitCall:
        """Every limit of a request by ``context``'s key on ``rule``, as one call."""
        call = context.limit_calls.get(id(rule))
        if call is None:
            rule_id = self.rule_ids.get(id(rule), 0)
            specs = specs_for_key(self.config, rule, rule_id, context.record)
            call = context.limit_calls[id(rule)] = LimitCall(specs)
        return call

    def guarded_call(
        self, rule: RouteConfig | None, context: KeyContext, guard: tuple[LimitSpec, ...]
    ) -> LimitCall:
        """``limit_call``, admitted only while ``guard`` (an address's budget) has room.

        The budget of one address is one memoized tuple (``failed_auth_specs``),
        so a key calling from the same address again reuses its call.
        """
        last = context.guarded.get(id(rule))
        if last is not None and last[0] is guard:
            return last[1]
        call = LimitCall(self.limit_call(rule, context).specs, guard=guard)
        context.guarded[id(rule)] = (guard, call)
        return call

    def missing_scopes(self, rule: RouteConfig, context: KeyContext) -> tuple[str, ...]:
        """The scopes ``rule`` requires that ``context``'s key lacks (none: empty)."""
        missing = context.missing.get(id(rule))
        if missing is None:
            grants = context.principal.grants
            missing = self.scopes.missing(grants, rule.scopes, rule.scopes_any)
            context.missing[id(rule)] = missing
        return missing


_KEYGATE = re.compile(r"kg_([0-9a-f]{1,32})_[A-Za-z0-9_-]+")
