"""The dashboard's two guards against cross-site forms: a signed token and ``Origin``.

A browser attaches the host's session cookie to a form that another site
posts to the dashboard. Two checks stop such a form from changing a key:

- every form carries ``csrf_token``, an HMAC of the session's user and org
  and of when it was issued, keyed by a secret derived from the pepper (or
  the host's own ``secret=``); another site can read neither the page nor the
  secret, so it cannot fill the field in;
- a POST whose ``Origin`` names another host is refused before its body is
  read. ``Origin: null`` (what browsers send under ``Referrer-Policy:
  no-referrer`` and from sandboxed frames) names no origin: the token decides.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

__all__ = ["MAX_AGE", "CsrfSigner", "same_origin"]

MAX_AGE = 24 * 3600
"""Seconds a token stays valid: a form left open for a day must be reloaded."""
CLOCK_SKEW = 60
"""Seconds a token may seem to come from the future (servers whose clocks differ)."""
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class CsrfSigner:
    """Issues and checks ``csrf_token`` values bound to one (user, org).

    >>> signer = CsrfSigner(b"k" * 32)
    >>> token = signer.issue("u_1", "acme", now=1_800_000_000)
    >>> signer.valid(token, "u_1", "acme", now=1_800_000_100)
    True
    >>> signer.valid(token, "u_2", "acme", now=1_800_000_100)
    False

    Security caveat: a token is not single-use; it only proves that the form
    was served to this session's user and org within ``MAX_AGE``. Replaying
    a create is made harmless elsewhere (the form's one-time id).
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the dashboard secret must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "CsrfSigner(...)"  # never the key

    def issue(self, user: str, org: str, *, now: float) -> str:
        issued = int(now)
        return f"{issued}.{self._mac(user, org, issued)}"

    def valid(self, token: str | None, user: str, org: str, *, now: float) -> bool:
        if not token or len(token) > 128:
            return False
        issued_text, dot, mac = token.partition(".")
        if not dot or not issued_text.isascii() or not issued_text.isdigit():
            return False
        issued = int(issued_text)
        if not -CLOCK_SKEW <= now - issued <= MAX_AGE:
            return False
        return hmac.compare_digest(mac, self._mac(user, org, issued))

    def _mac(self, user: str, org: str, issued: int) -> str:
        # Lengths first, so ("a:b", "c") and ("a", "b:c") sign different messages.
        message = f"csrf:{len(user)}:{user}:{len(org)}:{org}:{issued}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a POST's ``Origin`` header is absent, ``null``, or names this host.

    The authority is compared (host name and port, default ports dropped),
    not the scheme: behind a proxy that ends TLS the app sees ``http`` while
    the browser's origin says ``https``. A page on another host, or on
    another port of this one, is another origin and is refused.
    """
    if origin is None or origin == "null":
        return True
    if host is None:
        return False  # nothing to compare with: refuse rather than guess
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path:
        return False
    try:
        port = parts.port
    except ValueError:
        return False
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and str(port) != _DEFAULT_PORTS[parts.scheme]:
        name += f":{port}"
    return name == _authority(host)


def _authority(host: str) -> str:
    """The ``Host`` header, lower-cased, without a default port (80 or 443)."""
    host = host.strip().lower()
    name, colon, port = host.rpartition(":")
    if colon and port in _DEFAULT_PORTS.values() and not name.endswith(":"):
        return name
    return host
