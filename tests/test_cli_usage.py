"""``keystile keys list``, ``keys usage`` and ``audit``: usage and the trail, read from a shell.

The store is seeded in the test's own process by an engine whose clock is
set back (keys made months ago, used on given days, events at given times),
then the command reads it as an operator would. The commands run in-process
(``keystile.cli.main``: the same parser and code as the script, without an
interpreter start per case); ``tests/test_cli.py`` runs the script itself.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from keystile import Keystile
from keystile.audit import AuditEvent
from keystile.cli import main
from tests.conftest import PEPPER, STORE_BACKENDS, store_url_for
from tests.doors import Door
from tests.test_cli import CONFIG

START = datetime.now(timezone.utc)
TODAY = START.date()


@dataclass
class Done:
    status: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    def rows(self) -> list[list[str]]:
        """The table's rows under its header, cut into cells (cells hold no double spaces)."""
        return [re.split(r"\s{2,}", line) for line in self.out.splitlines()[1:]]


class Shell:
    """Runs ``keystile --config PATH ...`` in this process; seeds the store with ``engine``."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys
        self.when = START
        self._engines: list[Keystile] = []

    def __call__(self, *args: str) -> Done:
        self.capsys.readouterr()
        status = main(["--config", str(self.config), *args])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        return Done(status, out, err)

    def engine(self) -> Keystile:
        """An engine on the same store whose clock reads ``self.when``."""
        ks = Keystile.from_config(self.config, clock=lambda: self.when)
        self._engines.append(ks)
        return ks

    def close(self) -> None:
        for ks in self._engines:
            ks.close()


def _shell(directory: Path, store: str, capsys: Any, monkeypatch: Any, extra: str = "") -> Shell:
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    config = directory / "keystile.yaml"
    text = CONFIG.format(db=directory / "keys.db").replace(
        f'"sqlite:///{directory / "keys.db"}"', json.dumps(store)
    )
    config.write_text(text + extra, encoding="utf-8")
    return Shell(config, capsys)


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shell]:
    sh = _shell(tmp_path, f"sqlite:///{tmp_path / 'keys.db'}", capsys, monkeypatch)
    yield sh
    sh.close()


def ago(days: float = 0, hours: float = 0) -> datetime:
    return START - timedelta(days=days, hours=hours)


def day(offset: int) -> str:
    return (TODAY - timedelta(days=offset)).isoformat()


# -- keys usage ------------------------------------------------------------------------

RESULTS = "/api/v1/events/{event_id}/results"


def seed_usage(shell: Shell) -> str:
    """A key used today (every status class), two days ago, and before the window."""
    ks = shell.engine()
    key = ks.keys.create(name="CI upload", scopes=["results"], org="acme")
    today = [(200, 3), (301, 1), (404, 1), (429, 2), (503, 1)]
    for status, n in today:
        for _ in range(n):
            ks.count_use(key.id, "/api/v1/events" if status != 429 else RESULTS, status)
    shell.when = ago(days=2)
    ks.count_use(key.id, RESULTS, 201)
    shell.when = ago(days=5)
    for _ in range(7):
        ks.count_use(key.id, "/api/v1/events", 200)
    ks.flush()
    shell.when = START
    return key.id


def test_usage_prints_a_row_a_day_a_total_and_the_routes(shell: Shell) -> None:
    key_id = seed_usage(shell)
    done = shell("keys", "usage", key_id, "--days", "3")
    assert done.status == 0, done.err
    assert done.out == textwrap.dedent(f"""\
        Requests of key {key_id} "CI upload" (org acme) per UTC day, {day(2)} to {day(0)}

        DATE        TOTAL  2XX  3XX  4XX  429  5XX
        {day(2)}      1    1    0    0    0    0
        {day(1)}      0    0    0    0    0    0
        {day(0)}      8    3    1    1    2    1
        total           9    4    1    1    2    1

        ROUTE                              TOTAL
        /api/v1/events                         6
        /api/v1/events/{{event_id}}/results      3
        """)


def test_usage_defaults_to_30_days_and_shows_unused_days_as_zeros(shell: Shell) -> None:
    key = shell.engine().keys.create(name="idle", org="acme")
    done = shell("keys", "usage", key.id)
    assert done.status == 0, done.err
    title, _, header, *rows = done.out.splitlines()
    assert title.endswith(f"per UTC day, {day(29)} to {day(0)}") and header.startswith("DATE")
    assert [row.split()[0] for row in rows] == [day(n) for n in range(29, -1, -1)] + ["total"]
    assert all(row.split()[1:] == ["0"] * 6 for row in rows)  # no ROUTE table either


def test_usage_json_gives_the_days_as_the_http_api_does(shell: Shell) -> None:
    key_id = seed_usage(shell)
    done = shell("keys", "usage", key_id, "--days", "3", "--json")
    assert done.status == 0, done.err
    assert done.json == [
        {"date": day(2), "total": 1, "byStatus": {"201": 1}, "byRoute": {RESULTS: 1}},
        {"date": day(1), "total": 0, "byStatus": {}, "byRoute": {}},
        {
            "date": day(0),
            "total": 8,
            "byStatus": {"200": 3, "301": 1, "404": 1, "429": 2, "503": 1},
            "byRoute": {"/api/v1/events": 6, RESULTS: 2},
        },
    ]


@pytest.mark.parametrize(
    ("extra", "days", "warning"),
    [
        pytest.param("", "91", "older than usage.retention (90 days) are deleted", id="retention"),
        pytest.param("usage: {retention: 7d}\n", "8", "retention (7 days)", id="short-retention"),
        pytest.param("usage: {enabled: false}\n", "30", "counting is off", id="off"),
    ],
)
def test_usage_warns_when_zeros_mean_nothing_was_counted_or_kept(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    days: str,
    warning: str,
) -> None:
    sh = _shell(tmp_path, f"sqlite:///{tmp_path / 'keys.db'}", capsys, monkeypatch, extra)
    try:
        key = sh.engine().keys.create(name="k", org="acme")
        done = sh("keys", "usage", key.id, "--days", days, "--json")
        assert done.status == 0 and len(done.json) == int(days)
        assert done.err.startswith("keystile: warning: ") and warning in done.err
        quiet = sh("keys", "usage", key.id, "--days", "7")
        assert ("warning" in quiet.err) == ("enabled: false" in extra)
    finally:
        sh.close()


def test_usage_of_a_revoked_key_is_still_readable(shell: Shell) -> None:
    key_id = seed_usage(shell)
    shell.engine().keys.revoke(key_id)
    assert shell("keys", "usage", key_id, "--days", "1", "--json").json[0]["total"] == 8


# -- keys list -------------------------------------------------------------------------


def seed_keys(shell: Shell) -> dict[str, str]:
    """Keys in every state that ``keys list`` tells apart; names -> ids."""
    ks = shell.engine()
    ids: dict[str, str] = {}

    def make(name: str, created: datetime, used: datetime | None = None, **options: Any) -> str:
        shell.when = created
        options.setdefault("org", "acme")
        ids[name] = ks.keys.create(name=name, **options).id
        if used is not None:
            ks.note_use(ids[name], used)
        return ids[name]

    make("dormant", ago(days=200), used=ago(days=100))  # used, but not for 90 days: stale
    make("revoked", ago(days=150))
    make("forgotten", ago(days=120))  # never used, made 120 days ago: stale
    make("busy", ago(days=100), used=ago(days=1))
    make("expired", ago(days=10), expires_in_days=1)
    make("fresh", ago(days=2))  # never used, but new: not stale
    make("elsewhere", ago(days=1), org="beta")
    ks.flush()
    shell.when = ago(days=150)
    ks.keys.revoke(ids["revoked"])
    shell.when = START
    ids["busy (rotated)"] = ks.keys.rotate(ids["busy"], grace="1h").id
    return ids


def test_list_marks_stale_keys_and_names_the_key_a_key_was_rotated_from(shell: Shell) -> None:
    ids = seed_keys(shell)
    done = shell("keys", "list", "--org", "acme")
    assert done.status == 0, done.err
    header = done.out.splitlines()[0]
    assert re.split(r"\s{2,}", header) == [
        "ID", "NAME", "STATUS", "PREFIX", "ORG", "KIND", "SCOPES", "EXPIRES", "LAST USED",
        "ROTATED FROM",
    ]  # fmt: skip
    rows = done.rows()
    # Creation order (oldest first); revoked and expired keys are left out.
    assert [r[1] for r in rows] == ["dormant", "forgotten", "busy", "fresh", "busy"]
    status = {r[0]: r[2] for r in rows}
    assert status == {
        ids["dormant"]: "stale",
        ids["forgotten"]: "stale",
        ids["busy"]: "active",
        ids["fresh"]: "active",
        ids["busy (rotated)"]: "active",
    }
    rotated_from = {r[0]: r[-1] for r in rows}
    assert rotated_from[ids["busy (rotated)"]] == ids["busy"]
    assert {rotated_from[ids[n]] for n in ("dormant", "forgotten", "busy", "fresh")} == {"-"}


def test_list_all_shows_revoked_and_expired_keys_marked(shell: Shell) -> None:
    ids = seed_keys(shell)
    done = shell("keys", "list", "--all", "--org", "acme")
    assert done.status == 0, done.err
    status = {r[0]: r[2] for r in done.rows()}
    assert len(status) == 7
    assert status[ids["revoked"]] == "revoked"  # made 150 days ago, never used: not stale
    assert status[ids["expired"]] == "expired"


def test_list_json_carries_status_stale_and_rotated_from(shell: Shell) -> None:
    ids = seed_keys(shell)
    listed = {k["id"]: k for k in shell("keys", "list", "--all", "--json").json}
    assert len(listed) == 8

    def fields(name: str) -> tuple[str, bool, str | None]:
        key = listed[ids[name]]
        return key["status"], key["stale"], key["rotated_from"]

    assert fields("dormant") == ("active", True, None)  # a stale key still works
    assert fields("forgotten") == ("active", True, None)
    assert fields("busy") == ("active", False, None)
    assert fields("busy (rotated)") == ("active", False, ids["busy"])
    assert fields("revoked") == ("revoked", False, None)
    assert fields("expired") == ("expired", False, None)
    assert listed[ids["dormant"]]["last_used_at"] == ago(days=100).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed[ids["forgotten"]]["last_used_at"] is None


@pytest.mark.parametrize(
    ("args", "names"),
    [
        pytest.param(["90d"], {"dormant", "forgotten"}, id="90d"),
        pytest.param(["12h"], {"dormant", "forgotten", "busy", "fresh"}, id="12h"),
        pytest.param(["2160h"], {"dormant", "forgotten"}, id="hours-as-90d"),
        pytest.param(["100d", "--all"], {"dormant", "revoked", "forgotten"}, id="all-100d"),
        pytest.param(["3d", "--all"], {"dormant", "revoked", "forgotten", "expired"},
                     id="all-3d"),
        pytest.param(["300d"], set(), id="none"),
    ],
)  # fmt: skip
def test_unused_since_keeps_keys_unused_that_long_never_used_ones_included(
    shell: Shell, args: list[str], names: set[str]
) -> None:
    seed_keys(shell)
    done = shell("keys", "list", "--org", "acme", "--unused-since", *args)
    assert done.status == 0, done.err
    if names:
        assert {r[1] for r in done.rows()} == names
    else:
        assert done.out == "no active keys in org acme unused for 300d\n"


def test_sort_last_used_puts_never_used_keys_first_then_the_least_recently_used(
    shell: Shell,
) -> None:
    ids = seed_keys(shell)
    done = shell("keys", "list", "--org", "acme", "--sort", "last-used", "--json")
    assert [k["id"] for k in done.json] == [
        ids["forgotten"],  # never used, made 120 days ago
        ids["fresh"],  # never used, made 2 days ago
        ids["busy (rotated)"],  # never used, made now
        ids["dormant"],  # last used 100 days ago
        ids["busy"],  # last used yesterday
    ]


# -- audit -----------------------------------------------------------------------------


def seed_audit(shell: Shell) -> tuple[str, str, str]:
    """Events at known times: an old create, a create, a refused request, a revoke."""
    ks = shell.engine()
    shell.when = ago(days=3)
    old = ks.keys.create(name="old", org="acme").id
    shell.when = ago(hours=3)
    new = ks.keys.create(name="reader", scopes=["events:read"], org="acme")
    shell.when = ago(hours=2.5)
    other = ks.keys.create(name="elsewhere", org="beta").id
    shell.when = ago(hours=2)
    door = Door("wsgi", ks)
    assert door("GET", "/api/v1/orgs/beta/members", key=new.secret, client="10.1.2.3").status == 403
    shell.when = ago(hours=1)
    ks.keys.revoke(new.id)
    ks.audit.flush()
    shell.when = START
    return old, new.id, other


def test_audit_prints_the_trail_newest_first_never_a_secret(shell: Shell) -> None:
    old, key_id, _ = seed_audit(shell)
    done = shell("audit", "--org", "acme")
    assert done.status == 0, done.err
    header = re.split(r"\s{2,}", done.out.splitlines()[0])
    assert header == ["TIME", "EVENT", "KEY", "ORG", "STATUS", "CLIENT", "REASON"]
    rows = done.rows()
    assert [(r[1], r[2]) for r in rows] == [
        ("key.revoked", key_id),
        ("request.refused", key_id),
        ("key.created", key_id),
        ("key.created", old),
    ]
    refused = rows[1]
    assert refused[0] == ago(hours=2).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert refused[3:6] == ["acme", "403", "10.1.2.3"]
    assert refused[6].startswith("FORBIDDEN")
    assert "sk_" not in done.out and "sk_" not in done.err


def test_audit_filters_by_key_org_and_days(shell: Shell) -> None:
    old, key_id, other = seed_audit(shell)
    everything = shell("audit", "--days", "7", "--json").json
    assert [e["key_id"] for e in everything] == [key_id, key_id, other, key_id, old]
    assert [e["event"] for e in shell("audit", "--key", key_id, "--json").json] == [
        "key.revoked",
        "request.refused",
        "key.created",
    ]
    assert [e["key_id"] for e in shell("audit", "--org", "beta", "--json").json] == [other]
    assert old not in shell("audit", "--days", "2").out
    assert (
        shell("audit", "--org", "nobody").out
        == "no audit events in org nobody in the last 7 days\n"
    )


def test_audit_json_has_the_fields_of_an_event(shell: Shell) -> None:
    _, key_id, _ = seed_audit(shell)
    refused = shell("audit", "--key", key_id, "--json").json[1]
    assert refused == {
        "event": "request.refused",
        "time": refused["time"],
        "key_id": key_id,
        "org": "acme",
        "reason": refused["reason"],
        "client": "10.1.2.3",
        "status": 403,
        "key_prefix": refused["key_prefix"],
    }
    assert refused["time"] == ago(hours=2).strftime("%Y-%m-%dT%H:%M:%SZ")  # as keys' times
    assert refused["reason"].startswith("FORBIDDEN")


def test_audit_prints_control_characters_from_the_store_harmlessly(shell: Shell) -> None:
    ks = shell.engine()
    ks.audit.record(AuditEvent("request.refused", START, org="acme", reason="\x1b[2J\rgone"))
    ks.audit.flush()
    done = shell("audit")
    assert "\x1b" not in done.out and "\r" not in done.out
    assert done.rows()[0][-1] == "?[2J?gone"


def test_audit_says_when_it_stops_at_the_limit(shell: Shell) -> None:
    seed_audit(shell)
    done = shell("audit", "--limit", "2")
    assert done.status == 0 and len(done.rows()) == 2
    assert "showing the newest 2 events; there may be more" in done.err


def test_audit_without_a_stored_trail_fails_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    sh = _shell(tmp_path, store, capsys, monkeypatch, extra="audit: {store: false}\n")
    done = sh("audit")
    assert done.status == 1
    assert done.err.strip().endswith("keeps no audit trail in the store (audit.store is false)")


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        pytest.param(["keys", "usage", "key_nope"], 1, "no key with id 'key_nope'", id="unknown"),
        pytest.param(["keys", "usage", "key_x", "--days", "0"], 2, "argument --days: days must",
                     id="days-0"),
        pytest.param(["keys", "usage", "key_x", "--days", "367"], 2, "argument --days",
                     id="days-367"),
        pytest.param(["keys", "usage", "key_x", "--days", "ten"], 2,
                     "argument --days: invalid int value", id="days-not-a-number"),
        pytest.param(["keys", "usage"], 2, "KEY_ID", id="no-key-id"),
        pytest.param(["keys", "list", "--unused-since", "90"], 2,
                     "argument --unused-since: '90' is not a duration", id="age-without-unit"),
        pytest.param(["keys", "list", "--unused-since", "90w"], 2, "argument --unused-since",
                     id="age-unknown-unit"),
        pytest.param(["keys", "list", "--unused-since", "0d"], 2, "argument --unused-since",
                     id="age-zero"),
        pytest.param(["keys", "list", "--unused-since", "-5d"], 2, "argument --unused-since",
                     id="age-negative"),
        pytest.param(["keys", "list", "--unused-since", "1.5d"], 2, "argument --unused-since",
                     id="age-fraction"),
        pytest.param(["keys", "list", "--sort", "name"], 2, "argument --sort: invalid choice",
                     id="sort-unknown"),
        pytest.param(["audit", "--days", "0"], 2, "argument --days", id="audit-days-0"),
        pytest.param(["audit", "--limit", "0"], 2, "argument --limit", id="audit-limit-0"),
        pytest.param(["audit", "--key", "key_nope"], 1, "no key with id 'key_nope'",
                     id="audit-unknown-key"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line_naming_the_field(
    shell: Shell, args: list[str], status: int, text: str
) -> None:
    done = shell(*args)
    assert done.status == status, done.err
    lines = [line for line in done.err.splitlines() if not line.startswith("keystile: warn")]
    assert len(lines) == 1 and lines[0].startswith("keystile: error: "), done.err
    assert text in lines[0]
    assert done.out == ""


# -- every SQL store -------------------------------------------------------------------


@pytest.mark.parametrize("backend", [p for p in STORE_BACKENDS if p.id != "memory"])
def test_list_usage_and_audit_read_every_sql_store(
    backend: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sh = _shell(tmp_path, store_url_for(backend, tmp_path), capsys, monkeypatch)
    try:
        ids = seed_keys(sh)
        key_id = seed_usage(sh)
        assert {r[1] for r in sh("keys", "list", "--unused-since", "90d").rows()} == {
            "dormant",
            "forgotten",
        }
        assert sh("keys", "usage", key_id, "--days", "3", "--json").json[2]["total"] == 8
        listed = {k["id"]: k for k in sh("keys", "list", "--all", "--json").json}
        assert listed[ids["revoked"]]["status"] == "revoked"
        trail = sh("audit", "--key", ids["revoked"], "--days", "200", "--json").json
        assert [e["event"] for e in trail] == ["key.revoked", "key.created"]
    finally:
        sh.close()
