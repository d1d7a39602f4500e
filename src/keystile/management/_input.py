"""The management API's input checks and output shapes (no I/O, no framework).

Everything a request body, a query or the host's ``authenticate`` hands
over is checked here, with a refusal that names the field as the JSON
spells it; and a stored key becomes the JSON the API shows here, once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keystile.pipeline import Refusal
from keystile.scopes import ScopePolicy, is_pattern, is_well_formed
from keystile.stores.base import KeyRecord

__all__ = [
    "ENDPOINTS",
    "JSON_BODY_METHODS",
    "NOT_FOUND",
    "PATH_NOT_FOUND",
    "ApiError",
    "ApiRequest",
    "Caller",
    "ScopeRules",
    "api_paths",
    "bad_request",
    "body_too_large",
    "check_media_type",
    "key_id",
    "optional_key_id",
    "parse_object",
    "query_days",
]


class ApiError(Exception):
    """A refusal raised inside the flow (or by a door reading the body)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        extra = {} if field is None else {"field": field[:100]}
        self.refusal = Refusal(status, code, message, headers, extra)
        super().__init__(message)


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "BAD_REQUEST", message, field=field)


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"request body is over {limit} bytes")


NOT_FOUND = Refusal(404, "NOT_FOUND", "API key not found")
PATH_NOT_FOUND = Refusal(404, "NOT_FOUND", "Not found")


# -- the neutral request and the caller ----------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """What the flow needs of a request, whichever door it came through."""

    method: str
    query: tuple[tuple[str, str], ...] = ()
    endpoint: str = ""  # one of ENDPOINTS: which path under the prefix was asked
    content_type: str | None = None
    carries_api_key: bool = False

    @staticmethod
    def sent_api_key(authorization: str | None, x_api_key: str | None) -> bool:
        scheme = (authorization or "").partition(" ")[0]
        return x_api_key is not None or scheme.lower() == "bearer"


@dataclass(frozen=True)
class Caller:
    """The session behind a request, as the host's ``authenticate`` vouches."""

    user: str
    org: str
    is_admin: bool

    @classmethod
    def of(cls, identity: Any) -> Caller | None:
        if identity is None:
            return None
        # A malformed answer is a bug in the host: fail closed with a 500
        # rather than guess (and never echo it: it may hold session data).
        if isinstance(identity, (tuple, list)) and len(identity) == 3:
            user, org, is_admin = identity
            if (
                isinstance(user, str)
                and user
                and isinstance(org, str)
                and org
                and isinstance(is_admin, bool)
            ):
                return cls(user, org, is_admin)
        raise TypeError("authenticate() must return (user: str, org: str, is_admin: bool) or None")

    def may_change(self, record: KeyRecord) -> bool:
        """Whether this caller may change, rotate or revoke ``record`` (a key of their org).

        SPEC 6: an admin acts on every key of the org; a member only on the
        keys they created (``created_by``) or own (a user key's ``owner``),
        so a member cannot rename, re-scope or revoke an admin's bot key. A
        key with no recorded creator (made from Python or the CLI) is nobody's
        own: only admins may change it.
        """
        return self.is_admin or self.user in (record.created_by, record.owner)


class ScopeRules:
    """What a caller may grant: known scopes only; patterns and destructive ones for admins.

    Built once per app: the concrete scopes the config names
    (``Config.known_scopes()``), and the resources and actions a pattern
    such as ``events:*`` may stand for (one that matches none is a typo).
    """

    def __init__(self, known: frozenset[str], policy: ScopePolicy) -> None:
        self.known = frozenset(s for s in known if not is_pattern(s))
        self.policy = policy
        pairs = [s.partition(":") for s in self.known if ":" in s]
        self._resources = frozenset(r for r, _, _ in pairs)
        self._actions = frozenset(a for _, _, a in pairs)

    def check(self, value: Any, caller: Caller, *, explicit: bool) -> tuple[str, ...]:
        """The scopes a caller may put on a key, or an ``ApiError`` naming the first bad one."""
        if not isinstance(value, (list, tuple)):
            raise bad_request("scopes must be a list of scope names", "scopes")
        if explicit and not value:
            raise bad_request("scopes must not be empty; omit it for the default", "scopes")
        policy = self.policy
        out: dict[str, None] = {}
        for scope in value:
            if not isinstance(scope, str) or not is_well_formed(scope):
                raise bad_request(f"malformed scope {_show(scope)}", "scopes")
            if is_pattern(scope):
                # A wildcard grants scopes the config adds later: only an
                # admin may hand out such an open-ended grant.
                if not caller.is_admin:
                    raise _forbidden(f"only an admin may grant the pattern {_show(scope)}")
                if not self._pattern_is_known(scope):
                    raise bad_request(f"pattern {_show(scope)} matches no known scope", "scopes")
            elif scope not in self.known:
                raise bad_request(f"unknown scope {_show(scope)}", "scopes")
            elif not caller.is_admin and policy.reaches_destructive(scope):
                raise _forbidden(f"only an admin may grant {_show(scope)}")
            out[scope] = None
        return tuple(out)

    def _pattern_is_known(self, pattern: str) -> bool:
        if pattern == "*":
            return True
        resource, _, action = pattern.partition(":")
        return action in self._actions if resource == "*" else resource in self._resources


