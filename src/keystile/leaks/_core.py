"""The leak-report endpoint, written once and free of I/O.

``LeakEndpoint.handle`` is a flow (as in ``keystile.lifecycle``): it yields
what it needs (``ReadBody``, ``VerifyingKey``, ``StoreCall``) and receives
the answers. ``run_sync`` and ``run_async`` are the two drivers; the ASGI
and WSGI doors only turn their request into a ``LeakRequest`` and read the
body. The order of the checks is the security of the endpoint:

1. only ``POST`` at the mount point;
2. both signature headers present, and a body of at most 1 MiB (a declared
   length over it is refused before a byte is read);
3. the ECDSA P-256 / SHA-256 signature of the raw body verifies under the
   key GitHub names; until then nothing is parsed, looked up or changed;
4. the whole report parses (a JSON array of ``{token, type, url, source}``)
   before any key is touched, so a malformed entry changes nothing;
5. the tokens in one of our formats (checksum included) are looked up by
   digest in one batched call; the keys found still active are revoked
   (``leaked``) in another, and every report of one of our keys is
   audited as ``key.leaked``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keystile._flow import adrive, drive
from keystile.errors import ServiceUnavailable
from keystile.leaks._public_keys import PublicKeys
from keystile.pipeline import Refusal
from keystile.responses import render_refusal
from keystile.stores.base import KeyRecord, StoreCall

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = [
    "MAX_BODY",
    "Feedback",
    "LeakEndpoint",
    "LeakRequest",
    "ReadBody",
    "VerifyingKey",
    "parse_reports",
    "run_async",
    "run_sync",
]

MAX_BODY = 1024 * 1024
"""Largest report read (bytes). GitHub batches tokens; 1,000 of them are ~200 KiB."""
IDENTIFIER_HEADER = "github-public-key-identifier"
SIGNATURE_HEADER = "github-public-key-signature"
MAX_REASON = 255  # the audit table's reason column
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())

UNSIGNED = Refusal(401, "UNAUTHORIZED", "missing or invalid secret-scanning signature")
NOT_FOUND = Refusal(404, "NOT_FOUND", "Not found")
POST_ONLY = Refusal(405, "METHOD_NOT_ALLOWED", "use POST", headers=(("Allow", "POST"),))
TOO_LARGE = Refusal(413, "PAYLOAD_TOO_LARGE", f"request body is over {MAX_BODY} bytes")
UNAVAILABLE = Refusal(
    503, "SERVICE_UNAVAILABLE", "try again shortly", headers=(("Retry-After", "5"),)
)


def bad_report(message: str) -> Refusal:
    return Refusal(400, "BAD_REQUEST", message)


# -- the neutral request and the effects ----------------------------------------------


@dataclass(frozen=True)
class LeakRequest:
    """What the flow needs of a request; the doors build it from a scope or an environ."""

    method: str
    path: str  # below the mount point: "" or "/" is the endpoint
    identifier: str | None
    signature: str | None = field(repr=False)
    content_length: str | None


@dataclass(frozen=True)
class ReadBody:
    """Read the body; answer with at most ``limit`` bytes (stop reading there)."""

    limit: int


@dataclass(frozen=True)
class VerifyingKey:
    """The public key named ``identifier`` (``PublicKeys.get``), or None."""

    identifier: str


@dataclass(frozen=True)
class Report:
    """One reported match; ``token`` is a credential and never leaves this module."""

    token: str = field(repr=False)
    type: str
    url: str
    source: str


@dataclass(frozen=True)
class Feedback:
    """The 200 answer: one ``{token_hash, token_type, label}`` per reported token."""

    items: list[dict[str, str]]


Flow = Generator[Any, Any, "Feedback | Refusal"]


# -- parsing and verifying ---------------------------------------------------------------


def verify(key: ec.EllipticCurvePublicKey, signature_b64: str, body: bytes) -> bool:
    """Whether ``signature_b64`` (base64 of a DER ECDSA signature) signs ``body``."""
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        key.verify(signature, body, _ECDSA_SHA256)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def parse_reports(body: bytes) -> list[Report] | Refusal:
    """The report's entries, or a 400 naming the first thing wrong."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return bad_report("the body is not JSON")
    if not isinstance(data, list):
        return bad_report("the body must be a JSON array of reported tokens")
    reports = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            return bad_report(f"entry {index} is not an object")
        token, kind = entry.get("token"), entry.get("type")
        if not isinstance(token, str) or not token:
            return bad_report(f"entry {index} has no token")
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
            return bad_report(f"entry {index}'s token is not valid text")
        if not isinstance(kind, str) or not kind:
            return bad_report(f"entry {index} has no type")
        extras = []
        for name in ("url", "source"):
            value = entry.get(name)
            if value is not None and not isinstance(value, str):
                return bad_report(f"entry {index}'s {name} is not a string")
            extras.append(_CONTROL.sub("", value or ""))
        reports.append(Report(token, _CONTROL.sub("", kind), extras[0], extras[1]))
    return reports


