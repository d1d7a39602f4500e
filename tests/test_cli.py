"""The ``keystile`` command, run as a real subprocess (``python -m keystile`` and the script).

Every run is a fresh interpreter (about half a second), so the cases are
grouped: one round trip walks a key through its whole life, and the error
table runs each bad input once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PEPPER, POSTGRES_URL, _reset_sql

CONFIG = """\
store: "sqlite:///{db}"
limits:
  key: "1000/hour"
  org: "10000/day"
  plans: {{free: "60/minute", pro: "600/minute"}}
  failed_auth: "20/minute"
routes:
  - {{path: /health, public: true}}
  - {{path: /api/v1/events, methods: [GET], scopes: [events:read]}}
  - path: "/api/v1/events/{{event_id}}/results"
    methods: [POST]
    scopes_any: [results, admin]
    limit: "100/minute"
  - {{path: "/api/v1/orgs/{{org}}/members", scopes: [members:read], org_param: org}}
"""
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def write_config(directory: Path, name: str = "keystile.yaml") -> Path:
    """The test config in ``directory``, on an SQLite store in the same directory."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(CONFIG.format(db=directory / "keys.db"), encoding="utf-8")
    return path


def cli_env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env["KEYSTILE_PEPPER"] = PEPPER.decode()
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``keystile ARGS`` in ``cwd``; never a traceback, whatever the outcome."""
    command = (
        [str(Path(sys.executable).parent / "keystile")]
        if script
        else [sys.executable, "-m", "keystile"]
    )
    done = subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok_json(cwd: Path, *args: str) -> Any:
    done = run(cwd, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_error_line(done: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert done.returncode == status, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("keystile: warn")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("keystile: error: "), done.stderr
    assert text in lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_config(tmp_path)
    return tmp_path


# -- the key lifecycle --------------------------------------------------------------


def test_key_round_trip_create_list_rotate_update_revoke(workdir: Path) -> None:
    created = ok_json(
        workdir, "keys", "create", "--name", "CI upload", "--scope", "results",
        "--org", "acme", "--expires-in-days", "90", "--rate-limit", "100/hour", "--plan", "pro",
    )  # fmt: skip
    secret = created["secret"]
    assert created["id"].startswith("key_")
    assert secret.startswith("sk_") and secret.startswith(created["prefix"])
    assert created["name"] == "CI upload"
    assert created["scopes"] == ["results"]
    assert (created["org"], created["kind"], created["type"]) == ("acme", "bot", "secret")
    assert created["expires_at"].endswith("Z")

    table = run(workdir, "keys", "list")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "STATUS",
        "PREFIX",
        "ORG",
        "KIND",
        "SCOPES",
        "EXPIRES",
        "LAST",
        "USED",
        "ROTATED",
        "FROM",
    ]
    assert row.startswith(created["id"]) and "CI upload" in row and created["prefix"] in row
    assert header.index("NAME") == row.index("CI upload")  # aligned columns
    listed = ok_json(workdir, "keys", "list", "--org", "acme")
    assert [k["id"] for k in listed] == [created["id"]]
    for text in (table.stdout, json.dumps(listed)):
        assert secret not in text and secret[len(created["prefix"]) :] not in text
    assert all("secret" not in k and "digest" not in k for k in listed)

    rotated = ok_json(workdir, "keys", "rotate", created["id"], "--grace", "1h")
    assert rotated["secret"] != secret and rotated["id"] != created["id"]
    assert rotated["rotated_from"] == created["id"]
    assert rotated["previous_expires_at"].endswith("Z")
    during_grace = {k["id"] for k in ok_json(workdir, "keys", "list")}
    assert during_grace == {created["id"], rotated["id"]}
    # A key is rotated once: again, in its grace, is refused and names the successor.
    for mode in ([], ["--json"]):
        again = run(workdir, "keys", "rotate", created["id"], "--grace", "1h", *mode)
        assert_one_error_line(
            again, 1, f"its successor is {rotated['id']}; rotate {rotated['id']} instead"
        )
        assert again.stdout == ""
    assert {k["id"] for k in ok_json(workdir, "keys", "list")} == during_grace

    updated = ok_json(
        workdir, "keys", "update", rotated["id"], "--name", "CI",
        "--scope", "results", "--scope", "events:read", "--rate-limit", "5/minute",
    )  # fmt: skip
    assert (updated["name"], updated["scopes"]) == ("CI", ["results", "events:read"])
    assert updated["rate_limit"] == "5/minute" and "secret" not in updated

    revoked = run(workdir, "keys", "revoke", rotated["id"])
    assert revoked.returncode == 0 and rotated["id"] in revoked.stdout
    assert rotated["id"] not in {k["id"] for k in ok_json(workdir, "keys", "list")}


def test_create_in_text_mode_shows_the_secret_once_with_a_warning(workdir: Path) -> None:
    done = run(workdir, "keys", "create", "--name", "bot", "--preset", "read-only")
    assert done.returncode == 0, done.stderr
    secrets = [w for w in done.stdout.split() if w.startswith("sk_")]
    assert len(secrets) == 1
    assert "won't be shown again" in done.stdout
    assert secrets[0] not in done.stderr


# -- where the config comes from ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--config", "conf/other.yaml", "check"], id="before-the-command"),
        pytest.param(["check", "--config", "conf/other.yaml"], id="after-the-command"),
    ],
)
def test_config_option_before_or_after_the_command(tmp_path: Path, args: list[str]) -> None:
    write_config(tmp_path / "conf", "other.yaml")
    done = run(tmp_path, *args)
    assert (done.returncode, done.stdout) == (0, "ok: conf/other.yaml (4 routes)\n")


def test_config_defaults_to_keystile_config_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path / "elsewhere", "prod.yaml")
    done = run(tmp_path, "check", env=cli_env(KEYSTILE_CONFIG=str(path)))
    assert (done.returncode, done.stdout) == (0, f"ok: {path} (4 routes)\n")


def test_config_defaults_to_keystile_yaml_in_the_working_directory(workdir: Path) -> None:
    done = run(workdir, "check")
    assert (done.returncode, done.stdout) == (0, "ok: keystile.yaml (4 routes)\n")


# -- errors: one line, the right status, never a traceback ----------------------------

LONG_NAME = "x" * 101


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        pytest.param(["keys", "revoke", "key_nope"], 1, "no key with id 'key_nope'", id="unknown"),
        pytest.param(["keys", "create", "--name", ""], 2, "argument --name", id="empty-name"),
        pytest.param(["keys", "create", "--name", LONG_NAME], 2, "at most 100", id="name-over-100"),
        pytest.param(["keys", "create", "--name", "a", "--expires-in-days", "366"], 2,
                     "argument --expires-in-days", id="days-366"),
        pytest.param(["keys", "create", "--name", "a", "--expires-in-days", "ten"], 2,
                     "invalid int value", id="days-not-a-number"),
        pytest.param(["keys", "create", "--name", "a", "--scope", "bad scope"], 2,
                     "malformed scope", id="malformed-scope"),
        pytest.param(["keys", "create", "--name", "a", "--rate-limit", "lots"], 2,
                     "argument --rate-limit", id="bad-rate-limit"),
        pytest.param(["keys", "create", "--scope", "a"], 2, "--name", id="name-missing"),
        pytest.param(["keys", "rotate", "key_x", "--grace", "forever"], 2, "argument --grace",
                     id="bad-grace"),
        pytest.param(["frobnicate"], 2, "invalid choice", id="unknown-command"),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line(
    workdir: Path, args: list[str], status: int, text: str
) -> None:
    assert_one_error_line(run(workdir, *args), status, text)


def test_unreachable_store_exits_3(workdir: Path) -> None:
    (workdir / "keystile.yaml").write_text(f'store: "{UNREACHABLE_PG}"\n', encoding="utf-8")
    done = run(workdir, "keys", "list")
    assert_one_error_line(done, 3, "unavailable")


def test_missing_pepper_exits_1_and_names_the_variable(workdir: Path) -> None:
    done = run(workdir, "keys", "list", env=cli_env(KEYSTILE_PEPPER=None))
    assert_one_error_line(done, 1, "KEYSTILE_PEPPER is not set")


def test_missing_config_file_exits_1(tmp_path: Path) -> None:
    done = run(tmp_path, "keys", "list")
    assert_one_error_line(done, 1, "no config file at keystile.yaml")


def test_bad_yaml_exits_1_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "keystile.yaml").write_text("store: 'sqlite:///k.db'\nroutes: [\n", "utf-8")
    done = run(tmp_path, "keys", "create", "--name", "x")
    assert_one_error_line(done, 1, "keystile.yaml:3: invalid YAML")


# -- check, explain, db init -----------------------------------------------------------------


def test_check_reports_an_invalid_config_with_its_line(tmp_path: Path) -> None:
    bad = textwrap.dedent(
        """\
        store: "sqlite:///k.db"
        limits:
          key: "1000/hour"
          org: "lots per day"
        """
    )
    (tmp_path / "keystile.yaml").write_text(bad, encoding="utf-8")
    done = run(tmp_path, "check")
    assert_one_error_line(done, 1, "keystile.yaml:4:")
    assert done.stdout == ""


def test_explain_a_matching_route(workdir: Path) -> None:
    done = run(workdir, "explain", "post", "/api/v1/events/42/results")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "rule:      /api/v1/events/{event_id}/results [POST] (keystile.yaml:10)" in out
    assert "event_id=42" in out and "public:    no" in out
    assert "any of: results, admin" in out
    for limit in ("100/minute per key", "1000/hour", "10000/day", "pro=600/minute", "20/minute"):
        assert limit in out


def test_explain_an_unmatched_path_names_the_default(workdir: Path) -> None:
    done = run(workdir, "explain", "GET", "/nowhere")
    assert (done.returncode, done.stderr) == (0, "")
    assert "no rule matches; default: deny" in done.stdout


def test_check_and_explain_speak_json_too(workdir: Path) -> None:
    import json

    checked = run(workdir, "check", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
    done = run(workdir, "explain", "post", "/api/v1/events/42/results", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["rule"]["path"] == "/api/v1/events/{event_id}/results"
    assert data["rule"]["params"] == {"event_id": "42"} and data["rule"]["line"] == 10
    assert data["rule"]["scopes_any"] == ["results", "admin"]
    assert data["limits"]["route"] == "100/minute" and data["refused"] is None
    nowhere = json.loads(run(workdir, "explain", "GET", "/nowhere", "--json").stdout)
    assert nowhere["rule"] is None and nowhere["refused"]["status"] == 403
    tricky = json.loads(run(workdir, "explain", "GET", "/a/../b", "--json").stdout)
    assert tricky["refused"]["status"] == 400


def test_db_init_creates_the_tables(workdir: Path) -> None:
    done = run(workdir, "db", "init")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: created the key tables")
    assert (workdir / "keys.db").stat().st_size > 0


# -- the two entry points ------------------------------------------------------------------


def test_python_dash_m_help(tmp_path: Path) -> None:
    done = run(tmp_path, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: keystile")
    for command in ("keys", "db", "check", "explain"):
        assert command in done.stdout


def test_console_script_runs_check(workdir: Path) -> None:
    assert (Path(sys.executable).parent / "keystile").exists()
    done = run(workdir, "check", script=True)
    assert (done.returncode, done.stdout) == (0, "ok: keystile.yaml (4 routes)\n")


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_create_list_revoke_on_postgres(tmp_path: Path) -> None:
    _reset_sql(POSTGRES_URL)
    (tmp_path / "keystile.yaml").write_text(f'store: "{POSTGRES_URL}"\n', encoding="utf-8")
    created = ok_json(  # a config without routes knows no scope: the operator insists
        tmp_path, "keys", "create", "--name", "pg", "--scope", "results", "--allow-unknown-scope"
    )
    assert created["id"] in {k["id"] for k in ok_json(tmp_path, "keys", "list")}
    done = run(tmp_path, "keys", "revoke", created["id"])
    assert done.returncode == 0, done.stderr
    assert created["id"] not in {k["id"] for k in ok_json(tmp_path, "keys", "list")}
