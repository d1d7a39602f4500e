"""Key stores, picked by URL scheme: ``memory://`` or any SQLAlchemy URL."""

from __future__ import annotations

from keystile.stores.base import AsyncKeyStore, KeyRecord, KeyStore, StoreCall
from keystile.stores.memory import MemoryKeyStore

__all__ = [
    "AsyncKeyStore",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "StoreCall",
    "is_memory_url",
    "open_async_store",
    "open_store",
]


def is_memory_url(url: str) -> bool:
    return url.startswith("memory:")


def open_store(url: str, *, timeout: float = 1.0) -> KeyStore:
    """A sync store for ``url``; SQL drivers load only when a SQL URL is used."""
    if is_memory_url(url):
        return MemoryKeyStore(url)
    from keystile.stores.sql import SQLKeyStore

    return SQLKeyStore(url, timeout=timeout)


def open_async_store(url: str, *, timeout: float = 1.0) -> AsyncKeyStore:
    if is_memory_url(url):
        return MemoryKeyStore(url)
    from keystile.stores.sql import AsyncSQLKeyStore

    return AsyncSQLKeyStore(url, timeout=timeout)
