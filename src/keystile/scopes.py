"""The scope algebra: what a key's scopes grant, and nothing more.

A scope is ``resource:action`` (``events:read``) or a bare word (``admin``),
case-sensitive. A key may also hold a pattern:

* ``*`` grants every scope, destructive ones included;
* ``resource:*`` grants every ``resource:<action>``, but not the bare
  ``resource`` and never a destructive scope;
* ``*:action`` grants every ``<resource>:action``, never a destructive scope.

Everything else is an exact, case-sensitive comparison: ``events`` does not
grant ``events:read``, nor ``events:read`` grant ``events``, nor
``Events:read`` grant ``events:read``. Near misses never grant, because a
scope check that "mostly matches" is an authorization bypass.

Destructive scopes (``servers:delete``) are granted only by their exact name
or by ``*``, whether held by the key or reached through ``implies``
(``admin: ["*"]`` makes ``admin`` grant everything). Presets never hand out a
destructive scope, nor a scope that implies one.

Usage::

    policy = ScopePolicy(implies={"events:write": ["events:read"]},
                         destructive=["servers:delete"])
    closure = policy.expand(principal_scopes)          # once per verified key
    policy.missing(closure, ["events:read"], [])        # () means authorized
    policy.over_ceiling(["events:write"], ["*:read"])   # what passes a key type's max_scopes

Security caveat: :meth:`ScopePolicy.grants` expects ``required`` to be a
concrete scope (the config refuses wildcards in a route's requirements); a
required pattern is only ever granted by the identical string or by ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from keystile.errors import KeyInputError

if TYPE_CHECKING:
    from keystile.config import ScopesConfig

__all__ = ["WILDCARD", "ScopePolicy", "find_cycle", "is_pattern", "is_well_formed"]

WILDCARD = "*"
"""The scope that grants every scope, destructive ones included."""

_PART = r"[A-Za-z0-9_.-]+"
_CONCRETE = re.compile(rf"{_PART}(?::{_PART})?")
# `*:*` is deliberately not a pattern: it would read as "every resource:action"
# yet differ from `*` on bare words, and one spelling for "everything" is enough.
_PATTERN = re.compile(rf"\*|{_PART}:\*|\*:{_PART}")


def is_well_formed(scope: str, *, allow_wildcards: bool = True) -> bool:
    """Tell whether ``scope`` is a valid scope (or, if allowed, scope pattern).

    Concrete scopes are ``word`` or ``word:word`` where a word is made of
    ``A-Z a-z 0-9 _ . -``. Patterns are ``*``, ``resource:*`` and ``*:action``.
    ``fullmatch`` is used so that a trailing newline cannot sneak through.
    """
    if not isinstance(scope, str):
        return False
    if _CONCRETE.fullmatch(scope):
        return True
    return allow_wildcards and _PATTERN.fullmatch(scope) is not None


def is_pattern(scope: str) -> bool:
    """Tell whether ``scope`` contains a wildcard (and so names no one scope)."""
    return WILDCARD in scope


class ScopePolicy:
    """The scope rules of one config: implications, presets, destructive scopes.

    Built once (usually by :func:`keystile.config.load_config`, available as
    ``Config.scope_policy``) and then queried on every request, so everything
    that can be is computed here: each ``implies`` entry's transitive closure
    and each preset's concrete scopes.

    ``known`` is the set of concrete scopes the application knows about; it is
    what a preset's wildcards expand to (``full: ["*"]`` means "every known
    non-destructive scope", never a literal ``*``).

    Security caveat: ``expand`` must run on the key's scopes before
    ``grants``/``missing``; a closure that skipped ``implies`` under-grants,
    never over-grants.
    """

    __slots__ = ("_destructive", "_implied", "_known", "_presets")

    def __init__(
        self,
        implies: Mapping[str, Iterable[str]] | None = None,
        presets: Mapping[str, Iterable[str]] | None = None,
        destructive: Iterable[str] = (),
        known: Iterable[str] = (),
    ) -> None:
        graph = {key: tuple(values) for key, values in (implies or {}).items()}
        self._destructive = frozenset(destructive)
        self._implied: Mapping[str, frozenset[str]] = MappingProxyType(
            {key: _closure(graph, (key,)) for key in graph}
        )
        self._known = frozenset(s for s in known if not is_pattern(s))
        self._presets: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {name: self._expand_preset(entries) for name, entries in (presets or {}).items()}
        )

    @classmethod
    def from_config(cls, cfg: ScopesConfig, *, known: Iterable[str] = ()) -> ScopePolicy:
        """Build the policy of a ``scopes:`` section.

        ``known`` adds the concrete scopes named elsewhere in the config
        (``Config.known_scopes()``); the section's own concrete scopes are
        always known.
        """
        own = [*cfg.known, *cfg.destructive, *cfg.default, *cfg.implies]
        own += [s for values in cfg.implies.values() for s in values]
        own += [s for values in cfg.presets.values() for s in values]
        return cls(
            implies=cfg.implies,
            presets=cfg.presets,
            destructive=cfg.destructive,
            known=[*own, *known],
        )

    @property
    def destructive(self) -> frozenset[str]:
        """The scopes granted only by their exact name or by ``*``."""
        return self._destructive

    @property
    def known(self) -> frozenset[str]:
        """The concrete scopes presets expand to (destructive ones included)."""
        return self._known

    @property
    def presets(self) -> Mapping[str, tuple[str, ...]]:
        """Every preset name with the concrete scopes it stands for."""
        return self._presets

    def expand(self, granted: Iterable[str]) -> frozenset[str]:
        """Return ``granted`` plus everything it implies, transitively.

        The per-scope closures were computed once, with a visited set, so a
        cycle cannot loop here and the cost is one union per granted scope.
        """
        out: set[str] = set()
        implied = self._implied
        for scope in granted:
            out.add(scope)
            extra = implied.get(scope)
            if extra:
                out |= extra
        return frozenset(out)

    def grants(self, granted_closure: frozenset[str], required: str) -> bool:
        """Tell whether a closure (from :meth:`expand`) grants ``required``.

        Two set lookups at most for the wildcard forms, so the request path
        never scans the key's scopes.
        """
        if required in granted_closure or WILDCARD in granted_closure:
            return True
        if required in self._destructive:
            return False
        resource, sep, action = required.partition(":")
        if not sep or ":" in action or not resource or not action:
            # Bare words are granted by exact name (or `*`) only; malformed
            # names never reach a wildcard.
            return False
        return f"{resource}:*" in granted_closure or f"*:{action}" in granted_closure

    def missing(
        self,
        granted_closure: frozenset[str],
        all_of: Sequence[str],
        any_of: Sequence[str],
    ) -> tuple[str, ...]:
        """Return the required scopes the closure lacks; ``()`` means authorized.

        Each scope of ``all_of`` that is not granted is listed; if ``any_of``
        is non-empty and none of it is granted, all of ``any_of`` is listed
        (any one of them would do, so the caller should see the choice).
        """
        lacking = [s for s in all_of if not self.grants(granted_closure, s)]
        if any_of and not any(self.grants(granted_closure, s) for s in any_of):
            lacking.extend(s for s in any_of if s not in lacking)
        return tuple(lacking)

    def preset(self, name: str) -> tuple[str, ...]:
        """Return the concrete scopes of a preset.

        Raises :class:`~keystile.errors.KeyInputError` (``field="preset"``)
        for an unknown name, as the key API reports bad arguments.
        """
        try:
            return self._presets[name]
        except KeyError:
            choices = ", ".join(sorted(self._presets)) or "none defined"
            raise KeyInputError(
                f"unknown preset {name!r} (choose from: {choices})", field="preset"
            ) from None

    def is_destructive(self, scope: str) -> bool:
        """Tell whether ``scope`` is granted only by exact name or ``*``."""
        return scope in self._destructive

    def reaches_destructive(self, scope: str) -> bool:
        """Tell whether holding ``scope`` would grant a destructive scope.

        True for a destructive scope itself, for ``*``, and for any scope
        whose ``implies`` closure contains one of those.
        """
        closure = self._implied.get(scope, frozenset((scope,))) | {scope}
        return WILDCARD in closure or not closure.isdisjoint(self._destructive)

    def over_ceiling(
        self, granted: Iterable[str], ceiling: Iterable[str]
    ) -> dict[str, tuple[str, ...]]:
        """Each scope of ``granted`` whose effective grant reaches past ``ceiling``.

        A key type's ``max_scopes`` bounds what the key can *do*, so the test
        is on effective grants: each granted scope with all that ``implies``
        adds to it, wildcards included, against the ceiling's own closure
        (a key holding exactly ``max_scopes`` is within it). The answer maps
        the offending scope, as given, to the grants it reaches outside the
        ceiling, sorted; ``{}`` means within. Used by the key lifecycle on
        every create and update, whichever door the scopes came through.
        """
        bound = self.expand(ceiling)
        over: dict[str, tuple[str, ...]] = {}
        for scope in granted:
            outside = sorted(g for g in self.expand((scope,)) if not self._covers(bound, g))
            if outside:
                over[scope] = tuple(outside)
        return over

    def clamp(self, granted_closure: frozenset[str], ceiling: Iterable[str]) -> frozenset[str]:
        """The part of a closure that ``ceiling`` also grants.

        A scope is granted by the result exactly when both the closure and the
        ceiling's closure grant it. Keys are refused past their ceiling when
        scopes are set, but a row written before that check (or by hand)
        could still be past it; the engine clamps once per cached key, so a
        request never gets more than the ceiling either. The closure comes
        back unchanged (the same object) when it is already within.
        """
        bound = self.expand(ceiling)
        if all(self._covers(bound, g) for g in granted_closure):
            return granted_closure
        out: set[str] = set()
        for held in granted_closure:
            for allowed in bound:
                both = self._meet(held, allowed)
                if both is not None:
                    out.add(both)
        return frozenset(out)

    def _covers(self, bound: frozenset[str], scope: str) -> bool:
        # Whether every scope that `scope` grants is granted by `bound`. A
        # pattern grants scopes the config may add later, so only the same
        # pattern or `*` covers it: `*:read` covers neither `*` nor `events:*`.
        if not is_pattern(scope):
            return self.grants(bound, scope)
        return WILDCARD in bound or (scope != WILDCARD and scope in bound)

    def _meet(self, a: str, b: str) -> str | None:
        # The one scope (or pattern) granting exactly what both `a` and `b` grant.
        if a == b or b == WILDCARD:
            return a
        if a == WILDCARD:
            return b
        if not is_pattern(a):
            return a if self.grants(frozenset((b,)), a) else None
        if not is_pattern(b):
            return b if self.grants(frozenset((a,)), b) else None
        # Two distinct patterns meet only as `resource:*` with `*:action`, in
        # one scope that is not granted if destructive (neither pattern grants one).
        if a.endswith(":*") and b.startswith("*:"):
            both = f"{a[:-2]}:{b[2:]}"
        elif b.endswith(":*") and a.startswith("*:"):
            both = f"{b[:-2]}:{a[2:]}"
        else:
            return None
        return None if both in self._destructive else both

    def _expand_preset(self, entries: Iterable[str]) -> tuple[str, ...]:
        # A preset is a convenience for minting keys; letting it carry a
        # destructive scope (directly or through implies) would make "full"
        # quietly include "delete everything", which the SPEC forbids.
        out: dict[str, None] = {}
        for entry in entries:
            if entry == WILDCARD:
                matched = sorted(self._known)
            elif entry.startswith("*:"):
                action = entry[2:]
                matched = sorted(s for s in self._known if s.partition(":")[2] == action)
            elif entry.endswith(":*"):
                resource = entry[:-2]
                matched = sorted(
                    s for s in self._known if s.partition(":")[0] == resource and ":" in s
                )
            else:
                matched = [entry]
            for scope in matched:
                if not self.reaches_destructive(scope):
                    out[scope] = None
        return tuple(out)


def _closure(graph: Mapping[str, Sequence[str]], start: Iterable[str]) -> frozenset[str]:
    """Every scope reachable from ``start`` through ``graph`` (start included)."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        scope = stack.pop()
        if scope in seen:
            continue
        seen.add(scope)
        stack.extend(graph.get(scope, ()))
    return frozenset(seen)


def find_cycle(implies: Mapping[str, Sequence[str]]) -> tuple[str, ...] | None:
    """Return one cycle of ``implies`` (``("a", "b", "a")``), or ``None``.

    :meth:`ScopePolicy.expand` terminates on a cycle anyway; the config
    refuses one because ``a -> b -> a`` is almost always a typo.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in implies:
        if start in state:
            continue
        path = [start]
        iters = [iter(implies.get(start, ()))]
        state[start] = 1
        while iters:  # iterative depth-first search: a long chain cannot overflow
            implied = next(iters[-1], None)
            if implied is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(implied) == 1:
                return (*path[path.index(implied) :], implied)
            elif implied not in state:
                state[implied] = 1
                path.append(implied)
                iters.append(iter(implies.get(implied, ())))
    return None
