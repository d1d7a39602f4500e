"""The non-I/O half of a request, shared by the ASGI and WSGI drivers.

The drivers turn an ASGI scope or a WSGI environ into one ``RequestView``;
everything that reads a request (the routed path, the credential, the
client address, the origin) is parsed here, once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qsl, unquote_plus, unquote_to_bytes, urlsplit

__all__ = [
    "MAX_CREDENTIAL_BYTES",
    "RESERVED_HEADER_PREFIX",
    "BadCredential",
    "Credential",
    "HeaderMap",
    "RequestView",
    "client_address",
    "client_ip",
    "normalize_path",
    "origin_allowed",
    "origin_host",
    "read_credential",
    "routed_path",
    "strip_query_param",
    "strip_target_param",
]

MAX_CREDENTIAL_BYTES = 512
# keystile tells the app who called through request state and the environ,
# never through headers; headers with this prefix are reserved, and dropped
# from what the app sees, so no client can pose as keystile's own word.
RESERVED_HEADER_PREFIX = "x-keystile-"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HeaderMap(dict[str, list[str]]):
    """Lower-case header names to every value sent; ``repr`` shows the names only.

    The values hold the credential (``Authorization``, ``x-api-key``,
    ``X-Embed-Token``): an error tracker that records a traceback's locals
    must not find it in their repr.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"HeaderMap({sorted(self)!r})"


@dataclass(slots=True)
class RequestView:
    """What keystile needs of a request, from either server interface.

    ``path`` is the path as the server gives it: still percent-encoded when
    ``path_encoded`` (ASGI ``raw_path``), decoded otherwise (WSGI
    ``PATH_INFO``). ``raw_uri`` is the request target as sent, when a WSGI
    server provides it (``RAW_URI``, ``REQUEST_URI``): it is checked too,
    since ``PATH_INFO`` has already lost an encoded slash. ``headers`` maps
    lower-case names to every value sent, in order (a door may hand in a
    mapping that reads its server's own structure on demand).
    """

    method: str
    path: bytes
    path_encoded: bool = False
    root_path: str = ""
    raw_uri: bytes | None = None
    query_string: bytes = b""
    headers: Mapping[str, Sequence[str]] = field(default_factory=HeaderMap)
    client: str | None = None
    websocket: bool = False
    # Whether a header name starts with ``X-Keystile-``, when the door found
    # out while reading the headers (the ASGI door always does; None: not
    # looked at, as the WSGI door scrubs the environ itself).
    reserved: bool | None = None

    def __repr__(self) -> str:
        # Header values and the query carry credentials (Bearer, x-api-key,
        # ?token=): show header names, the query's size, and the raw target
        # without its query, so a traceback's captured locals hold no secret.
        path = _without_query(self.path) if self.path_encoded else self.path
        target = None if self.raw_uri is None else _without_query(self.raw_uri)
        return (
            f"RequestView({self.method!r}, {path!r}, root_path={self.root_path!r}, "
            f"raw_uri={target!r}, query=<{len(self.query_string)} bytes>, "
            f"headers={sorted(self.headers)!r}, client={self.client!r}, "
            f"websocket={self.websocket!r})"
        )

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


def _without_query(target: bytes) -> bytes:
    head, mark, _ = target.partition(b"?")
    return head + mark + b"..." if mark else head


def routed_path(view: RequestView) -> str | None:
    """The decoded path the app routes on (minus ``root_path``), or None for a 400."""
    raw = view.raw_uri
    if raw is not None:
        if raw.startswith(b"/"):  # origin-form, as nearly every request sends it
            if normalize_path(raw, percent_encoded=True) is None:
                return None
        elif not _target_path_is_sound(raw):
            return None
    path = normalize_path(view.path, percent_encoded=view.path_encoded)
    if path is None:
        return None
    root = view.root_path.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :] or "/"
    return path


# RFC 9112 section 3.2: a request target is origin-form (``/path?q``, above),
# absolute-form (``http://host/path?q``, which a server must accept too),
# authority-form (``host:port``, CONNECT) or asterisk-form (``*``, OPTIONS).
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_AUTHORITY_FORM = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]+")


def _target_path_is_sound(raw: bytes) -> bool:
    """Whether a raw target that is not origin-form passes the path checks.

    The path of an absolute-form target gets the checks an origin-form one
    gets: ``PATH_INFO`` has lost its encoded slash, only the target shows
    it. Authority- and asterisk-form carry no path to check. A target of
    none of the four forms is refused: keystile cannot tell what it hides.
    """
    absolute = _ABSOLUTE_FORM.match(raw)
    if absolute is not None:
        path = raw[absolute.end() :]
        return not path.startswith(b"/") or normalize_path(path, percent_encoded=True) is not None
    return raw == b"*" or _AUTHORITY_FORM.fullmatch(raw) is not None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Segments of unreserved and sub-delim characters that cannot start with a
