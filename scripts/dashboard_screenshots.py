"""Take the screenshots of the key dashboard that README.md and docs/dashboard.md show.

    python scripts/dashboard_screenshots.py            # writes docs/images/dashboard-*.png

Serves the dashboard (ASGI door, uvicorn) on a free loopback port, with a
few keys and 30 days of made-up usage, and drives Debian's Chromium
(``/usr/bin/chromium``, or ``$CHROMIUM``) with Playwright. Run it again
whenever the pages change.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "scopes": {
        "implies": {"admin": ["*"], "events:write": ["events:read"]},
        "destructive": ["servers:delete", "backups:restore"],
        "known": [
            "events:read",
            "events:write",
            "results",
            "members:read",
            "servers:read",
            "servers:write",
            "backups:read",
        ],
    },
}


class Clock:
    """A clock the script moves, so that usage lands on past days."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def populate(ks: Any, clock: Clock) -> str:
    """A handful of keys as a real org would have them; returns the one to show."""
    today = clock.now
    rng = random.Random(7)
    made = []
    keys: list[tuple[str, int, dict[str, Any]]] = [
        ("Production backend", 120, {"preset": "full"}),
        ("CI upload", 45, {"scopes": ["results", "events:read"], "expires_in_days": 90}),
        ("Grafana", 200, {"preset": "read-only"}),
        ("Ops automation", 10, {"scopes": ["servers:read", "servers:delete"]}),
        ("Jamie's laptop", 3, {"scopes": ["events:read"], "user": "jamie"}),
    ]
    for name, days_ago, options in keys:
        clock.now = today - timedelta(days=days_ago)
        made.append(ks.keys.create(name=name, org="acme", created_by="alex", **options))
    main: str = made[1].id
    for back in range(29, -1, -1):
        clock.now = today - timedelta(days=back, hours=-1)
        base = 40 + 30 * (back % 7 in (1, 2)) + rng.randint(0, 25)
        for _ in range(base):
            ks.count_use(main, "/api/v1/events/{event_id}/results", 201)
        for _ in range(rng.randint(0, 6)):
            ks.count_use(main, "/api/v1/events/{event_id}/results", 403)
        if back in (4, 11):
            for _ in range(rng.randint(8, 20)):
                ks.count_use(main, "/api/v1/events/{event_id}/results", 429)
        for key in made[0], made[3]:
            for _ in range(rng.randint(5, 40)):
                ks.count_use(key.id, "/api/v1/events", 200)
        ks.note_use(main, clock.now)
        ks.note_use(made[0].id, clock.now)
        ks.note_use(made[3].id, clock.now)
    clock.now = today
    ks.flush()
    return main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def take(browser: Any, out: Path, *, more: bool = False) -> tuple[Path, Path]:
    """Serve the made-up org and screenshot its list and key pages into ``out``."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from keystile import Keystile
    from keystile.dashboard import asgi_app

    clock = Clock(datetime(2026, 3, 29, 15, 0, tzinfo=timezone.utc))
    ks = Keystile(CONFIG, pepper=b"screenshots-pepper-0123456789", clock=clock)
    key_id = populate(ks, clock)

    async def session(request: Any) -> tuple[str, str, bool]:
        return "alex", "acme", True

    app = Starlette(routes=[Mount("/dashboard/api-keys", app=asgi_app(ks, authenticate=session))])
    out.mkdir(parents=True, exist_ok=True)
    shots = out / "dashboard-list.png", out / "dashboard-key.png"
    with serving(app) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 720}, device_scale_factor=1)
        page.goto(f"{base}/dashboard/api-keys/")
        page.screenshot(path=str(shots[0]), full_page=True)
        page.goto(f"{base}/dashboard/api-keys/{key_id}")
        page.screenshot(path=str(shots[1]), full_page=True)
        if more:  # the other pages and a phone's width, to look at while styling
            page.goto(f"{base}/dashboard/api-keys/new")
            page.screenshot(path=str(out / "dashboard-new.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 800})
            for name, path in (("list", "/"), ("key", f"/{key_id}")):
                page.goto(f"{base}/dashboard/api-keys{path}")
                page.screenshot(path=str(out / f"dashboard-{name}-phone.png"), full_page=True)
        page.close()
    ks.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    import argparse

    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--more", action="store_true", help="also the form and a phone's width")
    args = parser.parse_args(argv)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True)
        shots = take(browser, args.out, more=args.more)
        browser.close()
    print(f"wrote {shots[0]} and {shots[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