JSON_BODY_METHODS: Mapping[str, str] = {"POST": "Accept-Post", "PATCH": "Accept-Patch"}
"""The methods that carry a JSON body, each with the header that names the type it takes."""


def check_media_type(method: str, ctype: str | None) -> None:
    """Refuse (415) a ``method`` body declared as anything but ``application/json``.

    A form, ``text/plain`` or a body with no type at all is what a cross-site
    page can send without a CORS preflight, riding the victim's session
    cookie; ``application/json`` cannot be sent so. Parameters (``charset``)
    are allowed and the media type is case-insensitive (RFC 9110 8.3.1);
    lookalikes (``application/json-patch+json``) are refused, since SPEC 6
    takes ``application/json`` only and a JSON Patch body means other things.
    """
    media = (ctype or "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as Content-Type: application/json",
            headers=((JSON_BODY_METHODS[method], "application/json"),),
        )


def parse_object(
    raw: bytes, allowed: frozenset[str], every_field: frozenset[str]
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` fields, or an ``ApiError``."""
    try:
        data = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    for name in sorted(data):
        if name not in allowed:
            what = "unknown field" if name not in every_field else "cannot change"
            raise bad_request(f"{what} {_show(name)}; allowed: {', '.join(sorted(allowed))}", name)
    return data


ENDPOINTS = ("", "rotate", "usage", "events")
"""What lives under the prefix: the collection itself (``""``), then its sub-paths."""


def api_paths(prefix: str) -> tuple[tuple[str, str], ...]:
    """Each endpoint's path, with and without a trailing slash (both answer), and its name.

    A literal path only: placeholders or a query would make the routers of
    the two doors read the prefix differently.
    """
    if (
        not isinstance(prefix, str)
        or not prefix.startswith("/")
        or any(c in prefix for c in "{}<>?#%\\ ")
        or "//" in prefix
    ):
        raise ValueError(f"prefix must be a literal path such as '/api/v1/keys', not {prefix!r}")
    base = prefix.rstrip("/")
    paths: dict[str, str] = {base or "/": "", base + "/": ""}
    for name in ENDPOINTS[1:]:
        paths[f"{base}/{name}"] = paths[f"{base}/{name}/"] = name
    return tuple(paths.items())


def key_id(query: Sequence[tuple[str, str]]) -> str:
    found = optional_key_id(query)
    if found is None:
        raise bad_request("give exactly one key id as ?id=KEY_ID", "id")
    return found


def optional_key_id(query: Sequence[tuple[str, str]]) -> str | None:
    """The one ``?id=`` of the query, ``None`` without one; two, or an empty one, are 400."""
    ids = [value for name, value in query if name == "id"]
    if not ids:
        return None
    if len(ids) != 1 or not ids[0]:
        raise bad_request("give exactly one key id as ?id=KEY_ID", "id")
    return ids[0]


def query_days(query: Sequence[tuple[str, str]], default: int, most: int) -> int:
    """The ``?days=`` of a read: a whole number from 1 to ``most``, ``default`` without one.

    Plain ASCII digits only: ``int()`` would also take ``" 7"``, ``"+7"``,
    ``"7_0"`` and other scripts' digits, each a spelling that another
    reader of the same URL (a cache, a log query) may see differently.
    """
    given = [value for name, value in query if name == "days"]
    if not given:
        return default
    value = given[0]
    if (
        len(given) != 1
        or not (value.isascii() and value.isdigit() and len(value) <= 3)
        or not 1 <= int(value) <= most
    ):
        raise bad_request(f"days must be one whole number from 1 to {most}", "days")
    return int(value)


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", message, field="scopes")


def _unique_keys(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    # Two "scopes" in one object would be read differently by different
    # parsers (a proxy may check the first, we would use the last): refuse.
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("duplicate field")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