# dot (so no dot-segment), with no %, no backslash and no empty segment: such
# a path needs no decoding and holds no trick.
_SAFE = rb"[A-Za-z0-9_~:@!$&'()*+,;=-]"
_PLAIN_PATH = re.compile(rb"(?:/" + _SAFE + rb"(?:" + _SAFE + rb"|\.)*)*/?")


def _is_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def normalize_path(raw: bytes, *, percent_encoded: bool) -> str | None:
    """The decoded path to route on, or None when the path must be refused (400).

    Refused: dot-segments (``/a/../b``, ``%2e%2e``), empty segments (``//``),
    an encoded slash or backslash, any backslash, NUL and other control
    characters, invalid UTF-8. A trailing slash is kept (routes ignore it).
    """
    if percent_encoded and b"?" in raw:
        raw = raw[: raw.index(b"?")]
    if _PLAIN_PATH.fullmatch(raw):
        return raw.decode("ascii")  # the common case: nothing to decode or refuse
    if not raw.startswith(b"/"):
        return None
    segments = raw.split(b"/")[1:]
    last = len(segments) - 1
    decoded: list[str] = []
    for index, segment in enumerate(segments):
        if percent_encoded and b"%" in segment:
            lowered = segment.lower()
            if b"%2f" in lowered or b"%5c" in lowered:
                return None
            segment = unquote_to_bytes(segment)
        if b"\\" in segment:
            return None
        try:
            text = segment.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if text in (".", "..") or (text == "" and index != last) or _is_control(text):
            return None
        decoded.append(text)
    return "/" + "/".join(decoded)


@dataclass(slots=True)
class Credential:
    """A credential as sent; ``repr`` never shows it.

    Not frozen, as no per-request value of the pipeline is: a frozen
    dataclass pays ``object.__setattr__`` for each field, a quarter of a
    microsecond an object on a path whose whole budget is 20 µs.
    """

    value: str = field(repr=False)
    # "bearer" | "x-api-key" | "query" | "embed-query" | "embed-header" | "scheme:NAME"
    source: str


class BadCredential(Exception):
    """The credential headers are malformed: 400 invalid_request (RFC 6750 section 2)."""


def _single(view: RequestView, name: str) -> str | None:
    values = view.headers.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadCredential(f"the {name} header was sent more than once")
    return values[0]


def _checked(value: str, where: str) -> str:
    if len(value.encode("utf-8", "surrogateescape")) > MAX_CREDENTIAL_BYTES:
        raise BadCredential(f"the credential in {where} is over {MAX_CREDENTIAL_BYTES} bytes")
    if _is_control(value):
        raise BadCredential(f"the credential in {where} has control characters")
    if "," in value:
        # WSGI servers join a repeated header with commas: never split it.
        raise BadCredential(f"the credential in {where} has a comma")
    return value


def _query_values(view: RequestView, name: str) -> list[str]:
    if not view.query_string:
        return []
    pairs = parse_qsl(view.query_string.decode("latin-1"), keep_blank_values=True)
    return [v for k, v in pairs if k == name]


# A plain credential: printable ASCII without space or comma, within
# MAX_CREDENTIAL_BYTES. Such a value, alone in its header, is the shape of
# every well-formed request, and the checks of ``_read_any`` pass it unchanged.
_PLAIN = "[!-+\\--~]"
_PLAIN_BEARER = re.compile(
    rf"[Bb][Ee][Aa][Rr][Ee][Rr] ({_PLAIN}{{1,{MAX_CREDENTIAL_BYTES - len('Bearer ')}}})"
)
_PLAIN_KEY = re.compile(rf"{_PLAIN}{{1,{MAX_CREDENTIAL_BYTES}}}")


@lru_cache(maxsize=64)
def _header_sources(sources: tuple[str, ...]) -> tuple[bool, bool, bool] | None:
    """(bearer, x-api-key, Authorization) when ``sources`` reads headers only.

    None when a query counts too. ``Authorization`` is read for Bearer and
    for any ``scheme:NAME``: a request sending it beside ``x-api-key``
    carries two credentials, whichever scheme it names.
    """
    if any(s.startswith("query:") for s in sources):
        return None
    bearer = "bearer" in sources
    return bearer, "x-api-key" in sources, bearer or bool(_schemes(sources))


