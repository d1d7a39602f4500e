"""Reading the credential: Bearer, x-api-key, query:NAME, scheme:NAME and embed tokens.

With property tests for the parsers and the fast path."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keystile.sansio import BadCredential, RequestView, _read_any, read_credential

SOURCES = ("bearer", "x-api-key")


def view(headers: dict[str, list[str]] | None = None, **kw: object) -> RequestView:
    return RequestView("GET", b"/", headers=headers or {}, **kw)  # type: ignore[arg-type]


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
        st.sampled_from(
            ["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearerx", "", "Api-Key", "api-KEY"]
        ),
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
        ("bearer", "x-api-key", "scheme:Api-Key"),
        ("x-api-key", "scheme:Api-Key"),
        ("scheme:Api-Key", "scheme:Token"),
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


REFUSED = "400"
NONE = "401"  # no credential: the request is as good as anonymous
A505 = "a" * 505  # "Bearer " + 505 bytes: an Authorization value of 512 bytes


def _result(headers: dict[str, list[str]], sources: tuple[str, ...]) -> object:
    """What the reader makes of the headers: (source, value), NONE or REFUSED."""
    try:
        found = read_credential(view(headers), sources)
    except BadCredential:
        return REFUSED
    return NONE if found is None else (found.source, found.value)


# Each trick with what comes back under [bearer, x-api-key], [bearer] and
# [x-api-key]. MAX_CREDENTIAL_BYTES (512) bounds each header's value as
# sent, the scheme of Authorization included. "Bearer" may be followed by
# one or more spaces (RFC 7235's 1*SP); a tab is a control character (400).
@pytest.mark.parametrize(
    ("headers", "both", "bearer_only", "key_only"),
    [
        pytest.param(
            {"authorization": ["Bearer sk_a"]},
            ("bearer", "sk_a"),
            ("bearer", "sk_a"),
            NONE,
            id="bearer",
        ),
        pytest.param(
            {"authorization": ["bEaReR sk_a"]},
            ("bearer", "sk_a"),
            ("bearer", "sk_a"),
            NONE,
            id="bearer-any-case",
        ),
        pytest.param(
            {"authorization": ["Bearer  sk_a"]},
            ("bearer", "sk_a"),
            ("bearer", "sk_a"),
            NONE,
            id="bearer-two-spaces",
        ),
        pytest.param(
            {"authorization": [" Bearer sk_a "]},
            ("bearer", "sk_a"),
            ("bearer", "sk_a"),
            NONE,
            id="bearer-padded",
        ),
        pytest.param({"authorization": ["Bearer\tsk_a"]}, REFUSED, REFUSED, NONE, id="bearer-tab"),
        pytest.param({"authorization": ["Bearer"]}, REFUSED, REFUSED, NONE, id="bearer-no-token"),
        pytest.param({"authorization": ["Bearer "]}, REFUSED, REFUSED, NONE, id="bearer-blank"),
        pytest.param({"authorization": ["Basic eA=="]}, NONE, NONE, NONE, id="basic"),
        pytest.param(
            {"authorization": ["Bearer sk_a,b"]}, REFUSED, REFUSED, NONE, id="bearer-comma"
        ),
        pytest.param(
            {"authorization": ["Bearer sk_a b"]}, REFUSED, REFUSED, NONE, id="bearer-space"
        ),
        pytest.param(
            {"authorization": ["Bearer sk_a\x7f"]}, REFUSED, REFUSED, NONE, id="bearer-del"
        ),
        pytest.param(
            {"authorization": ["Bearer " + A505[1:]]},
            ("bearer", A505[1:]),
            ("bearer", A505[1:]),
            NONE,
            id="bearer-511-bytes",
        ),
        pytest.param(
            {"authorization": ["Bearer " + A505]},
            ("bearer", A505),
            ("bearer", A505),
            NONE,
            id="bearer-512-bytes",
        ),
        pytest.param(
            {"authorization": ["Bearer " + A505 + "a"]},
            REFUSED,
            REFUSED,
            NONE,
            id="bearer-513-bytes",
        ),
        pytest.param(
            {"authorization": ["Bearer sk_a", "Bearer sk_b"]},
            REFUSED,
            REFUSED,
            NONE,
            id="bearer-twice",
        ),
        pytest.param(
            {"x-api-key": ["sk_a"]}, ("x-api-key", "sk_a"), NONE, ("x-api-key", "sk_a"), id="key"
        ),
        pytest.param({"x-api-key": ["sk_a,b"]}, REFUSED, NONE, REFUSED, id="key-comma"),
        pytest.param({"x-api-key": ["sk_a b"]}, REFUSED, NONE, REFUSED, id="key-space"),
        pytest.param({"x-api-key": [""]}, REFUSED, NONE, REFUSED, id="key-empty"),
        pytest.param(
            {"x-api-key": [" sk_a "]},
            ("x-api-key", "sk_a"),
            NONE,
            ("x-api-key", "sk_a"),
            id="key-padded",
        ),
        pytest.param(
            {"x-api-key": ["a" * 511]},
            ("x-api-key", "a" * 511),
            NONE,
            ("x-api-key", "a" * 511),
            id="key-511-bytes",
        ),
        pytest.param(
            {"x-api-key": ["a" * 512]},
            ("x-api-key", "a" * 512),
            NONE,
            ("x-api-key", "a" * 512),
            id="key-512-bytes",
        ),
        pytest.param({"x-api-key": ["a" * 513]}, REFUSED, NONE, REFUSED, id="key-513-bytes"),
        # Read as it came; the key format refuses it later (401, not 400).
        pytest.param(
            {"x-api-key": ["sk_\u00e9"]},
            ("x-api-key", "sk_\u00e9"),
            NONE,
            ("x-api-key", "sk_\u00e9"),
            id="key-latin1",
        ),
        pytest.param(
            {"x-api-key": ["sk_a"], "authorization": ["Bearer sk_b"]},
            REFUSED,
            ("bearer", "sk_b"),
            ("x-api-key", "sk_a"),
            id="both",
        ),
        pytest.param(
            {"x-api-key": ["sk_a"], "authorization": ["Basic eA=="]},
            ("x-api-key", "sk_a"),
            NONE,
            ("x-api-key", "sk_a"),
            id="key-and-basic",
        ),
    ],
)
def test_each_credential_trick_has_its_stated_result(
    headers: dict[str, list[str]], both: object, bearer_only: object, key_only: object
) -> None:
    expected = {SOURCES: both, ("bearer",): bearer_only, ("x-api-key",): key_only}
    for sources, result in expected.items():
        assert _result(headers, sources) == result, sources
        # The one-regex fast path and the general reader agree, message included.
        v = view(headers)
        assert _outcome(read_credential, v, sources) == _outcome(_read_any, v, sources, False)


WITH_SCHEME = ("bearer", "x-api-key", "scheme:Api-Key")
SCHEME_ONLY = ("scheme:Api-Key",)
API_KEY = "scheme:Api-Key"


# Each trick with what comes back when `credentials` lists the scheme beside
# the defaults, alone, and not at all (the defaults): the scheme is read as
# Bearer is, and an unlisted scheme is no key (401), as Basic is. Whenever
# Authorization is read at all, its value as sent is checked first (size,
# control characters, comma), whatever its scheme.
@pytest.mark.parametrize(
    ("headers", "with_scheme", "scheme_only", "unlisted"),
    [
        pytest.param(
            {"authorization": ["Api-Key pfx.secret"]},
            (API_KEY, "pfx.secret"),
            (API_KEY, "pfx.secret"),
            NONE,
            id="api-key",
        ),
        pytest.param(
            {"authorization": ["api-key pfx.secret"]},
            (API_KEY, "pfx.secret"),
            (API_KEY, "pfx.secret"),
            NONE,
            id="scheme-lower-case",
        ),
        pytest.param(
            {"authorization": ["API-KEY  pfx.secret "]},
            (API_KEY, "pfx.secret"),
            (API_KEY, "pfx.secret"),
            NONE,
            id="scheme-upper-case-padded",
        ),
        pytest.param(
            {"authorization": ["Bearer sk_a"]},
            ("bearer", "sk_a"),
            NONE,
            ("bearer", "sk_a"),
            id="bearer-beside-the-scheme",
        ),
        pytest.param({"authorization": ["Api-Key"]}, REFUSED, REFUSED, NONE, id="no-token"),
        pytest.param({"authorization": ["Api-Key "]}, REFUSED, REFUSED, NONE, id="blank-token"),
        pytest.param({"authorization": ["Api-Key a b"]}, REFUSED, REFUSED, NONE, id="two-tokens"),
        pytest.param({"authorization": ["Api-Key a,b"]}, REFUSED, REFUSED, REFUSED, id="comma"),
        pytest.param({"authorization": ["Api-Key\ta"]}, REFUSED, REFUSED, REFUSED, id="tab"),
        pytest.param(
            {"authorization": ["Api-Key " + "a" * 504]},
            (API_KEY, "a" * 504),
            (API_KEY, "a" * 504),
            NONE,
            id="512-bytes",
        ),
        pytest.param(
            {"authorization": ["Api-Key " + "a" * 505]}, REFUSED, REFUSED, REFUSED, id="513-bytes"
        ),
        pytest.param(
            {"authorization": ["Api-Key a", "Api-Key b"]}, REFUSED, REFUSED, REFUSED, id="twice"
        ),
        pytest.param({"authorization": ["Api-Keyx a"]}, NONE, NONE, NONE, id="longer-scheme-name"),
        pytest.param({"authorization": ["Basic eA=="]}, NONE, NONE, NONE, id="basic"),
        pytest.param(
            {"authorization": ["Api-Key a"], "x-api-key": ["b"]},
            REFUSED,
            (API_KEY, "a"),
            ("x-api-key", "b"),
            id="and-an-x-api-key",
        ),
    ],
)
def test_a_listed_authorization_scheme_is_read_as_bearer_is(
    headers: dict[str, list[str]], with_scheme: object, scheme_only: object, unlisted: object
) -> None:
    expected = {WITH_SCHEME: with_scheme, SCHEME_ONLY: scheme_only, SOURCES: unlisted}
    for sources, result in expected.items():
        assert _result(headers, sources) == result, sources
        v = view(headers)
        assert _outcome(read_credential, v, sources) == _outcome(_read_any, v, sources, False)


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param(("x-api-key", "scheme:Api-Key"), id="scheme-and-x-api-key"),
        pytest.param(("scheme:Api-Key", "x-api-key"), id="x-api-key-and-scheme"),
        pytest.param(("bearer", "x-api-key", "scheme:Api-Key"), id="all-three"),
    ],
)
def test_a_scheme_credential_beside_an_x_api_key_is_two_credentials(
    sources: tuple[str, ...],
) -> None:
    # Without Bearer listed, the fast path must still look at Authorization.
    v = view({"authorization": ["Api-Key pfx.secret"], "x-api-key": ["sk_b"]})
    with pytest.raises(BadCredential, match="one credential"):
        read_credential(v, sources)


def test_bearer_is_no_key_where_credentials_list_other_sources_only() -> None:
    # Authorization is read (for the scheme), but Bearer is not listed: a
    # Bearer token is no credential at all, on the fast path as on the other.
    sent = view({"authorization": ["Bearer sk_a"]})
    assert read_credential(sent, ("x-api-key", "scheme:Api-Key")) is None
    assert _read_any(sent, ("x-api-key", "scheme:Api-Key"), False) is None


@pytest.mark.parametrize(
    ("sources", "header", "name"),
    [
        pytest.param(SOURCES, "Bearer a b", "Bearer", id="bearer"),
        pytest.param(WITH_SCHEME, "Api-Key a b", "Api-Key", id="scheme"),
        pytest.param(SCHEME_ONLY, "api-key a b", "Api-Key", id="scheme-as-configured"),
    ],
)
def test_a_malformed_credential_is_named_by_its_scheme_as_configured(
    sources: tuple[str, ...], header: str, name: str
) -> None:
    with pytest.raises(BadCredential) as refused:
        _read_any(view({"authorization": [header]}), sources, False)
    assert str(refused.value) == f"the {name} credential is malformed"


_plain_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=","),
    min_size=1,
    max_size=505,
)


@given(_plain_token, st.sampled_from(["Bearer ", "bearer ", "BEARER  ", " Bearer "]))
def test_a_clean_credential_comes_back_unchanged(token: str, scheme: str) -> None:
    assert _result({"authorization": [scheme + token]}, SOURCES) == ("bearer", token)
    assert _result({"x-api-key": [token]}, SOURCES) == ("x-api-key", token)
    assert _result({"x-api-key": [f" {token} "]}, ("x-api-key",)) == ("x-api-key", token)
    query = f"api_key={quote(token, safe='')}".encode()
    found = read_credential(view(query_string=query), ("bearer", "query:api_key"))
    assert found is not None and (found.source, found.value) == ("query", token)
    embed = read_credential(view({"x-embed-token": [token]}), SOURCES, embed_route=True)
    assert embed is not None and (embed.source, embed.value) == ("embed-header", token)


@pytest.mark.parametrize(
    ("query", "sources", "expected"),
    [
        pytest.param(b"api_key=sk_q", ("query:api_key",), ("query", "sk_q"), id="read"),
        pytest.param(b"a=1&api_key=sk_q&b=2", ("query:api_key",), ("query", "sk_q"), id="among"),
        pytest.param(b"api_key=sk%5Fq", ("query:api_key",), ("query", "sk_q"), id="decoded"),
        pytest.param(b"pi_key=sk_q", ("query:api_key",), NONE, id="name-is-exact"),
        pytest.param(b"api_keyx=sk_q", ("query:api_key",), NONE, id="longer-name"),
        pytest.param(b"key=sk_q", ("query:key", "query:api_key"), ("query", "sk_q"), id="2nd-name"),
        pytest.param(b"api_key=sk_q", ("bearer", "x-api-key"), NONE, id="not-listed"),
        pytest.param(b"api_key=", ("query:api_key",), REFUSED, id="empty"),
        pytest.param(b"api_key=a&api_key=b", ("query:api_key",), REFUSED, id="twice"),
        pytest.param(b"api_key=sk%2Cq", ("query:api_key",), REFUSED, id="comma"),
        pytest.param(b"api_key=" + b"a" * 512, ("query:api_key",), ("query", "a" * 512), id="512"),
        pytest.param(b"api_key=" + b"a" * 513, ("query:api_key",), REFUSED, id="513"),
        pytest.param(b"key=a&api_key=b", ("query:key", "query:api_key"), REFUSED, id="two-names"),
    ],
)
def test_a_query_credential_is_read_by_its_exact_name(
    query: bytes, sources: tuple[str, ...], expected: object
) -> None:
    try:
        found = read_credential(view(query_string=query), sources)
    except BadCredential:
        assert expected == REFUSED
        return
    assert (NONE if found is None else (found.source, found.value)) == expected


# The 400's message says what was wrong with the query credential.
@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param(
            b"api_key=a&api_key=b",
            "the api_key query parameter was sent more than once",
            id="twice",
        ),
        pytest.param(
            b"api_key=a&api_key=b&api_key=c",
            "the api_key query parameter was sent more than once",
            id="three-times",
        ),
        pytest.param(b"api_key=", "the credential in ?api_key is empty", id="empty"),
        pytest.param(b"api_key=sk%2Cq", "the credential in ?api_key has a comma", id="comma"),
        pytest.param(
            b"api_key=" + b"a" * 513, "the credential in ?api_key is over 512 bytes", id="513-bytes"
        ),
        pytest.param(b"key=a&api_key=b", "send one credential, not several", id="two-names"),
    ],
)
def test_a_bad_query_credential_is_refused_saying_why(query: bytes, message: str) -> None:
    with pytest.raises(BadCredential) as caught:
        read_credential(view(query_string=query), ("query:key", "query:api_key"))
    assert str(caught.value).startswith(message)


def test_a_query_credential_and_a_header_are_two_credentials() -> None:
    v = view({"authorization": ["Bearer sk_a"]}, query_string=b"api_key=sk_q")
    with pytest.raises(BadCredential, match="one credential"):
        read_credential(v, ("bearer", "query:api_key"))


def test_embed_token_is_only_read_on_embed_routes() -> None:
    v = RequestView("GET", b"/", query_string=b"token=emb_x", headers={"x-embed-token": ["emb_y"]})
    assert read_credential(v, SOURCES) is None  # a route is not an embed route unless marked
    assert read_credential(v, SOURCES, embed_route=False) is None
    with pytest.raises(BadCredential):  # both the query and the header: two credentials
        read_credential(v, SOURCES, embed_route=True)


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


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        pytest.param({"x-embed-token": ["0 0"]}, b"", id="embed-header-with-a-space"),
        pytest.param({"x-embed-token": ["a\tb"]}, b"", id="embed-header-with-a-tab"),
        pytest.param({}, b"token=a+b", id="embed-query-with-a-space"),
        pytest.param({}, b"token=a%20b", id="embed-query-with-an-encoded-space"),
    ],
)
def test_an_embed_token_with_whitespace_inside_is_refused(
    headers: dict[str, list[str]], query: bytes
) -> None:
    request = view(headers)
    request.query_string = query
    with pytest.raises(BadCredential):
        read_credential(request, SOURCES, embed_route=True)
