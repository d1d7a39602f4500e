"""``Principal``: the authenticated key, as the app sees it.

A module of its own, kept out of the compiled build (docs/performance.md):
it is the one keystile object an app holds on to, and a compiled frozen
dataclass refuses ``copy.copy`` (it is rebuilt through its frozen
``__setattr__``) and subclasses written in Python. Built once per key
record, it costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keystile.scopes import ScopePolicy
from keystile.stores.base import KeyRecord

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    """The authenticated key, as the app sees it: read-only, never the secret.

    ``request.state.api_key`` (ASGI) or ``environ["keystile.api_key"]`` (WSGI).
    """

    id: str
    name: str
    org: str
    owner: str | None
    kind: str
    type: str
    scopes: tuple[str, ...]
    plan: str | None
    prefix: str
    metadata: Mapping[str, Any] = field(compare=False)
    expires_at: datetime | None = None
    policy: ScopePolicy | None = field(default=None, repr=False, compare=False)
    grants: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def missing_scopes(self, *required: str) -> tuple[str, ...]:
        """The scopes in ``required`` this key lacks (``implies`` and wildcards counted)."""
        if self.policy is None:
            return tuple(s for s in required if s not in self.scopes)
        return self.policy.missing(self.grants, required, ())

    def has_scopes(self, *required: str) -> bool:
        """Whether the key holds every scope in ``required``."""
        return not self.missing_scopes(*required)

    @classmethod
    def of(
        cls,
        record: KeyRecord,
        policy: ScopePolicy | None = None,
        grants: frozenset[str] = frozenset(),
    ) -> Principal:
        return cls(
            id=record.id,
            name=record.name,
            org=record.org,
            owner=record.owner,
            kind=record.kind,
            type=record.type,
            scopes=record.scopes,
            plan=record.plan,
            prefix=record.prefix,
            metadata=record.metadata,
            expires_at=record.expires_at,
            policy=policy,
            grants=grants,
        )