@lru_cache(maxsize=64)
def _schemes(sources: tuple[str, ...]) -> dict[str, str]:
    """The lower-cased ``scheme:NAME`` schemes of ``sources``, each to its entry."""
    return {s[7:].lower(): s for s in sources if s.startswith("scheme:")}


def read_credential(
    view: RequestView, sources: Sequence[str], *, embed_route: bool = False
) -> Credential | None:
    """The one credential the request carries, None if none; raises ``BadCredential``.

    ``sources`` is the config's ``credentials`` list (``bearer``,
    ``x-api-key``, ``query:NAME``, ``scheme:NAME``). On routes marked
    ``embed`` an embed token may also come as ``?token=`` or ``X-Embed-Token``.
    """
    readable = None if embed_route else _header_sources(tuple(sources))
    if readable is not None:
        # The common case, settled by one regex: exactly what ``_read_any``
        # would find, without its lists and checks.
        headers = view.headers
        bearer = headers.get("authorization") if readable[2] else None
        api_key = headers.get("x-api-key") if readable[1] else None
        if api_key is None:
            if readable[0] and bearer is not None and len(bearer) == 1:
                plain = _PLAIN_BEARER.fullmatch(bearer[0])
                if plain is not None:
                    return Credential(plain.group(1), "bearer")
        elif bearer is None and len(api_key) == 1 and _PLAIN_KEY.fullmatch(api_key[0]):
            return Credential(api_key[0], "x-api-key")
    return _read_any(view, sources, embed_route)


def _read_any(view: RequestView, sources: Sequence[str], embed_route: bool) -> Credential | None:
    """``read_credential`` for every request, common or not."""
    found: list[Credential] = []
    schemes = _schemes(tuple(sources))
    if "bearer" in sources or schemes:
        auth = _single(view, "authorization")
        if auth is not None:
            _checked(auth, "Authorization")
            scheme, _, token = auth.strip().partition(" ")
            scheme = scheme.lower()
            # Bearer, or a scheme the config lists (``scheme:Api-Key``), read
            # alike; any other scheme (``Basic``) is no key at all.
            source = schemes.get(scheme)
            if source is None and scheme == "bearer" and "bearer" in sources:
                source = "bearer"
            if source is not None:
                token = token.strip()
                if not token or " " in token or "\t" in token:
                    name = "Bearer" if source == "bearer" else source[7:]
                    raise BadCredential(f"the {name} credential is malformed")
                found.append(Credential(token, source))
    if "x-api-key" in sources:
        value = _single(view, "x-api-key")
        if value is not None:
            value = _checked(value, "x-api-key").strip()
            if not value:
                raise BadCredential("the x-api-key header is empty")
            if " " in value or "\t" in value:  # as for Bearer: one token, never a phrase
                raise BadCredential("the x-api-key header is malformed")
            found.append(Credential(value, "x-api-key"))
    for source in sources:
        if source.startswith("query:"):
            found.extend(_from_query(view, source[6:], "query"))
    if embed_route:
        header = _single(view, "x-embed-token")
        if header is not None:
            found.append(Credential(_nonempty(header, "X-Embed-Token"), "embed-header"))
        found.extend(_from_query(view, "token", "embed-query"))
    if len(found) > 1:
        raise BadCredential("send one credential, not several")
    return found[0] if found else None


def _from_query(view: RequestView, name: str, source: str) -> list[Credential]:
    values = _query_values(view, name)
    if len(values) > 1:
        raise BadCredential(f"the {name} query parameter was sent more than once")
    return [Credential(_nonempty(v, f"?{name}"), source) for v in values]


def _nonempty(value: str, where: str) -> str:
    value = _checked(value, where).strip()
    if not value:
        raise BadCredential(f"the credential in {where} is empty")
    if " " in value or "\t" in value:  # one token, as for Bearer and x-api-key
        raise BadCredential(f"the credential in {where} is malformed")
    return value


def strip_query_param(query: str, name: str) -> str:
    """The query string without ``name`` (so an embed token never reaches the app).

    Text, as WSGI gives it (decode ASGI's bytes as latin-1). A field is
    dropped when its name, decoded as ``parse_qsl`` decodes it (the way the
    credential is read), is ``name``; every other field is kept byte for
    byte, as the client sent it.
    """
    return "&".join(
        piece for piece in query.split("&") if unquote_plus(piece.partition("=")[0]) != name
    )