def token_hash(token: str) -> str:
    """GitHub's ``token_hash``: SHA-256 hex of the token's UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def leak_reason(state: str, report: Report) -> str:
    """The ``key.leaked`` reason: what was done, and where the key was found.

    Cut to the audit table's 255 characters here, with a visible ``...``,
    so every sink (log, table, webhook) reads the same text.
    """
    reason = f"{state}; source={report.source or '?'}; url={report.url or '?'}"
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 3] + "..."
    return reason


# -- the endpoint ----------------------------------------------------------------------------


class LeakEndpoint:
    """The endpoint of one engine: built once per app, then stateless (see module docstring)."""

    def __init__(self, ks: Keystile, public_keys: PublicKeys) -> None:
        self.ks = ks
        self.public_keys = public_keys
        self.error_mode = ks.config.errors

    def __repr__(self) -> str:
        return f"LeakEndpoint({self.public_keys!r})"

    def handle(self, request: LeakRequest) -> Flow:
        if request.path not in ("", "/"):
            return NOT_FOUND
        if request.method != "POST":
            return POST_ONLY
        if not request.identifier or not request.signature:
            return UNSIGNED
        declared = request.content_length
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                return bad_report("invalid Content-Length")
            if int(declared) > MAX_BODY:  # refused before a byte of it is read
                return TOO_LARGE
        body: bytes = yield ReadBody(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return TOO_LARGE
        try:
            key = yield VerifyingKey(request.identifier)
        except ServiceUnavailable:
            return UNAVAILABLE
        if key is None or not verify(key, request.signature, body):
            return UNSIGNED
        reports = parse_reports(body)
        if isinstance(reports, Refusal):
            return reports
        try:
            return (yield from self._act(reports))
        except ServiceUnavailable:
            # Keys revoked before the outage stay revoked; GitHub's retry of the
            # batch finds them so and labels them the same.
            return UNAVAILABLE

    def _act(self, reports: list[Report]) -> Generator[Any, Any, Feedback]:
        ks = self.ks
        # Tokens in one of our formats, checksum included (no I/O); the rest
        # are false positives without a lookup.
        digests: dict[str, str] = {}
        for report in reports:
            if report.token not in digests and ks.key_type_of(report.token) is not None:
                digests[report.token] = ks.digest(report.token)
        records: dict[str, KeyRecord] = {}
        if digests:
            # One batched lookup (a statement per 500 on SQL), not one per
            # token: a report of 1,000 tokens answers well within GitHub's wait.
            found = yield StoreCall("find_by_digests", (list(dict.fromkeys(digests.values())),))
            records = {r.digest: r for r in found if r.digest is not None}
        now = ks.now()
        active = [r.id for r in records.values() if r.is_active(now)]
        revoked: set[str] = set()
        if active:
            done = yield from ks.keys._revoke_many(active, reason="leaked")
            revoked = {r.id for r in done}
            records.update((r.digest, r) for r in done if r.digest is not None)
        items = []
        for report in reports:
            digest = digests.get(report.token)
            record = records.get(digest) if digest is not None else None
            if record is not None:
                if record.id in revoked:
                    state = "revoked"
                    revoked.discard(record.id)  # a second report of it says "already"
                elif record.revoked_at is None and not record.is_active(now):
                    state = "already expired"
                else:
                    state = "already revoked"
                ks.emit("key.leaked", record, reason=leak_reason(state, report))
            items.append(
                {
                    "token_hash": token_hash(report.token),
                    "token_type": report.type,
                    "label": "false_positive" if record is None else "true_positive",
                }
            )
        return Feedback(items)

    def render(self, answer: Feedback | Refusal) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body; never a token (the feedback holds hashes only)."""
        if isinstance(answer, Refusal):
            return render_refusal(answer, self.error_mode)
        body = json.dumps(answer.items, separators=(",", ":")).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        return 200, headers, body


# -- drivers: the only place sync and async differ --------------------------------------------


def run_sync(
    endpoint: LeakEndpoint, request: LeakRequest, read_body: Callable[[int], bytes]
) -> Feedback | Refusal:
    """Answer a request with blocking calls (WSGI)."""

    def perform(effect: Any) -> Any:
        if isinstance(effect, StoreCall):
            return endpoint.ks.store.execute(effect.op, *effect.args)
        if isinstance(effect, VerifyingKey):
            return endpoint.public_keys.get(effect.identifier)
        if isinstance(effect, ReadBody):
            return read_body(effect.limit)
        raise TypeError(f"unknown effect {effect!r}")

    return drive(endpoint.handle(request), perform, ServiceUnavailable)


async def run_async(
    endpoint: LeakEndpoint, request: LeakRequest, read_body: Callable[[int], Awaitable[bytes]]
) -> Feedback | Refusal:
    """Answer a request with awaits, so the event loop never blocks (ASGI)."""

    async def perform(effect: Any) -> Any:
        if isinstance(effect, StoreCall):
            return await endpoint.ks.astore.aexecute(effect.op, *effect.args)
        if isinstance(effect, VerifyingKey):
            return await endpoint.public_keys.aget(effect.identifier)
        if isinstance(effect, ReadBody):
            return await read_body(effect.limit)
        raise TypeError(f"unknown effect {effect!r}")

    return await adrive(endpoint.handle(request), perform, ServiceUnavailable)
