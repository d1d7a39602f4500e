"""How keystile shows a URL that may hold a secret: in a repr, never its password.

A store or limiter URL carries its password in the userinfo
(``postgresql://app:PASSWORD@db/keys``) or the query
(``redis://db?password=...``); a webhook URL often *is* the secret (its
path, as Slack's are). The engine and its config sit in the locals of every
frame of a request, and error trackers record those locals by ``repr``: so
each repr that shows such a URL shows it through ``redact_url``.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

__all__ = ["redact_url", "repr_redacting"]

HIDDEN = "***"
_AUTHORITY_END = re.compile(r"[/?#]")


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` with its userinfo and query (and, unless ``keep_path``, its path) hidden.

    >>> redact_url("postgresql+psycopg://app:pw@db:5432/keys?sslmode=require")
    'postgresql+psycopg://***@db:5432/keys?***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url and "?" not in url else HIDDEN
    cut = _AUTHORITY_END.search(rest)
    netloc, tail = (rest[: cut.start()], rest[cut.start() :]) if cut else (rest, "")
    if "@" in netloc:
        # The user name alone can be a token (``https://TOKEN@host``): hide all of it.
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    path, mark, _ = tail.partition("?")
    path = path.partition("#")[0]
    if path and not keep_path:
        path = "/" + HIDDEN
    return f"{scheme}://{netloc}{path}{'?' + HIDDEN if mark else ''}"


def repr_redacting(obj: Any, urls: tuple[str, ...] = (), secret_urls: tuple[str, ...] = ()) -> str:
    """The dataclass repr of ``obj``, with its URL fields shown through ``redact_url``.

    ``urls`` keep their path (a database name, an SQLite file); ``secret_urls``
    show only scheme and host.
    """
    shown = []
    for spec in fields(obj):
        if not spec.repr:
            continue
        value = getattr(obj, spec.name)
        if isinstance(value, str) and spec.name in urls + secret_urls:
            value = redact_url(value, keep_path=spec.name in urls)
        shown.append(f"{spec.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(shown)})"
