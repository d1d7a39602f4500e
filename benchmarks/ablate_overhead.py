"""Where keystile's per-request time goes, measured in the request's own flow.

Timing a part on its own in a loop flatters it: everything it touches stays
hot. This tool instead runs the realistic ASGI request of
``bench_overhead.py`` (failed-auth on, key and org limits on the
sliding-window counter of ``memory://``, a cached key) and replaces one part
after another with a stand-in that returns the answer it gave; the overhead
that each replacement removes is what that part costs inside a real request.
The parts are replaced cumulatively, in the order below; what is left at the
end is the plumbing (the door, the flow's generator and drivers, the
decision's own lines). Run:

    python benchmarks/ablate_overhead.py [--requests 20000] [--rounds 5]

The stand-ins are monkeypatches of this process only; the figures are a
profile, not a speed claim: the claims are ``bench_overhead.py``'s ratios.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

from bench_overhead import (
    REALISTIC,
    _time_asgi,
    bare_asgi,
    keystile_build,
    request_of,
    starlette_hello,
)

import keystile.asgi as asgi_door
import keystile.pipeline as pipeline
from keystile import Keystile
from keystile.asgi import KeystileMiddleware, view_from_scope
from keystile.limiting import LimitCall, failed_auth_specs, rate_limit_headers
from keystile.sansio import RequestView


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = args.requests, args.rounds
    if keystile_build() != "pure Python":
        # Compiled modules call each other directly: a stand-in set on a
        # module would never be called, and every part would cost nothing.
        raise SystemExit("ablate_overhead.py needs the pure-Python build (the editable install)")

    tmp = tempfile.TemporaryDirectory()
    config = {**REALISTIC, "store": f"sqlite:///{tmp.name}/keys.db", "cache": {"ttl": "1h"}}
    ks = Keystile(config, pepper=b"bench-pepper-0123456789abcdef")
    secret = ks.keys.create(name="bench", scopes=["events:read"], org="acme").secret
    scope, _ = request_of(secret)
    app = KeystileMiddleware(bare_asgi, ks)
    _time_asgi(app, scope, 200)  # warm: the key is cached, the route remembered

    policy, lookups, limiter = ks.policy, ks.lookups, ks.limiter
    view = view_from_scope(scope)
    routed = policy.route(view)
    cred = pipeline.read_credential(view, ks.config.credentials)
    assert cred is not None
    digest = policy.digest(cred.value)
    now = lookups.clock()
    auth = failed_auth_specs(ks.config, "127.0.0.1")
    record = lookups.cache.get(digest)
    context = policy.context(record)  # type: ignore[arg-type]
    limits = policy.limit_call(routed[1].rule if routed[1] else None, context)
    result = limiter.hit_all(LimitCall(limits.specs, guard=auth))
    headers = rate_limit_headers(result, ks.config.limiter.headers)

    def set_(target: Any, name: str, value: Any) -> None:
        if isinstance(target, type):
            setattr(target, name, value)
        else:
            object.__setattr__(target, name, value)  # frozen Policy included

    parts: list[tuple[str, Callable[[], None]]] = [
        ("building the request view", lambda: set_(asgi_door, "view_from_scope", lambda s: view)),
        ("route (remembered)", lambda: set_(policy, "route", lambda v: routed)),
        ("client address", lambda: set_(pipeline, "client_address", lambda *a, **k: "127.0.0.1")),
        (
            "reading the credential",
            lambda: set_(pipeline, "read_credential", lambda *a, **k: cred),
        ),
        ("HMAC digest", lambda: set_(policy, "digest", lambda s: digest)),
        ("clock", lambda: set_(lookups, "clock", lambda: now)),
        ("type, org and scope rules", lambda: set_(pipeline, "_key_refusal", lambda *a: None)),
        ("limiter (3 limits)", lambda: set_(limiter, "hit_all", lambda call: result)),
        ("rate-limit headers", lambda: set_(pipeline, "rate_limit_headers", lambda r, s: headers)),
        ("usage count", lambda: set_(ks, "count_use", lambda *a: None)),
        ("last_used_at note", lambda: set_(ks._last_used, "note", lambda *a: None)),
        (
            "reserved-header check",
            lambda: set_(RequestView, "has_reserved_headers", lambda v: False),
        ),
    ]

    def overhead() -> float:
        best = min(_time_asgi(app, scope, n) for _ in range(rounds))
        bare = min(_time_asgi(bare_asgi, scope, n) for _ in range(rounds))
        return (best - bare) * 1e6

    hello = starlette_hello()
    yardstick = min(_time_asgi(hello, scope, n) for _ in range(rounds)) * 1e6
    total = last = overhead()
    print(f"yardstick: bare Starlette hello-world, {yardstick:.2f} µs per request in process")
    print(f"{'part replaced (cumulative)':<30}{'overhead µs':>12}{'part µs':>9}{'share':>7}")
    print(f"{'(none)':<30}{total:>12.2f}")
    for name, replace in parts:
        replace()
        now_overhead = overhead()
        part = last - now_overhead
        print(f"{name:<30}{now_overhead:>12.2f}{part:>9.2f}{part / total:>7.0%}")
        last = now_overhead
    print(f"{'what is left: the plumbing':<30}{last:>12.2f}{'':>9}{last / total:>7.0%}")
    ks.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
