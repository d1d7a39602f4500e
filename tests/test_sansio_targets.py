"""Request targets and views: the raw target of every form, embed tokens taken
out of the query, and a view's repr (which must hold no credential).

The same readings are checked through both doors in ``test_hostile_doors.py``;
here each is stated where it is made, in ``keystile.sansio``.
"""

from __future__ import annotations

import pytest

from keystile.sansio import (
    HeaderMap,
    RequestView,
    routed_path,
    strip_query_param,
    strip_target_param,
)

# A WSGI server hands in PATH_INFO decoded, so an encoded slash is already
# lost there; the raw target (RAW_URI, REQUEST_URI) still shows it. Each
# case: the raw target, and the routed path (None: refused, 400). PATH_INFO
# is "/api/v1/events" throughout, as a server would decode the target.
RAW_TARGETS = [
    pytest.param(b"/api/v1/events", "/api/v1/events", id="origin-form"),
    pytest.param(b"/api%2Fv1/events", None, id="origin-form-encoded-slash"),
    pytest.param(b"http://h.example/api/v1/events", "/api/v1/events", id="absolute-form"),
    pytest.param(b"HTTPS://h.example:443/api/v1/events?x=1", "/api/v1/events", id="absolute-port"),
    pytest.param(b"http://h.example/api%2Fv1/events", None, id="absolute-encoded-slash"),
    pytest.param(b"http://h.example/api%5cv1/events", None, id="absolute-encoded-backslash"),
    pytest.param(b"http://h.example/api/x/%2e%2e/events", None, id="absolute-dot-segment"),
    pytest.param(b"http://h.example//api/v1/events", None, id="absolute-empty-segment"),
    pytest.param(b"http://u:p@h.example/api%2Fv1/events", None, id="absolute-with-userinfo"),
    # No path to check: the server's PATH_INFO is all there is.
    pytest.param(b"http://h.example", "/api/v1/events", id="absolute-without-path"),
    pytest.param(b"http://h.example?a=%2F", "/api/v1/events", id="absolute-query-only"),
    pytest.param(b"*", "/api/v1/events", id="asterisk-form"),
    pytest.param(b"h.example:443", "/api/v1/events", id="authority-form"),
    pytest.param(b"[2001:db8::1]:443", "/api/v1/events", id="authority-form-ipv6"),
    # None of the four forms: keystile cannot tell what it hides.
    pytest.param(b"api%2Fv1/events", None, id="no-known-form"),
    pytest.param(b"api/v1/events", None, id="relative"),
    pytest.param(b"mailto:a%2Fb", None, id="scheme-without-authority"),
    pytest.param(b"**", None, id="two-asterisks"),
    pytest.param(b"h.example:https", None, id="authority-named-port"),
]


@pytest.mark.parametrize(("raw", "expected"), RAW_TARGETS)
def test_the_raw_target_of_every_form_gets_the_path_checks(
    raw: bytes, expected: str | None
) -> None:
    view = RequestView("GET", b"/api/v1/events", raw_uri=raw)
    assert routed_path(view) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(b"/a%2Fb", "/a%2Fb", id="percent-sign-is-a-character"),
        pytest.param(b"/100%25", "/100%25", id="not-decoded-twice"),
        pytest.param(b"/caf\xc3\xa9/", "/caf\u00e9/", id="utf8"),
        pytest.param(b"/a/../b", None, id="dot-segment"),
    ],
)
def test_a_path_is_taken_as_decoded_unless_the_view_says_it_is_encoded(
    path: bytes, expected: str | None
) -> None:
    # WSGI's PATH_INFO arrives decoded: a "%" there was sent as "%25".
    assert routed_path(RequestView("GET", path)) == expected


# Each field the query carries, decoded as parse_qsl decodes it, is dropped
# when its name is "token"; every other field is kept byte for byte.
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("token=abc&theme=dark", "theme=dark", id="first"),
        pytest.param("theme=dark&token=abc", "theme=dark", id="last"),
        pytest.param("a=1&token=abc&b=2", "a=1&b=2", id="middle"),
        pytest.param("token=a&x=1&token=b", "x=1", id="every-one"),
        pytest.param("tok%65n=abc&a=1", "a=1", id="encoded-name"),
        pytest.param("token&a=1", "a=1", id="name-without-value"),
        pytest.param("token=abc", "", id="alone"),
        pytest.param("tokenx=1&xtoken=2", "tokenx=1&xtoken=2", id="other-names"),
        pytest.param("a=token&b=token%3D1", "a=token&b=token%3D1", id="token-as-a-value"),
        pytest.param("a+b=%20&c=%zz", "a+b=%20&c=%zz", id="others-byte-for-byte"),
        pytest.param("", "", id="empty"),
    ],
)
def test_strip_query_param_drops_the_named_field_only(query: str, expected: str) -> None:
    assert strip_query_param(query, "token") == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("/w?token=abc&theme=dark", "/w?theme=dark", id="origin-form"),
        pytest.param("/w?token=abc", "/w", id="nothing-left"),
        pytest.param("/w?", "/w", id="empty-query"),
        pytest.param("/w", "/w", id="no-query"),
        pytest.param("/w?theme=dark", "/w?theme=dark", id="no-token"),
        pytest.param(
            "http://h.example/w?theme=dark&token=abc",
            "http://h.example/w?theme=dark",
            id="absolute-form",
        ),
    ],
)
def test_strip_target_param_drops_the_field_from_the_query_of_a_target(
    target: str, expected: str
) -> None:
    assert strip_target_param(target, "token") == expected


SECRET = "sk_live_secret0123"


def test_a_view_repr_shows_no_credential() -> None:
    headers = HeaderMap({"x-api-key": [SECRET], "authorization": [f"Bearer {SECRET}"]})
    view = RequestView(
        "GET",
        f"/w?token={SECRET}".encode(),
        path_encoded=True,
        root_path="/svc",
        raw_uri=f"http://h.example/w?token={SECRET}".encode(),
        query_string=f"token={SECRET}".encode(),
        headers=headers,
        client="10.0.0.2",
    )
    assert repr(headers) == "HeaderMap(['authorization', 'x-api-key'])"
    assert repr(view) == (
        "RequestView('GET', b'/w?...', root_path='/svc', raw_uri=b'http://h.example/w?...', "
        "query=<24 bytes>, headers=['authorization', 'x-api-key'], client='10.0.0.2', "
        "websocket=False)"
    )


def test_a_view_repr_shows_a_decoded_path_and_a_target_without_a_query_as_they_are() -> None:
    # A decoded path (WSGI's PATH_INFO) holds no query: a "?" in it was sent as "%3F".
    view = RequestView("GET", b"/w?x", raw_uri=b"/w%3Fx")
    assert repr(view) == (
        "RequestView('GET', b'/w?x', root_path='', raw_uri=b'/w%3Fx', query=<0 bytes>, "
        "headers=[], client=None, websocket=False)"
    )
    assert "raw_uri=None" in repr(RequestView("GET", b"/w"))