def strip_target_param(target: str, name: str) -> str:
    """A request target (``/path?query``, any form) without ``name`` in its query.

    For the copies of the target a server keeps beside the query string
    (WSGI ``REQUEST_URI`` and ``RAW_URI``), which its access log may print.
    """
    head, mark, query = target.partition("?")
    if not mark:
        return target
    query = strip_query_param(query, name)
    return f"{head}?{query}" if query else head


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_ip(text: str) -> IPAddress | None:
    """An address, with an IPv4-mapped IPv6 one (``::ffff:10.0.0.2``, as a
    dual-stack socket reports an IPv4 peer) read as the IPv4 address it is,
    so that IPv4 ``trusted_proxies`` hold it."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_PORT = re.compile(r"(?::[0-9]{1,5})?")


def _parse_hop(text: str) -> IPAddress | None:
    """An ``X-Forwarded-For`` hop: ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:443`` (a port, which some proxies
    write, is ignored). Anything else, an unclosed bracket or a port that is
    not a number included, is garbled: None."""
    hop, port = text.strip(), ""
    if hop.startswith("["):
        hop, closed, port = hop[1:].partition("]")
        if not closed:
            return None
    elif hop.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        hop, _, number = hop.partition(":")
        port = ":" + number
    if not _PORT.fullmatch(port):
        return None
    return _parse_ip(hop)


def _address_key(ip: IPAddress) -> str:
    """The bucket of one client: an IPv4 address, or the /64 an IPv6 one is in.

    One host usually holds a whole IPv6 /64, so counting per address would
    give it endless budgets.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def client_address(
    view: RequestView, trusted: Sequence[Network], *, unix: bool = False
) -> str | None:
    """The client's bucket for failed-auth limits and the audit trail.

    The client is found as ``client_ip`` says; an IPv6 address comes as its
    /64, an IPv4-mapped one as the IPv4 address. A peer that is not an
    address at all (a name such as ``testclient``) is its own bucket. None
    for a peer with no address (a Unix socket), unless ``unix`` says it is
    a trusted proxy that forwarded one.
    """
    peer = view.client
    if peer and not trusted:  # the common case: no proxy to read through
        if ":" not in peer:
            return peer  # IPv4 as the server wrote it (or a name such as "testclient")
        ip = _parse_ip(peer)
        return peer if ip is None else _address_key(ip)
    found = client_ip(view, trusted, unix=unix)
    if found is not None:
        return _address_key(found)
    return peer or None


def client_ip(
    view: RequestView, trusted: Sequence[Network], *, unix: bool = False
) -> IPAddress | None:
    """The client's address: the peer, or the ``X-Forwarded-For`` hop a trusted proxy wrote.

    The list is read from the right; hops written by trusted proxies are
    skipped, and the first untrusted one is the client. A header from an
    untrusted peer is ignored, so a client cannot choose its own address.
    None when there is no address to tell: a Unix socket peer (unless
    ``unix`` says it is a trusted proxy and it forwarded one), or a peer
    that is not an IP address.
    """
    peer = view.client
    peer_ip = _parse_ip(peer) if peer else None
    if peer_ip is None:
        if peer or not unix:
            return None
    elif not any(peer_ip in net for net in trusted):
        return peer_ip
    hops = [h for v in view.headers.get("x-forwarded-for", []) for h in v.split(",")]
    for hop in reversed(hops):
        ip = _parse_hop(hop)
        if ip is None:
            break  # a garbled list: believe nothing in it
        if not any(ip in net for net in trusted):
            return ip
    return peer_ip


def origin_host(view: RequestView) -> str | None:
    """The host of ``Origin``, else of ``Referer`` (lower-case, with port if any).

    An Origin that names no host (``null``, as browsers send from sandboxed
    or privacy-sensitive contexts, or ``file://``) says nothing about the
    page, so Referer decides; a garbled one is refused (None). Userinfo is
    never taken for the host.
    """
    for name in ("origin", "referer"):
        value = view.header(name)
        if value:
            try:
                parts = urlsplit(value)
            except ValueError:
                return None
            if parts.hostname:
                return parts.netloc.rpartition("@")[2].lower()
    return None


def origin_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether ``host`` matches an allowed origin: ``app.example``, ``*.example.com``.

    An entry without a port matches the host on any port; ``*.example.com``
    matches subdomains, not ``example.com`` itself.
    """
    if host is None:
        return False
    bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    for entry in allowed:
        target = host if ":" in entry else bare
        if entry.startswith("*."):
            if target.endswith(entry[1:]) and len(target) > len(entry) - 1:
                return True
        elif target == entry:
            return True
    return False
