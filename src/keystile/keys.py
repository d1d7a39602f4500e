"""Key secrets: format, checksum, generation and the stored digest.

A secret reads ``{prefix}{random}{checksum}``:

- ``random`` is ``length`` characters drawn uniformly (``secrets.choice``)
  from the type's alphabet, ``0-9A-Za-z`` by default (43 characters, about
  256 bits);
- ``checksum`` is CRC32 of everything before it, prefix included, in base62
  with the same alphabet, zero-padded to 6 characters, as GitHub's tokens do.

The checksum lets a mistyped or invented key be refused without a storage
lookup, and lets secret scanners match the pattern with few false positives.
It is *not* a security control: anybody can compute it.

The store never sees a secret, only ``HMAC-SHA256(pepper, secret)``. A fast
keyed hash is the right tool here (as Stripe and GitHub do): the secret has
256 bits of entropy, so a slow password hash buys nothing and would cost a
few milliseconds on every cache miss. The pepper keeps a stolen database
from being checked against guessed keys offline.

Keys imported from other systems keep their own hash (pbkdf2, bcrypt,
argon2, sha512-crypt), verified through passlib's ``CryptContext`` once and
then upgraded to the digest, so the slow hash runs at most once per key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import string
import zlib
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

from keystile.errors import ConfigError

__all__ = [
    "ALPHABETS",
    "DISPLAY_PREFIX_LENGTH",
    "SCANNER_AFTER",
    "SCANNER_BEFORE",
    "Digester",
    "KeyFormat",
    "digest",
    "display_prefix",
    "imported_hash",
    "imported_hash_context",
    "last4",
    "new_key_id",
    "to_base62",
]

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ALPHABETS = {"base62": BASE62, "hex": "0123456789abcdef"}
_CLASS = {"base62": "[0-9A-Za-z]", "hex": "[0-9a-f]"}
# What may stand before and after a key in scanned text (GitHub's custom
# patterns take them as "before secret" / "after secret"): anything that
# cannot be part of a key, so one type's pattern never matches inside another
# type's key. Config prefixes are drawn from [A-Za-z0-9_-].
SCANNER_BEFORE = r"\A|[^0-9A-Za-z_-]"
SCANNER_AFTER = r"\z|[^0-9A-Za-z_-]"
CHECKSUM_LENGTH = 6
DISPLAY_PREFIX_LENGTH = 14
MIN_RANDOM_BITS = 128
# Longer than any key this library makes; a longer credential is refused as
# malformed before anything else looks at it.
MAX_SECRET_LENGTH = 512


def to_base62(number: int, width: int) -> str:
    """``number`` in base62 (``0-9A-Za-z``), zero-padded on the left to ``width``."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    return "".join(reversed(digits)).rjust(width, "0")


@dataclass(frozen=True)
class KeyFormat:
    """How the secrets of one key type look.

    >>> fmt = KeyFormat(prefix="sk_")
    >>> secret = fmt.generate()
    >>> fmt.matches(secret)
    True
    >>> fmt.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    False
    """

    prefix: str
    alphabet: str = "base62"
    length: int = 43
    checksum: bool = True

    def __post_init__(self) -> None:
        if self.alphabet not in ALPHABETS:
            raise ConfigError(f"unknown key alphabet {self.alphabet!r} (base62 or hex)")
        bits = self.length * math.log2(len(ALPHABETS[self.alphabet]))
        if bits < MIN_RANDOM_BITS:
            raise ConfigError(
                f"key type {self.prefix!r} has {bits:.0f} random bits; at least "
                f"{MIN_RANDOM_BITS} are required"
            )

    @cached_property
    def _chars(self) -> str:
        return ALPHABETS[self.alphabet]

    @cached_property
    def scanner_regex(self) -> str:
        """The regular expression of this format, to register with a secret scanner.

        Prefix, alphabet and length; a regex cannot check the checksum, which
        the receiving end does (``matches``). Scanners should match it between
        ``SCANNER_BEFORE`` and ``SCANNER_AFTER``: without those bounds, a
        prefix such as ``sk_`` is found inside another type's ``live_sk_`` key.
        """
        body = _CLASS[self.alphabet]
        prefix = re.escape(self.prefix)
        if not self.checksum:
            return f"{prefix}{body}{{{self.length}}}"
        if body == _CLASS["base62"]:  # the checksum's own alphabet: one run
            return f"{prefix}{body}{{{self.length + CHECKSUM_LENGTH}}}"
        return f"{prefix}{body}{{{self.length}}}{_CLASS['base62']}{{{CHECKSUM_LENGTH}}}"

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        # The scanners' regex is the one checked here: what GitHub reports is
        # exactly what this accepts (before the checksum).
        return re.compile(self.scanner_regex)

    @property
    def secret_length(self) -> int:
        return len(self.prefix) + self.length + (CHECKSUM_LENGTH if self.checksum else 0)

    def generate(self) -> str:
        """A new secret of this format, from ``secrets``."""
        chars = self._chars
        body = self.prefix + "".join(secrets.choice(chars) for _ in range(self.length))
        return body + self._checksum(body) if self.checksum else body

    def matches(self, candidate: str) -> bool:
        """Whether ``candidate`` has this format and a valid checksum (no I/O)."""
        if len(candidate) != self.secret_length or not self._pattern.fullmatch(candidate):
            return False
        if not self.checksum:
            return True
        body, check = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]
        return hmac.compare_digest(self._checksum(body), check)

    @staticmethod
    def _checksum(body: str) -> str:
        return to_base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def digest(pepper: bytes, secret: str) -> str:
    """The stored form of a secret: hex HMAC-SHA256 keyed by the pepper."""
    return hmac.digest(pepper, secret.encode("utf-8", "surrogateescape"), "sha256").hex()


