"""What the pages show: a key as a table row or a page, and the 30-day usage chart.

Plain values for the templates, worked out here so that the templates only
lay them out (and stay free of logic that a test could not reach). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from keystile.dashboard._forms import Permissions
from keystile.management._input import Caller
from keystile.stores.base import KeyRecord
from keystile.usage import UsageDay

__all__ = ["STALE_AFTER", "Chart", "KeyView", "When", "chart_of", "key_view"]

STALE_AFTER = timedelta(days=90)
"""A key unused this long (or never used, and this old) is marked "Stale"."""
SHOWN_SCOPES = 4
"""Scopes listed in the table's Permissions cell before "+N more" (destructive ones always)."""
TYPE_LABELS = {"secret": "Secret", "publishable": "Publishable", "embed": "Embed"}


def aware(when: datetime) -> datetime:
    """Some SQL backends hand back naive UTC; make every time comparable."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


@dataclass(frozen=True)
class When:
    """A moment as the page shows it: a date, with the exact UTC time for ``<time>``."""

    iso: str
    text: str
    exact: str

    @classmethod
    def of(cls, when: datetime | None) -> When | None:
        if when is None:
            return None
        when = aware(when).astimezone(timezone.utc)
        return cls(
            when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            f"{when.day} {when.strftime('%b %Y')}",
            when.strftime("%Y-%m-%d %H:%M UTC"),
        )


@dataclass(frozen=True)
class ScopeTag:
    scope: str
    destructive: bool


@dataclass(frozen=True)
class KeyView:
    """One key, ready to lay out (never its secret: the record holds none)."""

    id: str
    name: str
    type: str
    owner: str  # "Bot" for a bot key, else the user
    created_by: str | None
    summary: str | None  # a preset's label when the scopes are exactly a preset
    tags: tuple[ScopeTag, ...]  # what the table shows
    all_tags: tuple[ScopeTag, ...]
    more: int  # scopes left out of ``tags``
    display: str  # prefix … last 4
    created: When
    last_used: When | None
    expires: When | None
    requests: int | None  # over 30 days; None when usage counting is off
    stale: bool
    rotated_from: str | None
    successor: str | None  # the key that replaced this one, in its grace period
    allowed_ips: tuple[str, ...]
    rate_limit: str | None
    plan: str | None
    can_change: bool

    @property
    def has_destructive(self) -> bool:
        return any(t.destructive for t in self.all_tags)


def key_view(
    record: KeyRecord,
    *,
    now: datetime,
    caller: Caller,
    permissions: Permissions,
    requests: int | None,
    successor: str | None = None,
) -> KeyView:
    tags = tuple(ScopeTag(s, permissions.tier(s) == "destructive") for s in record.scopes)
    summary = permissions.label_of(record.scopes)
    # Destructive scopes are never folded into "+N more": the row must say them.
    shown = [t for t in tags if t.destructive]
    shown += [t for t in tags if not t.destructive][: max(0, SHOWN_SCOPES - len(shown))]
    listed = tuple(t for t in tags if t in shown)
    last_seen = aware(record.last_used_at or record.created_at)
    return KeyView(
        id=record.id,
        name=record.name,
        type=TYPE_LABELS.get(record.type, record.type),
        owner="Bot" if record.kind == "bot" or record.owner is None else record.owner,
        created_by=record.created_by,
        summary=summary,
        tags=listed,
        all_tags=tags,
        more=len(tags) - len(listed),
        display=f"{record.prefix}…{record.last4}" if record.last4 else f"{record.prefix}…",
        created=When.of(record.created_at),  # type: ignore[arg-type]
        last_used=When.of(record.last_used_at),
        expires=When.of(record.expires_at),
        requests=requests,
        stale=aware(now) - last_seen >= STALE_AFTER,
        rotated_from=record.rotated_from,
        successor=successor,
        allowed_ips=record.allowed_ips,
        rate_limit=record.rate_limit,
        plan=record.plan,
        can_change=caller.may_change(record),
    )


def successors(records: Sequence[KeyRecord]) -> Mapping[str, str]:
    """Old key id -> the id of the active key that replaced it (rotation in its grace)."""
    return {r.rotated_from: r.id for r in records if r.rotated_from}


# -- the usage chart ----------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    kind: str  # ok (2xx) | client (4xx but 429) | limited (429) | other
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    label: str  # for the bar's <title>, read on hover
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Chart:
    """A bar a day, stacked 2xx / 4xx / 429 (and other statuses, if any)."""

    width: int
    height: int
    top: int  # the y axis' highest value
    bars: tuple[Bar, ...]
    first: str
    last: str
    total: int
    by_kind: Mapping[str, int]
    summary: str  # the text total, for everyone (and the SVG's accessible name)


KIND_LABELS = {"ok": "2xx", "client": "4xx", "limited": "429", "other": "other"}
WIDTH, HEIGHT, GAP = 600, 160, 2


def kind_of(status: int) -> str:
    if status == 429:
        return "limited"
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500:
        return "client"
    return "other"


def chart_of(days: Sequence[UsageDay]) -> Chart:
    counts = []
    for day in days:
        kinds = dict.fromkeys(KIND_LABELS, 0)
        for status, n in day.by_status.items():
            kinds[kind_of(status)] += n
        counts.append(kinds)
    top = _nice_top(max((day.total for day in days), default=0))
    slot = WIDTH / max(len(days), 1)
    bars = []
    for i, (day, kinds) in enumerate(zip(days, counts, strict=True)):
        bottom = float(HEIGHT)
        segments = []
        for kind in KIND_LABELS:
            height = HEIGHT * kinds[kind] / top
            if kinds[kind]:
                bottom -= height
                segments.append(Segment(kind, round(bottom, 2), round(height, 2)))
        parts = ", ".join(f"{kinds[k]} {KIND_LABELS[k]}" for k in KIND_LABELS if kinds[k])
        label = f"{day.date.isoformat()}: {_requests(day.total)}" + (f" ({parts})" if parts else "")
        bars.append(Bar(round(i * slot + GAP / 2, 2), round(slot - GAP, 2), label, tuple(segments)))
    by_kind = {k: sum(c[k] for c in counts) for k in KIND_LABELS}
    total = sum(day.total for day in days)
    parts = ", ".join(f"{by_kind[k]:,} {KIND_LABELS[k]}" for k in KIND_LABELS if by_kind[k])
    summary = f"{_requests(total)} in the last {len(days)} days" + (f": {parts}" if parts else "")
    return Chart(
        WIDTH,
        HEIGHT,
        top,
        tuple(bars),
        days[0].date.strftime("%d %b") if days else "",
        days[-1].date.strftime("%d %b") if days else "",
        total,
        by_kind,
        summary + ".",
    )


def _requests(n: int) -> str:
    return f"{n:,} request" + ("" if n == 1 else "s")


def _nice_top(peak: int) -> int:
    """A round axis top at or above ``peak`` (1, 2, 5 times a power of ten); 1 for none."""
    if peak <= 1:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= peak:
                return step * scale
        scale *= 10
