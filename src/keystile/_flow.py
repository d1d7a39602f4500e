"""The two drivers of every flow: the one place where sync and async differ.

keystile writes each piece of logic that needs I/O once, as a generator
(a *flow*) that yields what it needs and receives the answers: the request
decision (``pipeline.decide``), the key lifecycle (``lifecycle``) and the
management API (``management._core``). ``drive`` answers with blocking calls,
``adrive`` with awaits. An exception of a ``catch`` type raised while
answering is thrown into the flow at its yield, so the flow decides what it
becomes (a 503, a 404...); any other exception propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["adrive", "drive"]

T = TypeVar("T")
Catch = type[BaseException] | tuple[type[BaseException], ...]


def drive(flow: Generator[Any, Any, T], perform: Callable[[Any], Any], catch: Catch = ()) -> T:
    """Run ``flow`` to its end, answering each yielded effect with ``perform(effect)``."""
    try:
        effect = next(flow)
        while True:
            try:
                answer = perform(effect)
            except catch as exc:
                effect = flow.throw(exc)
            else:
                effect = flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def adrive(
    flow: Generator[Any, Any, T], perform: Callable[[Any], Awaitable[Any]], catch: Catch = ()
) -> T:
    """The same, awaiting ``perform(effect)``, so the event loop never blocks."""
    try:
        effect = next(flow)
        while True:
            try:
                answer = await perform(effect)
            except catch as exc:
                effect = flow.throw(exc)
            else:
                effect = flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