class Digester:
    """``digest(pepper, secret)`` for one pepper, with the key schedule done once.

    >>> Digester(b"0123456789abcdef")("sk_x") == digest(b"0123456789abcdef", "sk_x")
    True

    HMAC (RFC 2104) hashes the padded key before the message, inside and
    out; those two blocks never change for a pepper, so their SHA-256 states
    are computed here once and copied per call. That halves the cost of the
    one hash every request pays (``hmac.digest`` redoes the key schedule each
    time). The pepper itself is not kept, only the two hash states.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, pepper: bytes) -> None:
        block = hashlib.sha256().block_size
        key = hashlib.sha256(pepper).digest() if len(pepper) > block else pepper
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __repr__(self) -> str:
        return "Digester(...)"  # never the hash states: with them, guesses can be checked

    def __call__(self, secret: str) -> str:
        inner = self._inner.copy()
        inner.update(secret.encode("utf-8", "surrogateescape"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def display_prefix(secret: str) -> str:
    """The first 14 characters, shown in listings to tell keys apart."""
    return secret[:DISPLAY_PREFIX_LENGTH]


def last4(secret: str) -> str:
    return secret[-4:]


def new_key_id() -> str:
    """A public identifier such as ``key_3kTMd2Qm9xTfWb8Z`` (not a secret)."""
    return "key_" + "".join(secrets.choice(BASE62) for _ in range(20))


def imported_hash_context() -> Any:
    """The passlib ``CryptContext`` that verifies hashes imported from other systems.

    Built lazily: passlib and its backends load only when a deployment
    actually imports keys.
    """
    from passlib.context import CryptContext

    return CryptContext(
        schemes=[
            "argon2",
            "bcrypt",
            "pbkdf2_sha256",
            "pbkdf2_sha512",
            "sha512_crypt",
            "sha256_crypt",
            "hex_sha256",  # fastapi-keygate (SHA-256 hex of the whole key)
            "hex_sha512",  # djangorestframework-api-key 3.x (`sha512$$<hex>`, converted on import)
            "django_pbkdf2_sha256",
            "django_argon2",
            "django_bcrypt_sha256",
        ],
    )


# djangorestframework-api-key 3.x: Django's "algorithm$salt$hash" with no
# salt, the hash an unsalted SHA-512 hex digest of the whole key
# ("prefix.secret"): passlib's hex_sha512 once the Django wrapping is gone.
_DRF_SHA512 = re.compile(r"sha512\$\$([0-9a-f]{128})")


@cache
def _checking_context() -> Any:
    return imported_hash_context()


def imported_hash(value: object) -> str:
    """``value`` as the hash an imported key keeps; ``ValueError`` when it is none.

    A hash is kept only if passlib both names its scheme and parses it (its
    salt, rounds and checksum of the right sizes): a hash that merely looks
    like ``$pbkdf2-sha256$…`` would make a key that can never authenticate.
    drf-api-key 3.x's ``sha512$$<hex>`` comes back as the ``hex_sha512``
    digest it is. The message names the scheme, never the hash.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("hash is missing: an imported key needs its hash")
    value = value.strip()
    drf = _DRF_SHA512.fullmatch(value)
    if drf is not None:
        value = drf.group(1)
    context = _checking_context()
    scheme = context.identify(value)
    if scheme is None:
        raise ValueError(f"hash is in no scheme keystile verifies ({', '.join(context.schemes())})")
    try:
        context.handler(scheme).from_string(value)
    except (ValueError, TypeError) as exc:
        # passlib says "malformed <scheme> hash (<reason>)": keep the reason.
        reason = re.search(r"\((.+)\)$", str(exc))
        detail = f" ({reason.group(1)})" if reason else ""
        raise ValueError(f"hash is not a well-formed {scheme} hash{detail}") from None
    return value
