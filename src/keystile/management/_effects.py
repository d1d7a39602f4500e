"""What the management API's flow asks its door to do, and the two drivers that do it.

The flow (``_core.KeyAPI.handle``) yields these effects; ``run_sync``
answers them with blocking calls (the WSGI door), ``run_async`` with awaits
(the ASGI door). Key and audit calls are answered here, the same for both
doors; a door answers only its own effects (the session, the body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from keystile._flow import adrive, drive
from keystile.pipeline import Refusal

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = [
    "MAX_BODY",
    "AuditCall",
    "Authenticate",
    "Effect",
    "Flow",
    "KeyCall",
    "ReadBody",
    "Reply",
    "run_async",
    "run_sync",
]

MAX_BODY = 64 * 1024
"""Largest request body read (bytes): a key request is a few hundred bytes."""


# -- effects: what the flow asks its door to do ----------------------------------


@dataclass(frozen=True)
class Authenticate:
    """Call the host's ``authenticate(request)``; answer with what it returns."""


@dataclass(frozen=True)
class ReadBody:
    """Read the request body, at most ``limit`` bytes (raise ``ApiError`` beyond)."""

    limit: int = MAX_BODY


@dataclass(frozen=True)
class KeyCall:
    """One ``ks.keys`` operation; the async door calls its ``a``-prefixed twin."""

    op: str  # create | list | get | update | revoke | rotate | usage | usage_totals
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    on: ClassVar[str] = "keys"  # the engine's attribute that answers

    def run(self, ks: Keystile) -> Any:
        return getattr(getattr(ks, self.on), self.op)(*self.args, **self.kwargs)

    async def arun(self, ks: Keystile) -> Any:
        return await getattr(getattr(ks, self.on), "a" + self.op)(*self.args, **self.kwargs)


@dataclass(frozen=True)
class AuditCall(KeyCall):
    """One ``ks.audit`` read (``events``), answered as a ``KeyCall`` is."""

    on: ClassVar[str] = "audit"


Effect = Authenticate | ReadBody | KeyCall


@dataclass(frozen=True)
class Reply:
    """A successful answer: status and JSON payload."""

    status: int
    payload: Mapping[str, Any]


Flow = Generator[Effect, Any, Reply | Refusal]


# -- drivers: the only place sync and async differ ------------------------------------------


def run_sync(flow: Flow, ks: Keystile, answer: Callable[[Effect], Any]) -> Reply | Refusal:
    """Drive a flow with blocking calls (``answer`` handles the door's own effects)."""

    def perform(effect: Effect) -> Any:
        return effect.run(ks) if isinstance(effect, KeyCall) else answer(effect)

    # Every exception goes back into the flow, which decides what becomes a refusal.
    return drive(flow, perform, Exception)


async def run_async(
    flow: Flow, ks: Keystile, answer: Callable[[Effect], Awaitable[Any]]
) -> Reply | Refusal:
    """Drive a flow with awaits, so the event loop never blocks on the store."""

    async def perform(effect: Effect) -> Any:
        return await (effect.arun(ks) if isinstance(effect, KeyCall) else answer(effect))

    return await adrive(flow, perform, Exception)
