"""The public keys that GitHub signs its secret-scanning reports with.

``PublicKeys`` turns what the host passes as ``public_keys`` into the
verifying keys, by identifier:

- a mapping (identifier -> PEM) is loaded and checked once, when the app is
  built: a key that is not an ECDSA P-256 public key is a ``ConfigError``
  there, not a 401 on GitHub's first report;
- a callable returning such a mapping is called on first need, and again,
  at most once a minute, when a report names an identifier it does not know
  (GitHub rotates its signing keys by publishing the new one first). Keys
  already known are answered from memory without a call.

The default callable, ``GitHubPublicKeys``, reads GitHub's published list
(``GITHUB_KEYS_URL``); its ``url`` is a parameter so that the same code can
be pointed at a mirror, or at a local server in tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from keystile.errors import ConfigError, ServiceUnavailable

__all__ = [
    "GITHUB_KEYS_URL",
    "REFETCH_INTERVAL",
    "GitHubPublicKeys",
    "PublicKeys",
    "PublicKeysSource",
    "PublicKeysUnavailable",
]

logger = logging.getLogger("keystile.leaks")

GITHUB_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"
REFETCH_INTERVAL = 60.0
"""Seconds between two calls of a ``public_keys`` callable for unknown identifiers."""
MAX_KEYS_DOCUMENT = 1024 * 1024

PublicKeysSource = Mapping[str, "str | bytes"] | Callable[[], Mapping[str, "str | bytes"]]


class PublicKeysUnavailable(ServiceUnavailable):
    """The signing keys could not be fetched, and the report names one not yet known."""


def load_key(pem: str | bytes) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key from its PEM; ``ValueError`` for anything else."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


class PublicKeys:
    """Verifying keys by identifier, from a mapping or a callable (see the module docstring).

    ``get`` may block (it calls the callable); ``aget`` runs that call in a
    worker thread, so the event loop never waits on GitHub. Thread-safe: one
    call at a time, and callers that arrive meanwhile read its result.
    """

    def __init__(
        self,
        source: PublicKeysSource,
        *,
        refetch_interval: float = REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._fetch: Callable[[], Mapping[str, str | bytes]] | None = None
        if isinstance(source, Mapping):
            for identifier, pem in source.items():
                try:
                    self._keys[str(identifier)] = load_key(pem)
                except ValueError as exc:
                    raise ConfigError(f"public_keys[{identifier!r}] is {exc}") from None
        elif callable(source):
            self._fetch = source
        else:
            raise ConfigError("public_keys must be a mapping of identifier to PEM, or a callable")
        self._interval = refetch_interval
        self._clock = clock
        self._fetched_at: float | None = None
        self._failed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PublicKeys(known={sorted(self._keys)!r})"

    def get(self, identifier: str) -> ec.EllipticCurvePublicKey | None:
        """The key named ``identifier``, fetching the list again if allowed; None if unknown.

        Raises ``PublicKeysUnavailable`` when a fetch was due and failed.
        """
        key = self._keys.get(identifier)
        if key is not None or self._fetch is None:
            return key
        with self._lock:
            key = self._keys.get(identifier)
            if key is not None:  # fetched by the caller we waited for
                return key
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self._interval:
                self._fetched_at = now
                try:
                    self._keys = self._load(self._fetch)
                    self._failed = False
                except PublicKeysUnavailable:
                    self._failed = True  # the known keys stay; this one cannot be told
            if self._failed:
                # Not a 401: the sender did nothing wrong, and should try again.
                raise PublicKeysUnavailable("the secret-scanning public keys are unavailable")
        return self._keys.get(identifier)

    async def aget(self, identifier: str) -> ec.EllipticCurvePublicKey | None:
        key = self._keys.get(identifier)
        if key is not None or self._fetch is None:
            return key
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.get, identifier)

    def _load(
        self, fetch: Callable[[], Mapping[str, str | bytes]]
    ) -> dict[str, ec.EllipticCurvePublicKey]:
        try:
            listed = fetch()
            if not isinstance(listed, Mapping):
                raise TypeError("public_keys() must return a mapping of identifier to PEM")
        except Exception as exc:  # the host's callable: whatever it raises is a failed fetch
            logger.warning(
                "could not fetch the secret-scanning public keys: %s: %s", type(exc).__name__, exc
            )
            raise PublicKeysUnavailable("the secret-scanning public keys are unavailable") from exc
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for identifier, pem in listed.items():
            try:
                keys[str(identifier)] = load_key(pem)
            except ValueError as exc:
                logger.warning("skipping public key %r: %s", identifier, exc)
        # A key the list no longer holds is retired: it verifies nothing more.
        return keys


class GitHubPublicKeys:
    """Fetches GitHub's published secret-scanning keys (the default ``public_keys``).

    >>> keys = GitHubPublicKeys()                # doctest: +SKIP
    >>> keys()                                   # doctest: +SKIP
    {'bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c': '-----BEGIN ...'}

    The document is ``{"public_keys": [{"key_identifier", "key", "is_current"}]}``;
    every listed key is kept, current or not, since GitHub may still sign
    with a key it is phasing out.
    """

    def __init__(self, url: str = GITHUB_KEYS_URL, *, timeout: float = 5.0) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"the public keys URL must be http(s): {url!r}")
        self.url = url
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"GitHubPublicKeys(url={self.url!r})"

    def __call__(self) -> dict[str, str]:
        request = urllib.request.Request(
            self.url,
            headers={"Accept": "application/json", "User-Agent": "keystile-leaks"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:
            body = reply.read(MAX_KEYS_DOCUMENT + 1)
        if len(body) > MAX_KEYS_DOCUMENT:
            raise ValueError(f"{self.url} answered more than {MAX_KEYS_DOCUMENT} bytes")
        return parse_keys_document(json.loads(body))


def parse_keys_document(document: Any) -> dict[str, str]:
    """Identifier -> PEM from GitHub's keys document; ``ValueError`` if it has another shape."""
    listed = document.get("public_keys") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        raise ValueError("the keys document has no public_keys list")
    keys: dict[str, str] = {}
    for item in listed:
        if not isinstance(item, dict):
            raise ValueError("a public_keys entry is not an object")
        identifier, pem = item.get("key_identifier"), item.get("key")
        if not isinstance(identifier, str) or not isinstance(pem, str):
            raise ValueError("a public_keys entry lacks key_identifier or key")
        keys[identifier] = pem
    return keys
