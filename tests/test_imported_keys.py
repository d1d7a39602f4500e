"""Keys imported from other systems: verified once by their own hash, then upgraded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from passlib.context import CryptContext

from keystile import Keystile
from keystile.errors import KeyInputError
from tests.conftest import PEPPER, make_engine
from tests.doors import Door

SCHEMES = ["pbkdf2_sha256", "bcrypt", "argon2", "sha512_crypt", "django_pbkdf2_sha256"]


@pytest.fixture
def ks(store_url: str) -> Iterator[Any]:
    engine = make_engine(store_url, imported_keys=True)
    yield engine
    engine.close()


@pytest.fixture
def verify_calls(ks: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = ks._verify_imported

    def counting(effect: Any) -> bool:
        calls.append(effect.hash.split("$")[1] if "$" in effect.hash else effect.hash)
        return bool(original(effect))

    monkeypatch.setattr(ks, "_verify_imported", counting)
    return calls


@pytest.mark.parametrize("scheme", SCHEMES)
def test_imported_key_is_verified_once_then_upgraded_to_the_digest(
    ks: Any, verify_calls: list[str], scheme: str
) -> None:
    legacy = "Abc12345.s3cr3tS3cr3tS3cr3tS3cr3tS3cr3t00"  # drf-api-key style: prefix.secret
    hashed = CryptContext(schemes=[scheme]).hash(legacy)
    record = ks.keys.import_key(
        "from drf", hash=hashed, lookup_prefix="Abc12345", scopes=["results"], org="acme"
    )
    assert record.digest is None and record.imported_hash == hashed
    door = Door("wsgi", ks)
    assert door("GET", "/x", key=legacy).seen["key"] == record.id
    assert len(verify_calls) == 1
    upgraded = ks.keys.get(record.id)
    assert upgraded.digest == ks.digest(legacy) and upgraded.imported_hash is None
    ks.cache.clear()  # even past the cache, the slow hash never runs again
    assert door("GET", "/x", key=legacy).seen["key"] == record.id
    assert len(verify_calls) == 1


def test_wrong_secret_for_an_imported_key_is_refused(ks: Any, verify_calls: list[str]) -> None:
    legacy = "Xyz98765.correct-horse-battery-staple-0000"
    hashed = CryptContext(schemes=["pbkdf2_sha256"]).hash(legacy)
    ks.keys.import_key("old", hash=hashed, lookup_prefix="Xyz98765", org="acme")
    with Door("asgi", ks) as door:
        reply = door("GET", "/x", key="Xyz98765.wrong-horse-battery-staple-00000")
    assert reply.status == 401 and reply.json["error"] == "invalid API key"
    assert verify_calls == ["pbkdf2-sha256"]


def test_own_prefix_with_bad_checksum_never_reaches_the_import_path(
    ks: Any, verify_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_store(*args: Any) -> Any:
        raise AssertionError("a malformed key must not cost a store call")

    monkeypatch.setattr(ks.store, "execute", no_store)
    forged = "sk_" + "A" * 49
    assert Door("wsgi", ks)("GET", "/x", key=forged).status == 401
    assert verify_calls == []


def test_imports_are_off_unless_configured(store_url: str) -> None:
    ks = make_engine(store_url)
    try:
        legacy = "Abc12345.s3cr3tS3cr3tS3cr3tS3cr3tS3cr3t00"
        hashed = CryptContext(schemes=["pbkdf2_sha256"]).hash(legacy)
        ks.keys.import_key("x", hash=hashed, lookup_prefix="Abc12345", org="acme")
        assert Door("wsgi", ks)("GET", "/x", key=legacy).status == 401
    finally:
        ks.close()


def test_fastapi_keygate_keys_import_by_their_prefix_and_sha256(
    ks: Any, verify_calls: list[str]
) -> None:
    legacy = "kg_1a2b3c4d_Zx-9_y8w7v6u5t4s3r2q1p0o9n8m7l6k5j4i3h2g"  # kg_<prefix>_<secret>
    record = ks.keys.import_key(
        "from keygate",
        hash=hashlib.sha256(legacy.encode()).hexdigest(),
        lookup_prefix="kg_1a2b3c4d",
        org="acme",
    )
    with Door("wsgi", ks) as door:
        assert door("GET", "/x", key=legacy).seen["key"] == record.id
        assert door("GET", "/x", key=legacy[:-1] + "X").status == 401
    assert ks.keys.get(record.id).digest == ks.digest(legacy)


# -- what import_key takes ------------------------------------------------------------

LEGACY = "Drf3abcd.s3cr3tS3cr3tS3cr3tS3cr3tS3cr3t00"  # drf-api-key: prefix.secret
DRF3_HASH = "sha512$$" + hashlib.sha512(LEGACY.encode()).hexdigest()  # drf-api-key 3.x, and fast


@pytest.fixture
def memory_ks() -> Iterator[Any]:
    engine = make_engine("memory://", imported_keys=True)
    yield engine
    engine.close()


# Each hash passlib cannot take: the scheme is unknown, or it is recognised
# but its parts are the wrong size (the migration guide's own placeholder
# once imported as a key that could never authenticate).
@pytest.mark.parametrize(
    ("hashed", "message"),
    [
        pytest.param("$pbkdf2-sha256$29000$N2bs...$AbC...", "pbkdf2_sha256", id="placeholder"),
        pytest.param("pbkdf2_sha256$1000$salt$short", "django_pbkdf2_sha256", id="django-cut"),
        pytest.param("$argon2id$v=19$m=65536,t=3,p=4$garbage", "argon2", id="argon2-salt"),
        pytest.param("sha512$$" + "ab" * 63, "no scheme", id="drf3-short"),
        pytest.param("md5$$" + "ab" * 16, "no scheme", id="unknown-scheme"),
        pytest.param("", "missing", id="empty"),
        pytest.param("   ", "missing", id="blank"),
    ],
)
def test_a_hash_passlib_cannot_parse_is_refused_at_import(
    memory_ks: Any, hashed: str, message: str
) -> None:
    with pytest.raises(KeyInputError) as caught:
        memory_ks.keys.import_key("old", hash=hashed, lookup_prefix="Drf3abcd", org="acme")
    assert caught.value.field == "hash"
    assert message in str(caught.value)
    if hashed.strip():
        assert hashed not in str(caught.value)
    assert memory_ks.keys.list_all(org="acme") == []


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_drf_api_key_3_keys_keep_working_with_their_own_header(store_url: str, kind: str) -> None:
    """An export of drf-api-key 3.x (``sha512$$<hex>``), from Python, sent as its clients do."""
    ks = make_engine(
        store_url, imported_keys=True, credentials=["bearer", "x-api-key", "scheme:Api-Key"]
    )
    try:
        record = ks.keys.import_key("drf 3", hash=DRF3_HASH, lookup_prefix="Drf3abcd", org="acme")
        with Door(kind, ks) as door:
            reply = door("GET", "/x", [("Authorization", f"Api-Key {LEGACY}")])
            assert reply.status == 200 and reply.seen["key"] == record.id
            wrong = door("GET", "/x", [("Authorization", f"Api-Key {LEGACY[:-1]}1")])
            assert wrong.status == 401
        assert ks.keys.get(record.id).digest == ks.digest(LEGACY)
    finally:
        ks.close()


def test_an_imported_expiry_is_kept_to_the_instant(store_url: str) -> None:
    ks = make_engine(store_url, imported_keys=True)
    try:
        when = datetime(2031, 12, 31, tzinfo=timezone.utc)
        hashed = DRF3_HASH
        record = ks.keys.import_key(
            "old", hash=hashed, lookup_prefix="Drf3abcd", org="acme", expires_at=when
        )
        assert record.expires_at == when  # past the key API's 365 days: the old promise
        assert ks.keys.get(record.id).expires_at == when
        paris = timezone(timedelta(hours=1))
        other = ks.keys.import_key(
            "old 2",
            hash=hashed,
            lookup_prefix="Drf3abce",
            org="acme",
            expires_at=datetime(2031, 12, 31, 1, 0, 0, tzinfo=paris),
        )
        assert ks.keys.get(other.id).expires_at == when
    finally:
        ks.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"expires_at": datetime(2031, 12, 31)}, "timezone-aware", id="naive"),
        pytest.param({"expires_at": "2031-12-31T00:00:00Z"}, "timezone-aware", id="text"),
        pytest.param(
            {"expires_at": datetime(2020, 1, 1, tzinfo=timezone.utc)}, "already past", id="past"
        ),
        pytest.param(
            {"expires_at": datetime(2031, 12, 31, tzinfo=timezone.utc), "expires_in_days": 30},
            "not both",
            id="both",
        ),
    ],
)
def test_a_bad_imported_expiry_is_refused(
    memory_ks: Any, options: dict[str, Any], message: str
) -> None:
    hashed = DRF3_HASH
    with pytest.raises(KeyInputError, match=message) as caught:
        memory_ks.keys.import_key("old", hash=hashed, lookup_prefix="Drf3abcd", **options)
    assert caught.value.field == "expires_at"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_an_imported_key_expires_at_its_exported_instant(kind: str) -> None:
    when = datetime(2031, 12, 31, tzinfo=timezone.utc)
    now = [when - timedelta(seconds=1)]
    ks = Keystile(
        {"store": "memory://", "imported_keys": True, "default": "authenticated"},
        pepper=PEPPER,
        clock=lambda: now[0],
    )
    try:
        hashed = DRF3_HASH
        ks.keys.import_key("old", hash=hashed, lookup_prefix="Drf3abcd", expires_at=when)
        with Door(kind, ks) as door:
            assert door("GET", "/x", key=LEGACY).status == 200
            now[0] = when
            reply = door("GET", "/x", key=LEGACY)
            assert (reply.status, reply.json["error"]) == (401, "API key has expired")
    finally:
        ks.close()
