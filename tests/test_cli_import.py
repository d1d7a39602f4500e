"""``keystile keys import``: keys exported from another system keep working.

Each test writes an export the way the other system stores its keys (hashed
with passlib, as djangorestframework-api-key's Django hashers do), imports it
with the real command in a subprocess, then authenticates with the original
keys through the WSGI door.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from passlib.context import CryptContext

from keystile import Keystile
from tests.conftest import PEPPER
from tests.doors import Door
from tests.test_cli import run

CONFIG = """\
store: "sqlite:///{db}"
imported_keys: {imported}
scopes:
  known: [events:read, results]
routes:
  - {{path: /events, methods: [GET], scopes: [events:read]}}
default: authenticated
"""
# Fast settings: these tests are about the import, not about slow hashes.
HASHERS = {
    "django_pbkdf2_sha256": CryptContext(schemes=["django_pbkdf2_sha256"]).copy(
        django_pbkdf2_sha256__rounds=1000
    ),
    "sha512_crypt": CryptContext(schemes=["sha512_crypt"]).copy(sha512_crypt__rounds=1000),
}
DRF_COLUMNS = ["id", "created", "name", "revoked", "expiry_date", "hashed_key", "prefix"]


def legacy_key(prefix: str) -> str:
    """A drf-api-key style key: an 8-character prefix, a dot, a 32-character secret."""
    return f"{prefix}.{hashlib.sha256(prefix.encode()).hexdigest()[:32]}"


def drf_row(prefix: str, scheme: str, **fields: Any) -> dict[str, Any]:
    hashed = HASHERS[scheme].hash(legacy_key(prefix))
    row = {
        "id": f"{prefix}.{hashed}",
        "created": "2025-01-02 03:04:05+00",
        "name": f"legacy {prefix}",
        "revoked": "f",
        "expiry_date": "",
        "hashed_key": hashed,
        "prefix": prefix,
    }
    row.update(fields)
    return row


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "keystile.yaml").write_text(
        CONFIG.format(db=tmp_path / "keys.db", imported="true"), encoding="utf-8"
    )
    return tmp_path


@pytest.fixture
def engine(workdir: Path) -> Iterator[Keystile]:
    with Keystile(str(workdir / "keystile.yaml"), pepper=PEPPER) as ks:
        yield ks


def test_drf_export_imports_and_its_keys_authenticate(workdir: Path) -> None:
    soon = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    rows = [
        drf_row("Pbkdf2Ab", "django_pbkdf2_sha256", expiry_date=soon),
        drf_row("CryptAbc", "sha512_crypt"),
        drf_row("Revoked1", "sha512_crypt", revoked="t"),
        drf_row("Expired1", "sha512_crypt", expiry_date="2020-01-01 00:00:00+00"),
    ]
    export = write_csv(workdir / "apikeys.csv", DRF_COLUMNS, rows)
    done = run(
        workdir, "keys", "import", "--from", "drf-api-key", str(export),
        "--scope", "events:read", "--org", "acme", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [k["name"] for k in report["imported"]] == ["legacy Pbkdf2Ab", "legacy CryptAbc"]
    assert [(s["lookup_prefix"], s["reason"]) for s in report["skipped"]] == [
        ("Revoked1", "revoked"),
        ("Expired1", "expired"),
    ]
    assert all(k["org"] == "acme" and k["scopes"] == ["events:read"] for k in report["imported"])
    assert report["imported"][0]["expires_at"] is not None
    assert "hashed_key" not in done.stdout and rows[0]["hashed_key"] not in done.stdout

    with Keystile(str(workdir / "keystile.yaml"), pepper=PEPPER) as ks:
        door = Door("wsgi", ks)
        for row, record in zip(rows, report["imported"], strict=False):
            key = legacy_key(row["prefix"])
            reply = door("GET", "/events", key=key)
            assert (reply.status, reply.seen["key"]) == (200, record["id"])
        wrong = legacy_key("CryptAbc")[:-1] + "0"
        assert door("GET", "/events", key=wrong).status == 401
        assert door("GET", "/events", key=legacy_key("Revoked1")).status == 401


def test_generic_json_sets_scopes_and_org_per_row(workdir: Path, engine: Keystile) -> None:
    keys = {"Reader01": ["events:read"], "Upload01": ["results"]}
    rows = [
        {
            "name": f"row {prefix}",
            "hash": HASHERS["sha512_crypt"].hash(legacy_key(prefix)),
            "lookup_prefix": prefix,
            "scopes": scopes,
            "org": "club",
        }
        for prefix, scopes in keys.items()
    ]
    export = workdir / "keys.json"
    export.write_text(json.dumps(rows), encoding="utf-8")
    done = run(workdir, "keys", "import", str(export))
    assert done.returncode == 0, done.stderr
    assert "Imported 2 keys" in done.stdout

    door = Door("wsgi", engine)
    assert door("GET", "/events", key=legacy_key("Reader01")).status == 200
    refused = door("GET", "/events", key=legacy_key("Upload01"))
    assert (refused.status, refused.json["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert {r.org for r in engine.keys.list()} == {"club"}


def test_django_dumpdata_export_is_read_and_a_second_run_skips_what_is_there(
    workdir: Path, engine: Keystile
) -> None:
    row = drf_row("Dumpdata", "django_pbkdf2_sha256")
    dumped = [{"model": "rest_framework_api_key.apikey", "pk": row.pop("id"), "fields": row}]
    export = workdir / "dump.json"
    export.write_text(json.dumps(dumped), encoding="utf-8")
    first = run(workdir, "keys", "import", "--from", "drf-api-key", str(export))
    again = run(workdir, "keys", "import", "--from", "drf-api-key", str(export), "--json")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert json.loads(again.stdout)["skipped"][0]["reason"] == "already imported"
    assert len(engine.keys.list()) == 1
    assert Door("wsgi", engine)("GET", "/x", key=legacy_key("Dumpdata")).status == 200


def test_dry_run_checks_the_file_and_writes_nothing(workdir: Path, engine: Keystile) -> None:
    export = write_csv(workdir / "apikeys.csv", DRF_COLUMNS, [drf_row("DryRun01", "sha512_crypt")])
    done = run(workdir, "keys", "import", "--from", "drf-api-key", str(export), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "Would import 1 key" in done.stdout
    assert engine.keys.list() == []


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        pytest.param(
            "name,hash,lookup_prefix\nx,$1$abc$defghijklmnopqrstuvwx0,Md5Crypt\n",
            "keys.csv:2: hash is in no scheme keystile verifies",
            id="unverifiable-scheme",
        ),
        pytest.param(
            "name,lookup_prefix\nx,NoHash01\n", "keys.csv:2: no 'hash'", id="missing-hash"
        ),
        pytest.param(
            "name,hash,lookup_prefix,expires_at\nx,{hash},When0001,next tuesday\n",
            "keys.csv:2: 'next tuesday' is not an ISO 8601 time",
            id="bad-expiry",
        ),
        pytest.param(
            "name,hash,lookup_prefix,scopes\nx,{hash},Scope001,Bad Scope!\n",
            "keys.csv:2: malformed scope",
            id="bad-scope",
        ),
    ],
)
def test_a_bad_row_is_named_and_exits_2(
    workdir: Path, engine: Keystile, contents: str, message: str
) -> None:
    hashed = HASHERS["sha512_crypt"].hash("anything.at-all")
    export = workdir / "keys.csv"
    export.write_text(contents.replace("{hash}", hashed), encoding="utf-8")
    done = run(workdir, "keys", "import", str(export))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("keystile: error: " + message), done.stderr
    assert hashed not in done.stderr
    assert engine.keys.list() == []


def test_import_needs_imported_keys_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "keystile.yaml").write_text(
        CONFIG.format(db=tmp_path / "keys.db", imported="false"), encoding="utf-8"
    )
    export = write_csv(tmp_path / "a.csv", DRF_COLUMNS, [drf_row("Config01", "sha512_crypt")])
    done = run(tmp_path, "keys", "import", "--from", "drf-api-key", str(export))
    assert done.returncode == 1
    assert "set 'imported_keys: true' first" in done.stderr


def test_drf_v3_sha512_hashes_import_and_authenticate(workdir: Path, engine: Keystile) -> None:
    key = legacy_key("Sha512v3")
    row = drf_row("Sha512v3", "sha512_crypt")
    row["hashed_key"] = "sha512$$" + hashlib.sha512(key.encode()).hexdigest()
    export = write_csv(workdir / "v3.csv", DRF_COLUMNS, [row])
    done = run(workdir, "keys", "import", "--from", "drf-api-key", str(export))
    assert done.returncode == 0, done.stderr
    assert Door("wsgi", engine)("GET", "/x", key=key).status == 200
