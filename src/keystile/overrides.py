"""``ks.limits``: an org's limit raised (or lowered) at runtime, without a deploy.

For the operator answering "need higher limits? contact us" (SPEC section
10). An override replaces ``limits.org`` for one organization. It is kept
in the key store, so it survives restarts and every process shares it; it
is audited; and it reaches requests as a revocation does. The store hands
it out with the key a request looks up (one join), so a process applies a
new override when its cached keys of that org expire (``cache.ttl``), and
within a second when it listens on the Redis invalidation channel, which
drops those keys everywhere at once.

    >>> ks.limits.set_override(org="acme", limit="100000/day")  # doctest: +SKIP
    >>> ks.limits.overrides()                                   # doctest: +SKIP
    {'acme': '100000/day'}
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import limits

from keystile._flow import adrive, drive
from keystile.errors import KeyInputError
from keystile.lifecycle import check_ident
from keystile.stores.base import StoreCall

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = ["LimitOverrides", "check_limit"]

Flow = Generator[StoreCall, Any, Any]


def check_limit(value: Any) -> str:
    """A limit string in the ``limits`` syntax (``100000/day``, ``10/second;1000/hour``)."""
    try:
        if not isinstance(value, str) or not value.strip() or not limits.parse_many(value):
            raise ValueError(value)
    except ValueError:
        raise KeyInputError(
            f"limit {value!r} is not a limit such as '100000/day'", field="limit"
        ) from None
    return value.strip()


class LimitOverrides:
    """``ks.limits``: per-org overrides of ``limits.org``, sync and async (``a``-prefixed)."""

    def __init__(self, engine: Keystile) -> None:
        self._ks = engine

    def __repr__(self) -> str:
        return f"LimitOverrides(store={self._ks.config.store!r})"

    def _run(self, flow: Flow) -> Any:
        store = self._ks.store
        return drive(flow, lambda call: store.execute(call.op, *call.args))

    async def _arun(self, flow: Flow) -> Any:
        store = self._ks.astore
        return await adrive(flow, lambda call: store.aexecute(call.op, *call.args))

    def set_override(self, *, org: str, limit: str) -> None:
        """Replace ``limits.org`` for ``org`` with ``limit``, in every process."""
        self._run(self._set(org, limit))

    async def aset_override(self, *, org: str, limit: str) -> None:
        await self._arun(self._set(org, limit))

    def clear_override(self, *, org: str) -> bool:
        """Go back to ``limits.org`` for ``org``; whether there was an override."""
        return bool(self._run(self._clear(org)))

    async def aclear_override(self, *, org: str) -> bool:
        return bool(await self._arun(self._clear(org)))

    def overrides(self) -> dict[str, str]:
        """Every override, org to limit, sorted by org."""
        return dict(self._run(self._list()))

    async def aoverrides(self) -> dict[str, str]:
        return dict(await self._arun(self._list()))

    # flows: one copy for both drivers
    def _set(self, org: Any, limit: Any) -> Flow:
        org_ = str(check_ident(org, "org"))  # refuses None: never "None"
        limit_ = check_limit(limit)
        yield StoreCall("set_override", (org_, limit_, self._ks.now()))
        self._ks.forget_org(org_)
        self._ks.emit("org.limit_override", None, org=org_, reason=f"org limit is {limit_}")

    def _clear(self, org: Any) -> Flow:
        org_ = str(check_ident(org, "org"))
        had: bool = yield StoreCall("clear_override", (org_,))
        if had:
            self._ks.forget_org(org_)
            self._ks.emit("org.limit_cleared", None, org=org_, reason="org limit from the config")
        return had

    def _list(self) -> Flow:
        found: dict[str, str] = yield StoreCall("overrides", ())
        return found
