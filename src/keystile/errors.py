"""The exceptions keystile raises.

The tree::

    KeystileError
    ├── ConfigError              a mistake in the configuration (file and line when known)
    ├── KeyInputError (ValueError)  bad arguments to the key API (name, scopes, days...)
    ├── KeyNotFound (LookupError)   no such key id (or not in the caller's org)
    ├── KeyConflict              a unique rule refused the key (one user key per user and
    │                            org; one rotation of a key while its successor is active)
    └── ServiceUnavailable       a backing service failed or timed out
        ├── StoreUnavailable     the key store
        └── LimiterUnavailable   the rate-limiter storage

No exception message ever contains a secret.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "KeyConflict",
    "KeyInputError",
    "KeyNotFound",
    "KeystileError",
    "LimiterUnavailable",
    "ServiceUnavailable",
    "StoreUnavailable",
]


class KeystileError(Exception):
    """Base class of every exception keystile raises on purpose."""


class ConfigError(KeystileError):
    """The configuration is wrong.

    ``str(err)`` reads ``file:line: message`` when the place is known, so that
    ``keystile check`` and a refused start point at the offending line.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}: {self.message}"
        if self.file:
            return f"{self.file}: {self.message}"
        if self.line:
            return f"line {self.line}: {self.message}"
        return self.message


class KeyInputError(KeystileError, ValueError):
    """An argument to the key API is invalid; ``field`` names it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class KeyNotFound(KeystileError, LookupError):
    """No key with that id exists (or it belongs to another organization)."""


class KeyConflict(KeystileError):
    """The store's unique rules refused the key.

    One active user key per (user, org); and a key is rotated once: while
    its successor is active, a second rotation is refused, naming the
    successor to rotate instead.
    """


class ServiceUnavailable(KeystileError):
    """A backing service is down or answered too slowly."""


class StoreUnavailable(ServiceUnavailable):
    """The key store is unreachable or over ``store_timeout``."""


class LimiterUnavailable(ServiceUnavailable):
    """The rate-limiter storage is unreachable or over ``limiter.timeout``."""
