"""keystile: API-key authentication, scope authorization and rate limiting."""

from keystile.__about__ import __version__
from keystile.engine import Keystile
from keystile.errors import (
    ConfigError,
    KeyConflict,
    KeyInputError,
    KeyNotFound,
    KeystileError,
    LimiterUnavailable,
    ServiceUnavailable,
    StoreUnavailable,
)
from keystile.lifecycle import NewKey
from keystile.pipeline import Principal
from keystile.usage import UsageDay

__all__ = [
    "ConfigError",
    "KeyConflict",
    "KeyInputError",
    "KeyNotFound",
    "Keystile",
    "KeystileError",
    "LimiterUnavailable",
    "NewKey",
    "Principal",
    "ServiceUnavailable",
    "StoreUnavailable",
    "UsageDay",
    "__version__",
]
