"""Keys imported from other systems: verified once by their own hash, then upgraded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from passlib.context import CryptContext

from tests.conftest import make_engine
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
    import hashlib

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
