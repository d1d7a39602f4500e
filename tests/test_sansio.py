"""Parsing requests: paths, credentials, client addresses, origins (with property tests)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.sansio import (
    BadCredential,
    RequestView,
    _read_any,
    client_address,
    normalize_path,
    origin_allowed,
    origin_host,
    read_credential,
)

SOURCES = ("bearer", "x-api-key")


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


@given(st.lists(st.sampled_from(["a", "b", "%2e", ".", "..", "%2E%2e", "%2f", ""]), max_size=6))
def test_any_dot_segment_is_refused_however_spelled(parts: list[str]) -> None:
    raw = ("/" + "/".join(parts)).encode()
    decoded = [p.replace("%2e", ".").replace("%2E", ".") for p in parts]
    tricky = any(p in (".", "..") for p in decoded) or "%2f" in parts or "" in parts[:-1]
    if tricky:
        assert normalize_path(raw, percent_encoded=True) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"/", "/", id="root"),
        pytest.param(b"/a/b/", "/a/b/", id="trailing-slash-kept"),
        pytest.param(b"/caf%C3%A9", "/café", id="utf8"),
        pytest.param(b"/a%20b", "/a b", id="space"),
        pytest.param(b"/a?x=1", "/a", id="query-dropped"),
        pytest.param(b"a/b", None, id="no-leading-slash"),
        pytest.param(b"*", None, id="asterisk-form"),
    ],
)
def test_normalize_path_cases(raw: bytes, expected: str | None) -> None:
    assert normalize_path(raw, percent_encoded=True) == expected


_header_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=80)


@given(
    st.dictionaries(
        st.sampled_from(["authorization", "x-api-key", "x-embed-token"]),
        st.lists(_header_text, min_size=1, max_size=2),
        max_size=3,
    ),
    st.booleans(),
)
def test_credential_parsing_refuses_or_returns_one_clean_value(
    headers: dict[str, list[str]], embed: bool
) -> None:
    try:
        found = read_credential(view(headers), SOURCES, embed_route=embed)
    except BadCredential:
        return
    if found is None:
        return
    value = found.value
    assert value and "," not in value and " " not in value.strip()
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in value)
    assert len(value.encode()) <= 512
    assert "value=" not in repr(found)


def _outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except BadCredential as exc:
        return ("refused", str(exc))


_bearer_values = st.one_of(
    st.builds(
        lambda scheme, sep, token: scheme + sep + token,
        st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearerx", ""]),
        st.sampled_from([" ", "  ", "\t", ""]),
        st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=520),
    ),
    st.text(max_size=40),
)


_key_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=520),
    st.sampled_from(["sk_abc", " sk_abc ", "sk_a,b", "x" * 512, "x" * 513, ""]),
    st.text(max_size=40),
)
_source_sets = st.sampled_from(
    [
        ("bearer", "x-api-key"),
        ("bearer",),
        ("x-api-key",),
        ("bearer", "x-api-key", "query:api_key"),
    ]
)


@settings(max_examples=500)
@given(
    st.one_of(st.none(), st.lists(_bearer_values, min_size=1, max_size=2)),
    st.one_of(st.none(), st.lists(_key_values, min_size=1, max_size=2)),
    _source_sets,
)
def test_header_fast_path_agrees_with_the_general_reader(
    bearer: list[str] | None, api_key: list[str] | None, sources: tuple[str, ...]
) -> None:
    headers = {}
    if bearer is not None:
        headers["authorization"] = bearer
    if api_key is not None:
        headers["x-api-key"] = api_key
    query = b"api_key=sk_q" if "query:api_key" in sources else b""
    v = view(headers, query_string=query)
    fast = _outcome(read_credential, v, sources)
    general = _outcome(_read_any, v, sources, False)
    assert fast == general


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"authorization": ["Bearer sk_a,b"]}, id="bearer-comma"),
        pytest.param({"authorization": ["Bearer sk_a b"]}, id="bearer-space"),
        pytest.param({"authorization": ["Bearer sk_a\x7f"]}, id="bearer-del"),
        pytest.param({"authorization": ["Bearer " + "a" * 506]}, id="bearer-over-512"),
        pytest.param({"authorization": ["Bearer " + "a" * 505]}, id="bearer-at-512"),
        pytest.param({"authorization": ["Bearer sk_a", "Bearer sk_b"]}, id="bearer-twice"),
        pytest.param({"x-api-key": ["sk_a,b"]}, id="key-comma"),
        pytest.param({"x-api-key": ["sk_a b"]}, id="key-space"),
        pytest.param({"x-api-key": [" sk_a "]}, id="key-padded"),
        pytest.param({"x-api-key": ["a" * 513]}, id="key-over-512"),
        pytest.param({"x-api-key": ["a" * 512]}, id="key-at-512"),
        pytest.param({"x-api-key": ["sk_é"]}, id="key-latin1"),
        pytest.param({"x-api-key": ["sk_a"], "authorization": ["Bearer sk_b"]}, id="both"),
        pytest.param({"x-api-key": ["sk_a"], "authorization": ["Basic eA=="]}, id="key-and-basic"),
    ],
)
def test_header_fast_path_agrees_on_each_trick(headers: dict[str, list[str]]) -> None:
    for sources in (SOURCES, ("bearer",), ("x-api-key",)):
        v = view(headers)
        assert _outcome(read_credential, v, sources) == _outcome(_read_any, v, sources, False)


def test_embed_token_is_only_read_on_embed_routes() -> None:
    v = RequestView("GET", b"/", query_string=b"token=emb_x", headers={"x-embed-token": ["emb_y"]})
    assert read_credential(v, SOURCES, embed_route=False) is None
    with pytest.raises(BadCredential):  # both the query and the header: two credentials
        read_credential(v, SOURCES, embed_route=True)


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
    ],
)
def test_client_address(peer: str, xff: list[str], expected: str) -> None:
    headers = {"x-forwarded-for": xff} if xff else {}
    assert client_address(view(headers, client=peer), TRUSTED) == expected


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
    ],
)
def test_origin_rules(headers: dict[str, list[str]], allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin_host(view(headers)), allowed) is ok


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        pytest.param({"x-embed-token": [""]}, b"", id="empty-embed-header"),
        pytest.param({"x-embed-token": ["  "]}, b"", id="blank-embed-header"),
        pytest.param({}, b"token=", id="empty-token-query"),
    ],
)
def test_an_empty_embed_token_is_malformed(headers: dict[str, list[str]], query: bytes) -> None:
    with pytest.raises(BadCredential, match="empty"):
        read_credential(
            RequestView("GET", b"/", headers=headers, query_string=query), SOURCES, embed_route=True
        )
