"""Issue 18's CLI items: what a new operator trips on in the first hour.

Unknown and missing scopes, ``keys update``'s plan/expiry/metadata, revoking
twice, ``check``'s warnings, ``explain --key/--scopes``, ``db init`` twice,
``db status``, ``--verbose`` and ``keys import``'s summary. In-process
(``keystile.cli.main``), as tests/test_cli_usage.py explains.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from keystile.errors import KeyInputError
from tests.conftest import REDIS_URL, require_service, store_url_for
from tests.test_cli_import import DRF_COLUMNS, drf_row, write_csv
from tests.test_cli_usage import START, Shell, _shell

EXTRA = """\
scopes:
  implies:
    admin: [events:read, members:raed]
"""


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shell]:
    sh = _shell(tmp_path, f"sqlite:///{tmp_path / 'keys.db'}", capsys, monkeypatch, EXTRA)
    yield sh
    sh.close()


def keys_in(shell: Shell) -> list[str]:
    return [r.id for r in shell.engine().keys.list_all()]


# -- keys create / update: scopes the config does not know ----------------------------


def test_create_refuses_an_unknown_scope_naming_it_and_writes_nothing(shell: Shell) -> None:
    done = shell("keys", "create", "--name", "a", "--scope", "events:read", "--scope", "evnts:r")
    assert done.status == 2
    assert "unknown scope 'evnts:r'" in done.err and "--allow-unknown-scope" in done.err
    assert keys_in(shell) == []


def test_create_without_a_scope_is_refused_with_a_hint(shell: Shell) -> None:
    done = shell("keys", "create", "--name", "a")
    assert done.status == 2
    assert "--scope" in done.err and "--preset" in done.err and done.out == ""
    assert keys_in(shell) == []


def test_allow_unknown_scope_lets_the_operator_through(shell: Shell) -> None:
    done = shell("keys", "create", "--name", "a", "--scope", "later:read", "--allow-unknown-scope")
    assert done.status == 0, done.err
    bare = shell("keys", "create", "--name", "b", "--allow-unknown-scope", "--json")
    assert bare.status == 0 and bare.json["scopes"] == []
    assert len(keys_in(shell)) == 2


def test_known_scopes_patterns_and_presets_still_pass(shell: Shell) -> None:
    assert shell("keys", "create", "--name", "a", "--scope", "members:read").status == 0
    assert shell("keys", "create", "--name", "b", "--scope", "events:*").status == 0
    assert shell("keys", "create", "--name", "c", "--preset", "read-only").status == 0
    typo = shell("keys", "create", "--name", "d", "--scope", "evnts:*")
    assert typo.status == 2 and "evnts:*" in typo.err


def test_update_refuses_an_unknown_scope_and_keeps_the_old_ones(shell: Shell) -> None:
    key_id = shell.engine().keys.create("a", scopes=["events:read"]).record.id
    done = shell("keys", "update", key_id, "--scope", "evnts:read")
    assert done.status == 2 and "unknown scope 'evnts:read'" in done.err
    assert shell.engine().keys.get(key_id).scopes == ("events:read",)
    forced = shell("keys", "update", key_id, "--scope", "evnts:read", "--allow-unknown-scope")
    assert forced.status == 0
    assert shell.engine().keys.get(key_id).scopes == ("evnts:read",)


# -- keys update: --plan, --expires-in-days, --metadata ------------------------------


def test_update_sets_plan_expiry_and_merges_metadata(shell: Shell) -> None:
    made = shell.engine().keys.create("a", scopes=["results"], metadata={"owner": "ana", "x": "1"})
    key_id = made.record.id
    done = shell(
        "keys", "update", key_id, "--plan", "pro", "--expires-in-days", "10",
        "--metadata", "team=billing", "--metadata", "x=", "--json",
    )  # fmt: skip
    assert done.status == 0, done.err
    record = shell.engine().keys.get(key_id)
    assert record.plan == "pro"
    assert record.expires_at is not None
    assert abs(record.expires_at - (START + timedelta(days=10))) < timedelta(minutes=5)
    assert dict(record.metadata) == {"owner": "ana", "team": "billing"}
    assert done.json["plan"] == "pro"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        pytest.param(["--plan", "gold"], "unknown plan 'gold'", id="unknown-plan"),
        pytest.param(["--expires-in-days", "0"], "from 1 to 365", id="days-0"),
        pytest.param(["--metadata", "team"], "'team' is not KEY=VALUE", id="metadata-no-equals"),
    ],
)
def test_update_bad_plan_days_or_metadata_is_exit_2_and_changes_nothing(
    shell: Shell, args: list[str], text: str
) -> None:
    key_id = shell.engine().keys.create("a", scopes=["results"], plan="free").record.id
    done = shell("keys", "update", key_id, *args)
    assert done.status == 2 and text in done.err
    record = shell.engine().keys.get(key_id)
    assert record.plan == "free" and record.expires_at is None and dict(record.metadata) == {}


def test_python_update_takes_expires_in_days_from_now(shell: Shell) -> None:
    ks = shell.engine()
    key_id = ks.keys.create("a", scopes=["results"]).record.id
    shell.when = START + timedelta(days=3)
    record = ks.keys.update(key_id, expires_in_days=5)
    assert record.expires_at == START + timedelta(days=8)
    with pytest.raises(KeyInputError, match="1 to 365"):
        ks.keys.update(key_id, expires_in_days=366)


# -- keys revoke twice ---------------------------------------------------------------


def test_revoking_a_revoked_key_says_so_and_exits_4(shell: Shell) -> None:
    key_id = shell.engine().keys.create("a", scopes=["results"]).record.id
    assert shell("keys", "revoke", key_id).status == 0
    first = shell.engine().keys.get(key_id).revoked_at
    again = shell("keys", "revoke", key_id)
    assert again.status == 4 and "already revoked" in again.err and key_id in again.err
    assert shell.engine().keys.get(key_id).revoked_at == first
    assert shell("keys", "revoke", "key_unknown000000000000").status == 1  # not 4: no such key


# -- check and explain ----------------------------------------------------------------


def test_check_fails_on_an_empty_config(tmp_path: Path, shell: Shell) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    done = shell("--config", str(empty), "check")
    assert done.status == 1 and "empty.yaml is empty" in done.err and "ok" not in done.out


def test_check_warns_of_an_implies_typo_with_file_and_line(shell: Shell) -> None:
    done = shell("check")
    assert done.status == 0
    line = shell.config.read_text().splitlines().index("    admin: [events:read, members:raed]")
    assert f"keystile.yaml:{line + 1}: scopes.implies.admin: 'members:raed'" in done.err
    assert "events:read'" not in done.err  # a route names it
    assert shell("check", "--json").json["warnings"]


def test_explain_prints_the_precedence_rule_that_decided(shell: Shell) -> None:
    # The pair: /api/{a}/x against /api/x/{b}, both matching /api/x/x.
    pair = (
        '  - {path: "/api/{a}/x", scopes: [admin]}\n  - {path: "/api/x/{b}", scopes: [results]}\n'
    )
    text = shell.config.read_text()
    shell.config.write_text(text.replace("scopes:\n  implies", pair + "scopes:\n  implies", 1))
    done = shell("explain", "GET", "/api/x/x")
    assert done.status == 0, done.err
    assert "rule:      /api/x/{b}" in done.out
    assert "also matches: /api/{a}/x" in done.out
    assert "loses by rule 4: segment 2 is a literal against {name}" in done.out


def test_explain_with_scopes_answers_admitted_or_which_scope_is_missing(shell: Shell) -> None:
    refused = shell("explain", "GET", "/api/v1/events", "--scopes", "results")
    assert "verdict:   refused: 403 INSUFFICIENT_SCOPE (scope missing: events:read)" in refused.out
    implied = shell("explain", "GET", "/api/v1/events", "--scopes", "admin")
    assert "verdict:   admitted" in implied.out
    both = shell("explain", "GET", "/x", "--scopes", "a", "--key", "key_x")
    assert both.status == 2 and "not both" in both.err


def test_explain_with_a_key_checks_its_scopes_org_and_state(shell: Shell) -> None:
    ks = shell.engine()
    member = ks.keys.create("m", scopes=["members:read"], org="acme").record.id
    path = "/api/v1/orgs/{}/members"
    assert (
        "verdict:   admitted" in shell("explain", "GET", path.format("acme"), "--key", member).out
    )
    other = shell("explain", "GET", path.format("umbrella"), "--key", member).out
    assert "refused: 403 FORBIDDEN (the key's org acme is not umbrella)" in other
    ks.keys.revoke(member)
    gone = shell("explain", "GET", path.format("acme"), "--key", member).out
    assert "refused: 401 UNAUTHORIZED" in gone and "revoked" in gone
    assert shell("explain", "GET", "/x", "--key", "key_nope").status == 1


# -- db init, db status ---------------------------------------------------------------


def test_db_init_twice_says_the_tables_exist(shell: Shell) -> None:
    first = shell("db", "init")
    assert first.status == 0 and "created the key tables" in first.out
    again = shell("db", "init")
    assert again.status == 0 and "already exist" in again.out


def test_db_status_on_postgres_and_redis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_service("redis")
    url = store_url_for("postgres", tmp_path)
    extra = f"limiter: {{storage: {json.dumps(REDIS_URL)}}}\n"
    shell = _shell(tmp_path, url, capsys, monkeypatch, extra)
    try:
        bare = shell("db", "status")
        assert bare.status == 0 and "no tables: run keystile db init" in bare.out
        shell.engine().keys.create("a", scopes=["results"])
        done = shell("db", "status", "--json")
        assert done.status == 0, done.err
        store, limiter = done.json["store"], done.json["limiter"]
        assert store["backend"] == "postgresql" and store["schema_version"] >= 3
        assert store["server_version"] and store["latency_ms"] >= 0
        assert store["counts"]["keys"] == 1 and store["counts"]["audit_events"] >= 1
        assert limiter["server_version"] and limiter["latency_ms"] >= 0
        text = shell("db", "status").out
        assert "1 keys" in text and "server version" in text
    finally:
        shell.close()


def test_db_status_exits_3_when_the_store_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    done = _shell(tmp_path, url, capsys, monkeypatch)("db", "status")
    assert done.status == 3 and "store:   unavailable" in done.out


# -- --verbose, keys import summary ---------------------------------------------------


def test_verbose_logs_to_stderr_without_the_secret(shell: Shell) -> None:
    done = shell("--verbose", "keys", "create", "--name", "a", "--scope", "results", "--json")
    assert done.status == 0
    assert "keystile: DEBUG keystile.cli: config" in done.err
    assert done.json["secret"] not in done.err


def test_import_prints_a_summary(shell: Shell, tmp_path: Path) -> None:
    shell.config.write_text(shell.config.read_text() + "imported_keys: true\n")
    rows = [
        drf_row("aaaaaaaa", "sha512_crypt"),
        drf_row("bbbbbbbb", "sha512_crypt", revoked="t"),
        drf_row("cccccccc", "sha512_crypt"),
    ]
    path = write_csv(tmp_path / "keys.csv", DRF_COLUMNS, rows)
    done = shell("keys", "import", "--from", "drf-api-key", "--scope", "results", str(path))
    assert done.status == 0, done.err
    assert done.out.splitlines()[-1] == "3 rows: 2 imported, 1 skipped (1 revoked)"


def test_progress_bar_only_on_a_terminal_for_long_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    from keystile import _cli_progress

    rows = list(range(_cli_progress.MIN_ROWS))
    assert _cli_progress.progress(rows, "x") is rows  # stderr is captured: not a TTY
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert _cli_progress.progress(rows[:-1], "x") == rows[:-1]
    assert list(_cli_progress.progress(rows, "x")) == rows


def test_explain_with_an_embed_key_applies_the_type_rules(shell: Shell) -> None:
    made = shell.engine().keys.create(
        "e", scopes=["events:read"], type="embed", allowed_origins=["example.com"]
    )
    done = shell("explain", "GET", "/api/v1/events", "--key", made.record.id)
    assert "refused: 403 FORBIDDEN (embed keys are accepted on embed routes only)" in done.out


def test_the_import_summary_counts_one_row_in_the_singular() -> None:
    from keystile._cli_progress import summary

    assert summary(1, 1, []) == "1 row: 1 imported, 0 skipped\n"
    assert summary(2, 1, ["revoked"]) == "2 rows: 1 imported, 1 skipped (1 revoked)\n"
