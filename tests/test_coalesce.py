"""Concurrent cache misses of one key share one store lookup (keystile._coalesce)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keystile import StoreUnavailable
from keystile._coalesce import AsyncCoalescer, Coalescer
from keystile.pipeline import Admit, Refusal
from keystile.sansio import RequestView
from tests.conftest import make_engine

BURST = 16
SLOW = 0.2  # long enough for the whole burst to arrive while the first lookup runs


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Any]:
    ks = make_engine(f"sqlite:///{tmp_path / 'keys.db'}", cache={"ttl": "60s"})
    yield ks
    ks.close()


def request(secret: str) -> RequestView:
    return RequestView("GET", b"/api/v1/events", headers={"x-api-key": [secret]})


class CountedStore:
    """The engine's real store, with its lookups counted, slowed or failed."""

    def __init__(self, store: Any, fail: bool = False) -> None:
        self.store, self.fail, self.finds = store, fail, 0
        self.lock = threading.Lock()

    def _count(self) -> None:
        with self.lock:
            self.finds += 1

    def _failing(self) -> None:
        if self.fail:  # after the wait, as a timed-out call fails
            raise StoreUnavailable("the key store is down (test)")

    def execute(self, op: str, *args: Any) -> Any:
        if op == "find_by_digest":
            self._count()
            time.sleep(SLOW)
            self._failing()
        return self.store.execute(op, *args)

    async def aexecute(self, op: str, *args: Any) -> Any:
        if op == "find_by_digest":
            self._count()
            await asyncio.sleep(SLOW)
            self._failing()
        return await self.store.aexecute(op, *args)

    def close(self) -> None:
        self.store.close()


@pytest.mark.parametrize("fail", [False, True], ids=["store-up", "store-down"])
def test_threads_missing_the_cache_together_make_one_lookup(engine: Any, fail: bool) -> None:
    secret = engine.keys.create(name="busy", org="acme").secret
    engine.cache.clear()  # the entry has just expired
    counted = CountedStore(engine.store, fail=fail)
    engine._store = counted
    with ThreadPoolExecutor(BURST) as pool:
        decisions = list(pool.map(lambda _: engine.decide(request(secret)), range(BURST)))
    assert counted.finds == 1
    if fail:
        assert all(isinstance(d, Refusal) and d.status == 503 for d in decisions)
    else:
        assert all(isinstance(d, Admit) and d.principal is not None for d in decisions)
        engine.decide(request(secret))  # now cached: no lookup at all
        assert counted.finds == 1


@pytest.mark.parametrize("fail", [False, True], ids=["store-up", "store-down"])
def test_tasks_missing_the_cache_together_make_one_lookup(engine: Any, fail: bool) -> None:
    secret = engine.keys.create(name="busy", org="acme").secret

    async def burst() -> tuple[list[Any], CountedStore]:
        counted = CountedStore(engine.astore, fail=fail)
        engine._astores[asyncio.get_running_loop()] = counted
        engine.cache.clear()
        decisions = await asyncio.gather(*(engine.adecide(request(secret)) for _ in range(BURST)))
        await counted.store.aclose()
        return list(decisions), counted

    decisions, counted = asyncio.run(burst())
    assert counted.finds == 1
    if fail:
        assert all(isinstance(d, Refusal) and d.status == 503 for d in decisions)
    else:
        assert all(isinstance(d, Admit) and d.principal is not None for d in decisions)


def test_a_finished_lookup_is_not_remembered() -> None:
    calls: list[int] = []

    def lookup() -> int:
        calls.append(1)
        return len(calls)

    coalescer = Coalescer()
    assert coalescer.run("d", lookup) == 1
    assert coalescer.run("d", lookup) == 2  # asks again


def test_waiters_ask_again_when_the_leading_task_is_cancelled() -> None:
    async def scenario() -> list[Any]:
        coalescer = AsyncCoalescer()
        calls: list[str] = []

        async def lookup() -> str:
            calls.append("call")
            await asyncio.sleep(0.05)
            return "record"

        leader = asyncio.ensure_future(coalescer.run("d", lookup))
        await asyncio.sleep(0)  # the leader is now inside its lookup
        waiters = [asyncio.ensure_future(coalescer.run("d", lookup)) for _ in range(3)]
        await asyncio.sleep(0)
        leader.cancel()
        results = await asyncio.gather(*waiters)
        assert leader.cancelled()
        assert len(calls) == 2  # the cancelled leader's, then one more for all the waiters
        return results

    assert asyncio.run(scenario()) == ["record"] * 3
