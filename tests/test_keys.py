"""Key formats: generation, checksum, digests (property tests for the parser)."""

from __future__ import annotations

import math
import string
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystile import ConfigError
from keystile.keys import BASE62, Digester, KeyFormat, digest, display_prefix, last4, to_base62

SECRET = KeyFormat("sk_")


def test_default_format_is_prefix_43_base62_and_6_checksum_characters() -> None:
    secret = SECRET.generate()
    assert len(secret) == 3 + 43 + 6
    assert secret.startswith("sk_")
    assert set(secret[3:]) <= set(string.ascii_letters + string.digits)
    # The checksum is pinned for secret scanners: CRC32 of all before it, base62, 6 wide.
    body, check = secret[:-6], secret[-6:]
    assert check == to_base62(zlib.crc32(body.encode()), 6)


def test_base62_is_zero_padded_and_ordered_digits_upper_lower() -> None:
    assert to_base62(0, 6) == "000000"
    assert to_base62(61, 2) == "0z"
    assert to_base62(62, 2) == "10"
    assert to_base62(2**32 - 1, 6) == "4gfFC3"


def test_random_part_has_at_least_256_bits_by_default() -> None:
    assert 43 * math.log2(62) > 256


def test_hex_format_without_checksum_matches_existing_products() -> None:
    square = KeyFormat("sq_live_", alphabet="hex", length=64, checksum=False)
    secret = square.generate()
    assert len(secret) == 8 + 64 and square.matches(secret)
    assert not square.matches(secret.upper())


def test_formats_under_128_bits_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 128"):
        KeyFormat("x_", alphabet="hex", length=31)


@given(st.data(), st.text(alphabet=BASE62, min_size=43, max_size=43))
def test_every_single_character_change_is_caught_offline(data: st.DataObject, body: str) -> None:
    secret = "sk_" + body + to_base62(zlib.crc32(("sk_" + body).encode()), 6)
    index = data.draw(st.integers(min_value=3, max_value=len(secret) - 1))
    replacement = data.draw(st.sampled_from(BASE62).filter(lambda c: c != secret[index]))
    assert SECRET.matches(secret)
    assert not SECRET.matches(secret[:index] + replacement + secret[index + 1 :])


@given(st.text(max_size=80))
def test_arbitrary_text_never_raises_and_rarely_matches(text: str) -> None:
    assert SECRET.matches(text) in (True, False)
    if SECRET.matches(text):
        assert text.startswith("sk_") and len(text) == 52


@given(st.text(min_size=1, max_size=100))
def test_digest_is_keyed_hex_sha256(secret: str) -> None:
    a = digest(b"pepper-one-0123456789", secret)
    b = digest(b"pepper-two-0123456789", secret)
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != b


@given(st.binary(min_size=16, max_size=200), st.text(max_size=600))
def test_precomputed_digester_equals_plain_hmac(pepper: bytes, secret: str) -> None:
    # Peppers longer than SHA-256's 64-byte block are hashed first (RFC 2104).
    assert Digester(pepper)(secret) == digest(pepper, secret)
    assert Digester(pepper)(secret) == Digester(pepper)(secret)  # the states are copied, not spent


def test_digester_repr_shows_nothing_keyed() -> None:
    assert repr(Digester(b"pepper-one-0123456789")) == "Digester(...)"


def test_display_parts() -> None:
    secret = SECRET.generate()
    assert display_prefix(secret) == secret[:14] and last4(secret) == secret[-4:]
