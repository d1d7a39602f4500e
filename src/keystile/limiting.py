"""Which limits apply to a request, and what to report about them.

The policy half (this module's functions) is pure: it turns a matched rule
and a key into ``LimitSpec`` values, and a ``LimitResult`` into headers. The
limiter backends that count (``keystile.limiter``) answer ``LimitCall``
effects with a ``LimitResult``: all the limits of a request are checked and
spent together, all or nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import limits
from limits import RateLimitItem

from keystile.config import Config, RouteConfig
from keystile.stores.base import KeyRecord

__all__ = [
    "LimitCall",
    "LimitResult",
    "LimitSpec",
    "LimitState",
    "failed_auth_specs",
    "parse_limits",
    "rate_limit_headers",
    "retry_after",
    "specs_for_key",
]


@dataclass(frozen=True)
class LimitSpec:
    """One limit to count: the item (``100/minute``), whose bucket, and its kind.

    ``shard`` groups the limits that are counted together: every limit of
    one request shares it (the key's org, or the failed-auth address), so a
    Redis Cluster can keep them in one hash slot and spend them in one
    atomic script while different orgs spread over the cluster. It defaults
    to the bucket itself.
    """

    item: RateLimitItem
    bucket: str  # e.g. "key:key_abc", "org:acme", "route:12:key_abc", "auth:10.0.0.1"
    kind: str  # "route" | "key" | "org" | "plan" | "failed_auth"
    shard: str = ""
    window: float = field(init=False, repr=False, compare=False)
    amount: int = field(init=False, repr=False, compare=False)
    counter: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Seconds per window and requests per window, read once: the
        # limiters need them on every call.
        object.__setattr__(self, "window", float(self.item.get_expiry()))
        object.__setattr__(self, "amount", int(self.item.amount))
        # One bucket may carry several limits ("10/second;1000/hour"): each
        # counts on its own, under the bucket and its own amount and window.
        object.__setattr__(self, "counter", f"{self.bucket}:{self.amount}/{self.window:g}")

    @property
    def slot_tag(self) -> str:
        return self.shard or self.bucket


@dataclass(slots=True)
class LimitState:
    """One limit after a call: what is left, when the window frees up, and
    whether it refuses (nothing left).

    Made on every counted request, so a plain slotted class: a frozen
    dataclass pays ``object.__setattr__`` per field. Treat it as read-only.
    """

    spec: LimitSpec
    remaining: int
    reset: float  # Unix seconds when the window frees up
    exceeded: bool

    @property
    def limit(self) -> int:
        return self.spec.amount


@dataclass(slots=True)
class LimitResult:
    """The answer to a ``LimitCall``: admitted or not, and every limit's state
    as of the same instant (so the headers describe what was decided)."""

    admitted: bool
    states: tuple[LimitState, ...]
    # Refused by a guard of the call (``LimitCall.guard``): ``states`` then
    # holds the guards' states, and nothing was spent.
    guarded: bool = False

    def tightest(self) -> LimitState | None:
        """The state to report.

        Admitted: the limit with the fewest requests remaining, ties to the
        later reset. Refused: among the limits that refused, the one with
        the longest wait.
        """
        states = self.states
        if not states:
            return None
        if self.admitted:
            best = states[0]
            for state in states[1:]:
                if state.remaining < best.remaining or (
                    state.remaining == best.remaining and state.reset > best.reset
                ):
                    best = state
            return best
        refused = [s for s in states if s.exceeded] or list(states)
        return max(refused, key=lambda s: s.reset)


class LimitCall:
    """The effect a pipeline yields: count (``hit``) or only look (``peek``).

    Besides the limits it counts (``specs``, all or nothing), a call may
    carry, answered in the same atomic step and round trip:

    - ``guard``: limits that must have room for the call to be admitted,
      but are never spent (the failed-auth budget of a caller whose key
      the cache vouched for);
    - ``refund``: limits that get one request back, whatever the answer
      (the failed-auth unit spent before a lookup that found a valid key).

    Treat it as read-only: the engine keeps one per key and route. A plain
    slotted class, as it is built per request when a guard or refund rides
    along (a frozen dataclass pays ``object.__setattr__`` per field).
    """

    __slots__ = ("empty", "guard", "peek", "refund", "specs")

    def __init__(
        self,
        specs: tuple[LimitSpec, ...],
        peek: bool = False,
        guard: tuple[LimitSpec, ...] = (),
        refund: tuple[LimitSpec, ...] = (),
    ) -> None:
        self.specs = specs
        self.peek = peek
        self.guard = guard
        self.refund = refund
        # Nothing to count, guard or give back: no need to ask the limiter.
        self.empty = not (specs or guard or refund)

    def __repr__(self) -> str:
        return (
            f"LimitCall(specs={self.specs!r}, peek={self.peek}, guard={self.guard!r}, "
            f"refund={self.refund!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LimitCall):
            return NotImplemented
        return (self.specs, self.peek, self.guard, self.refund) == (
            other.specs,
            other.peek,
            other.guard,
            other.refund,
        )

    __hash__ = None  # type: ignore[assignment]


@lru_cache(maxsize=1024)
def parse_limits(text: str) -> tuple[RateLimitItem, ...]:
    """``"10/second;100/hour"`` as limit items (validated config strings only)."""
    return tuple(limits.parse_many(text))


def specs_for_key(
    config: Config, rule: RouteConfig | None, rule_id: int, record: KeyRecord
) -> tuple[LimitSpec, ...]:
    """Every limit that counts a request by ``record`` on ``rule``.

    - the route's own ``limit``, per key;
    - the key's ``rate_limit``, else the config's ``limits.key``;
    - ``limits.plans[plan]`` for the key's plan, per key;
    - ``limits.org`` (or the org's override, ``ks.limits``), shared by every
      key of the org.
    """
    specs: list[LimitSpec] = []
    shard = f"org:{record.org}"  # a key never leaves its org: one slot per org
    if rule is not None and rule.limit:
        specs += [
            LimitSpec(i, f"route:{rule_id}:{record.id}", "route", shard)
            for i in parse_limits(rule.limit)
        ]
    own = record.rate_limit or config.limits.key
    if own:
        specs += [LimitSpec(i, f"key:{record.id}", "key", shard) for i in parse_limits(own)]
    plan = config.limits.plans.get(record.plan) if record.plan else None
    if plan:
        specs += [
            LimitSpec(i, f"plan:{record.plan}:{record.id}", "plan", shard)
            for i in parse_limits(plan)
        ]
    org_limit = record.org_limit or config.limits.org  # an override replaces limits.org
    if org_limit:
        specs += [LimitSpec(i, f"org:{record.org}", "org", shard) for i in parse_limits(org_limit)]
    return tuple(specs)


def failed_auth_specs(config: Config, address: str | None) -> tuple[LimitSpec, ...]:
    """``limits.failed_auth`` for one client address (counted on each 401).

    None for a caller with no address (a Unix socket peer): it is never put
    in a bucket shared with other clients, so it has no budget at all.
    """
    if not config.limits.failed_auth or address is None:
        return ()
    return _failed_auth_specs(config.limits.failed_auth, address)


@lru_cache(maxsize=4096)
def _failed_auth_specs(text: str, address: str) -> tuple[LimitSpec, ...]:
    # Memoized: asked on every request that names a key, and a ``LimitSpec``
    # costs a microsecond to build; the addresses of recent callers repeat.
    return tuple(
        LimitSpec(i, f"auth:{address}", "failed_auth", f"auth:{address}")
        for i in parse_limits(text)
    )


def retry_after(state: LimitState, now: float | None = None) -> int:
    """Whole seconds until the refusing window frees up; at least 1."""
    wait = state.reset - (time.time() if now is None else now)
    return max(1, math.ceil(wait))


def rate_limit_headers(
    result: LimitResult, styles: Sequence[str], now: float | None = None
) -> list[tuple[str, str]]:
    """``X-RateLimit-*`` (and IETF ``RateLimit``/``RateLimit-Policy``) of the tightest limit."""
    state = result.tightest()
    if state is None:
        return []
    remaining = str(state.remaining) if state.remaining > 0 else "0"
    headers: list[tuple[str, str]] = []
    if "x-ratelimit" in styles:
        headers += [
            ("X-RateLimit-Limit", str(state.spec.amount)),
            ("X-RateLimit-Remaining", remaining),
            ("X-RateLimit-Reset", str(math.ceil(state.reset))),
        ]
    if "ietf" in styles:
        # draft-ietf-httpapi-ratelimit-headers: a named policy and its state.
        now = time.time() if now is None else now
        window = int(state.spec.window)
        reset_in = max(0, math.ceil(state.reset - now))
        name = state.spec.kind
        headers += [
            ("RateLimit-Policy", f'"{name}";q={state.spec.amount};w={window}'),
            ("RateLimit", f'"{name}";r={remaining};t={reset_in}'),
        ]
    if not result.admitted:
        headers.append(("Retry-After", str(retry_after(state, now))))
    return headers
