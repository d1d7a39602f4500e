"""Parsing requests: paths, client addresses, origins (credentials: test_sansio_credentials.py)."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystile.sansio import (
    RequestView,
    client_address,
    client_ip,
    normalize_path,
    origin_allowed,
    origin_host,
    routed_path,
)


def view(headers: dict[str, list[str]] | None = None, **kw: object) -> RequestView:
    return RequestView("GET", b"/", headers=headers or {}, **kw)  # type: ignore[arg-type]


@given(st.binary(max_size=60))
def test_normalized_path_has_no_tricks_left(raw: bytes) -> None:
    for encoded in (True, False):
        path = normalize_path(b"/" + raw, percent_encoded=encoded)
        if path is None:
            continue
        segments = path.split("/")[1:]
        assert all(s not in (".", "..") for s in segments)
        assert all(s for s in segments[:-1])  # no empty segment but a trailing one
        assert "\x00" not in path and "\\" not in path
        assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in path)
        # Nothing is dropped, merged or rewritten: what passes is the path as
        # sent, decoded (up to the query, for a request target).
        sent = b"/" + raw
        if encoded:
            sent = unquote_to_bytes(sent.partition(b"?")[0])
        assert path == sent.decode("utf-8")


# A segment the pipeline must let through: any text but a dot segment, a
# slash, a backslash or a control character.
_clean_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(_clean_segment, max_size=5), st.booleans())
def test_a_clean_path_comes_back_decoded(segments: list[str], trailing: bool) -> None:
    tail = "/" if trailing and segments else ""
    path = "/" + "/".join(segments) + tail
    sent = "/" + "/".join(quote(s, safe="") for s in segments) + tail
    assert normalize_path(sent.encode("ascii"), percent_encoded=True) == path
    assert normalize_path(path.encode("utf-8"), percent_encoded=False) == path


@given(st.lists(st.sampled_from(["a", "b", "%2e", ".", "..", "%2E%2e", "%2f", ""]), max_size=6))
def test_any_dot_segment_is_refused_however_spelled(parts: list[str]) -> None:
    raw = ("/" + "/".join(parts)).encode()
    decoded = [p.replace("%2e", ".").replace("%2E", ".") for p in parts]
    tricky = any(p in (".", "..") for p in decoded) or "%2f" in parts or "" in parts[:-1]
    if tricky:
        assert normalize_path(raw, percent_encoded=True) is None
    else:  # only "a", "b" and a trailing "": the path comes back as sent
        assert normalize_path(raw, percent_encoded=True) == raw.decode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"/", "/", id="root"),
        pytest.param(b"/a/b/", "/a/b/", id="trailing-slash-kept"),
        pytest.param(b"/caf%C3%A9", "/café", id="utf8"),
        pytest.param(b"/a%20b", "/a b", id="space"),
        pytest.param(b"/a?x=1", "/a", id="query-dropped"),
        pytest.param(b"/%61pi/%761/%65vents", "/api/v1/events", id="every-segment-encoded"),
        pytest.param(b"/caf%C3%A9/x%20y/", "/caf\u00e9/x y/", id="encoded-with-trailing-slash"),
        pytest.param(b"/a%20b/", "/a b/", id="one-encoded-segment-trailing-slash"),
        pytest.param(b"/a/%2e%2e%2e", "/a/...", id="three-dots-is-a-name"),
        pytest.param(b"/a/b%2F/", None, id="encoded-slash-before-trailing-slash"),
        pytest.param(b"/a//", None, id="empty-segment-before-trailing-slash"),
        pytest.param(b"a/b", None, id="no-leading-slash"),
        pytest.param(b"*", None, id="asterisk-form"),
    ],
)
def test_normalize_path_cases(raw: bytes, expected: str | None) -> None:
    assert normalize_path(raw, percent_encoded=True) == expected


# ASGI's `path` includes `root_path` (servers before the spec said so left it
# out); the app routes on what follows the mount point, at a segment boundary.
@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        pytest.param(b"/svc/api/v1", "/svc", "/api/v1", id="mounted"),
        pytest.param(b"/svc/api/v1", "/svc/", "/api/v1", id="root-with-trailing-slash"),
        pytest.param(b"/svc", "/svc", "/", id="the-mount-point"),
        pytest.param(b"/svc/", "/svc", "/", id="the-mount-point-with-slash"),
        pytest.param(b"/a/b/api", "/a/b", "/api", id="two-segment-root"),
        pytest.param(b"/api/api/v1", "/api", "/api/v1", id="root-stripped-once"),
        pytest.param(b"/svcx/api", "/svc", "/svcx/api", id="not-at-a-segment-boundary"),
        pytest.param(b"/api/v1", "/svc", "/api/v1", id="path-without-the-root"),
        pytest.param(b"/my%20svc/api", "/my svc", "/api", id="encoded-root"),
        pytest.param(b"/svc/%61pi/", "/svc", "/api/", id="encoded-path-under-root"),
        pytest.param(b"/svc/../api", "/svc", None, id="dot-dot-out-of-the-mount"),
        pytest.param(b"/api/v1", "", "/api/v1", id="no-root"),
    ],
)
def test_routed_path_is_the_path_under_root_path(
    path: bytes, root: str, expected: str | None
) -> None:
    v = RequestView("GET", path, path_encoded=True, root_path=root)
    assert routed_path(v) == expected


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        pytest.param("203.0.113.9", ["1.2.3.4"], "203.0.113.9", id="untrusted-peer-header-ignored"),
        pytest.param("10.0.0.2", ["1.2.3.4"], "1.2.3.4", id="trusted-proxy-believed"),
        pytest.param(
            "10.0.0.2", ["6.6.6.6, 1.2.3.4, 10.0.0.3"], "1.2.3.4", id="rightmost-untrusted"
        ),
        pytest.param("10.0.0.2", ["garbage"], "10.0.0.2", id="garbled-list"),
        pytest.param("10.0.0.2", [], "10.0.0.2", id="no-header"),
        pytest.param("10.0.0.2", ["1.2.3.4:5678"], "1.2.3.4", id="ipv4-port-ignored"),
        pytest.param("10.0.0.2", ["2001:db8::1"], "2001:db8::/64", id="ipv6-as-its-64"),
        pytest.param("10.0.0.2", ["[2001:db8::1]"], "2001:db8::/64", id="ipv6-bracketed"),
        pytest.param(
            "10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::/64", id="ipv6-bracketed-with-port"
        ),
        pytest.param(
            "10.0.0.2",
            ["[2001:db8:0:7:1:2:3:4]:443, 10.0.0.9"],
            "2001:db8:0:7::/64",
            id="ipv6-hop-left-of-a-trusted-one",
        ),
        pytest.param(
            "10.0.0.2",
            ["[2001:db8::1]:443, 1.2.3.4:80"],
            "1.2.3.4",
            id="ipv6-hop-left-of-the-client-is-ignored",
        ),
        pytest.param("10.0.0.2", ["[::ffff:1.2.3.4]:80"], "1.2.3.4", id="ipv4-mapped"),
        pytest.param("10.0.0.2", ["[2001:db8::1"], "10.0.0.2", id="unclosed-bracket-garbled"),
        pytest.param("10.0.0.2", ["[2001:db8::1]x"], "10.0.0.2", id="junk-after-bracket-garbled"),
        pytest.param("10.0.0.2", ["1.2.3.4:http"], "10.0.0.2", id="named-port-garbled"),
        pytest.param("10.0.0.2", ["1.2.3.4:"], "10.0.0.2", id="empty-port-garbled"),
        pytest.param(
            "10.0.0.2", ["6.6.6.6, [2001:db8::1"], "10.0.0.2", id="garbled-hop-taints-the-list"
        ),
        pytest.param("2001:db8::7", ["1.2.3.4"], "2001:db8::/64", id="untrusted-ipv6-peer"),
        pytest.param("::ffff:10.0.0.2", ["1.2.3.4"], "1.2.3.4", id="mapped-trusted-peer"),
    ],
)
def test_client_address(peer: str, xff: list[str], expected: str) -> None:
    headers = {"x-forwarded-for": xff} if xff else {}
    assert client_address(view(headers, client=peer), TRUSTED) == expected


# Without trusted proxies the peer is the client, whatever X-Forwarded-For
# says; a Unix socket peer (None) has no address unless the config trusts it
# (`trusted_proxies: [unix]`), and then the header names the client.
@pytest.mark.parametrize(
    ("peer", "unix", "expected"),
    [
        pytest.param("203.0.113.9", False, "203.0.113.9", id="ipv4"),
        pytest.param("2001:db8::7", False, "2001:db8::/64", id="ipv6-as-its-64"),
        pytest.param("::ffff:203.0.113.9", False, "203.0.113.9", id="ipv4-mapped"),
        pytest.param("testclient", False, "testclient", id="a-name-is-its-own-bucket"),
        pytest.param("host:name", False, "host:name", id="a-name-with-a-colon"),
        pytest.param(None, False, None, id="unix-socket"),
        pytest.param(None, True, "1.2.3.4", id="trusted-unix-socket-reads-the-header"),
    ],
)
def test_client_address_without_trusted_proxies_is_the_peer(
    peer: str | None, unix: bool, expected: str | None
) -> None:
    v = view({"x-forwarded-for": ["1.2.3.4"]}, client=peer)
    assert client_address(v, (), unix=unix) == expected


@pytest.mark.parametrize(
    ("peer", "kwargs", "expected", "address"),
    [
        pytest.param(None, {}, None, None, id="unix-socket-untrusted-by-default"),
        pytest.param(None, {"unix": False}, None, None, id="unix-socket-untrusted"),
        pytest.param(None, {"unix": True}, "1.2.3.4", "1.2.3.4", id="unix-socket-trusted"),
        pytest.param("testclient", {"unix": True}, None, "testclient", id="a-name-is-no-address"),
        pytest.param("10.0.0.2", {}, "1.2.3.4", "1.2.3.4", id="trusted-peer"),
    ],
)
def test_a_unix_socket_peer_is_read_through_only_when_trusted(
    peer: str | None, kwargs: dict[str, bool], expected: str | None, address: str | None
) -> None:
    v = view({"x-forwarded-for": ["1.2.3.4"]}, client=peer)
    found = client_ip(v, TRUSTED, **kwargs)
    assert found == (None if expected is None else ipaddress.ip_address(expected))
    assert client_address(v, TRUSTED, **kwargs) == address


@pytest.mark.parametrize(
    ("peer", "xff", "expected", "address"),
    [
        pytest.param("10.0.0.2", [], "10.0.0.2", "10.0.0.2", id="no-header"),
        pytest.param("10.0.0.2", ["10.0.0.3"], "10.0.0.2", "10.0.0.2", id="every-hop-trusted"),
        pytest.param("fd00::2", [], "fd00::2", "fd00::/64", id="ipv6-proxy-no-header"),
        pytest.param("testclient", ["1.2.3.4"], None, "testclient", id="name-with-proxies"),
    ],
)
def test_a_trusted_peer_with_no_client_behind_it_is_the_client(
    peer: str, xff: list[str], expected: str | None, address: str
) -> None:
    trusted = (*TRUSTED, ipaddress.ip_network("fd00::/8"))
    v = view({"x-forwarded-for": xff} if xff else {}, client=peer)
    found = client_ip(v, trusted)
    assert found == (None if expected is None else ipaddress.ip_address(expected))
    assert client_address(v, trusted) == address


def test_trusted_ipv6_proxies_are_skipped_from_the_right() -> None:
    trusted = (ipaddress.ip_network("2001:db8:ffff::/48"),)
    xff = ["[2001:db8:1:2::5]:80, 2001:db8:ffff::1, [2001:db8:ffff::2]:443"]
    peer = "2001:db8:ffff::3"
    assert client_address(view({"x-forwarded-for": xff}, client=peer), trusted) == (
        "2001:db8:1:2::/64"
    )


@pytest.mark.parametrize(
    ("headers", "allowed", "ok"),
    [
        pytest.param({"origin": ["https://rhumby.example"]}, ["rhumby.example"], True, id="exact"),
        pytest.param(
            {"origin": ["https://a.club.example"]}, ["*.club.example"], True, id="wildcard-sub"
        ),
        pytest.param(
            {"origin": ["https://club.example"]}, ["*.club.example"], False, id="wildcard-not-apex"
        ),
        pytest.param(
            {"origin": ["https://evilclub.example"]}, ["*.club.example"], False, id="suffix-trick"
        ),
        pytest.param(
            {"origin": ["https://rhumby.example.evil"]}, ["rhumby.example"], False, id="longer-host"
        ),
        pytest.param(
            {"referer": ["https://rhumby.example/page"]},
            ["rhumby.example"],
            True,
            id="referer-fallback",
        ),
        pytest.param({"origin": ["null"]}, ["rhumby.example"], False, id="null-origin"),
        pytest.param({}, ["rhumby.example"], False, id="no-origin"),
        pytest.param({"origin": ["http://localhost:8000"]}, ["localhost:8000"], True, id="port"),
        pytest.param(
            {"origin": ["http://localhost:9000"]}, ["localhost:8000"], False, id="other-port"
        ),
        # An entry without a port matches the host on any port; one with a
        # port, that port only (browsers leave a default port out).
        pytest.param(
            {"origin": ["https://rhumby.example:8443"]},
            ["rhumby.example"],
            True,
            id="entry-without-port-any-port",
        ),
        pytest.param(
            {"origin": ["https://rhumby.example"]},
            ["rhumby.example:8443"],
            False,
            id="entry-with-port-needs-it",
        ),
        pytest.param(
            {"origin": ["https://a.club.example:8443"]},
            ["*.club.example"],
            True,
            id="wildcard-without-port-any-port",
        ),
        pytest.param(
            {"origin": ["https://a.club.example:9000"]},
            ["*.club.example:8443"],
            False,
            id="wildcard-with-port-needs-it",
        ),
        pytest.param(
            {"origin": ["https://a.club.example:8443"]},
            ["*.club.example:8443"],
            True,
            id="wildcard-with-its-port",
        ),
        pytest.param(
            {"origin": ["https://RHUMBY.Example"]}, ["rhumby.example"], True, id="host-any-case"
        ),
        pytest.param(
            {"origin": ["https://rhumby.example:1:2"]}, ["rhumby.example"], False, id="garbled-port"
        ),
        # An empty label is no subdomain.
        pytest.param(
            {"origin": ["https://.club.example"]}, ["*.club.example"], False, id="wildcard-empty"
        ),
        # Userinfo is never the host: the host is what follows the last "@".
        pytest.param(
            {"origin": ["https://user:pw@rhumby.example"]},
            ["rhumby.example"],
            True,
            id="userinfo-ignored",
        ),
        pytest.param(
            {"origin": ["https://rhumby.example@evil.example"]},
            ["rhumby.example"],
            False,
            id="userinfo-posing-as-host",
        ),
        pytest.param(
            {"origin": ["https://rhumby.example:1@evil.example"]},
            ["rhumby.example"],
            False,
            id="userinfo-with-port-posing-as-host",
        ),
        pytest.param(
            {"origin": ["https://a@b@rhumby.example"]},
            ["rhumby.example"],
            True,
            id="userinfo-with-at-signs",
        ),
        # An Origin that names no host says nothing about the page: Referer decides.
        pytest.param(
            {"origin": ["null"], "referer": ["https://rhumby.example/p"]},
            ["rhumby.example"],
            True,
            id="null-origin-falls-back-to-referer",
        ),
        pytest.param(
            {"origin": ["file://"], "referer": ["https://rhumby.example/p"]},
            ["rhumby.example"],
            True,
            id="hostless-origin-falls-back-to-referer",
        ),
        pytest.param(
            {"origin": ["null"], "referer": ["https://evil.example/p"]},
            ["rhumby.example"],
            False,
            id="null-origin-other-referer",
        ),
        pytest.param(
            {"origin": ["file://"]}, ["rhumby.example"], False, id="hostless-origin-alone"
        ),
        # An Origin that names a host decides alone; a garbled one is refused.
        pytest.param(
            {"origin": ["https://evil.example"], "referer": ["https://rhumby.example/p"]},
            ["rhumby.example"],
            False,
            id="origin-wins-over-referer",
        ),
        pytest.param(
            {"origin": ["http://[::1"], "referer": ["https://rhumby.example/p"]},
            ["rhumby.example"],
            False,
            id="garbled-origin-refused",
        ),
        pytest.param(
            {"referer": ["about:blank"]}, ["rhumby.example"], False, id="hostless-referer"
        ),
    ],
)
def test_origin_rules(headers: dict[str, list[str]], allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin_host(view(headers)), allowed) is ok
