"""The compiled route table: patterns, precedence, ties, methods."""

from __future__ import annotations

import pytest

from keystile.config import RouteConfig
from keystile.errors import ConfigError
from keystile.routes import RouteTable, parse_pattern


def rule(path: str, *methods: str, line: int | None = None) -> RouteConfig:
    return RouteConfig(path=path, methods=methods or None, line=line)


def winner(table: RouteTable, method: str, path: str) -> str | None:
    """The matched rule as `PATH` or `PATH METHODS`, so a wrong pick is obvious."""
    found = table.match(method, path)
    if found is None:
        return None
    rule = found.rule
    return rule.path if rule.methods is None else f"{rule.path} {','.join(rule.methods)}"


@pytest.mark.parametrize(
    ("rules", "method", "path", "expected"),
    [
        pytest.param(
            [rule("/a/{x}"), rule("/a/b")], "GET", "/a/b", "/a/b", id="literal-beats-param"
        ),
        pytest.param([rule("/a/b"), rule("/a/{x}")], "GET", "/a/b", "/a/b", id="not-file-order"),
        pytest.param(
            [rule("/a/{rest:path}"), rule("/a/{x}")],
            "GET",
            "/a/b",
            "/a/{x}",
            id="param-beats-path",
        ),
        pytest.param(
            [rule("/a/{rest:path}"), rule("/a/{x}")],
            "GET",
            "/a/b/c",
            "/a/{rest:path}",
            id="path-takes-what-param-cannot",
        ),
        pytest.param(
            [rule("/{x}/b/c"), rule("/a/{y}/{z}")],
            "GET",
            "/a/b/c",
            "/{x}/b/c",
            id="more-literals-win-wherever-they-are",
        ),
        pytest.param(
            [rule("/a/b/{rest:path}"), rule("/a/{x}/c")],
            "GET",
            "/a/b/c",
            "/a/{x}/c",
            id="same-literals-param-beats-path",
        ),
        pytest.param(
            [rule("/a/{x}"), rule("/a/{y}", "GET")],
            "GET",
            "/a/1",
            "/a/{y} GET",
            id="method-list-beats-none",
        ),
        pytest.param(
            [rule("/a/{x}"), rule("/a/{y}", "GET")],
            "POST",
            "/a/1",
            "/a/{x}",
            id="method-fallback-to-no-list",
        ),
        pytest.param(
            [rule("/a/{x}"), rule("/a/b", "POST")],
            "GET",
            "/a/b",
            "/a/{x}",
            id="method-fallback-to-less-specific",
        ),
        pytest.param([rule("/a/b", "POST")], "GET", "/a/b", None, id="method-mismatch-no-match"),
        pytest.param(
            [rule("/a/{x}"), rule("/{y}/b", "GET")],
            "GET",
            "/a/b",
            "/{y}/b GET",
            id="method-list-beats-none-across-shapes",
        ),
        pytest.param(
            [rule("/a/{x}"), rule("/{y}/b", "GET")],
            "POST",
            "/a/b",
            "/a/{x}",
            id="method-list-beats-none-only-for-its-methods",
        ),
        pytest.param(
            [rule("/{y}/b"), rule("/a/{x}")],
            "GET",
            "/a/b",
            "/a/{x}",
            id="leftmost-literal-breaks-remaining-ties",
        ),
        pytest.param(
            [rule("/a/{x}", "GET"), rule("/a/{y}", "POST")],
            "POST",
            "/a/b",
            "/a/{y} POST",
            id="same-shape-disjoint-methods",
        ),
        pytest.param(
            [rule("/a"), rule("/a", "GET")],
            "GET",
            "/a",
            "/a GET",
            id="static-method-list-beats-none",
        ),
        pytest.param(
            [rule("/a"), rule("/a", "GET")], "POST", "/a", "/a", id="static-fallback-to-no-list"
        ),
        pytest.param([rule("/a", "GET")], "HEAD", "/a", "/a GET", id="head-as-get"),
        pytest.param([rule("/a", "GET")], "get", "/a", "/a GET", id="method-case-insensitive"),
        pytest.param([rule("/a", "POST")], "HEAD", "/a", None, id="head-is-not-post"),
        pytest.param([rule("/a/")], "GET", "/a", "/a/", id="trailing-slash-on-pattern"),
        pytest.param([rule("/a")], "GET", "/a/", "/a", id="trailing-slash-on-request"),
        pytest.param([rule("/")], "GET", "/", "/", id="root"),
        pytest.param([rule("/")], "GET", "/a", None, id="root-is-not-a-prefix"),
        pytest.param([rule("/a")], "GET", "/a/b", None, id="literal-is-not-a-prefix"),
        pytest.param([rule("/a/b")], "GET", "/a", None, id="shorter-path-no-match"),
        pytest.param([rule("/a/{rest:path}")], "GET", "/a", None, id="path-needs-a-segment"),
        pytest.param([rule("/a/{x}")], "GET", "/a//", None, id="empty-segment-no-param"),
        pytest.param([rule("/{x}")], "GET", "//", None, id="double-slash-no-param"),
        pytest.param([rule("/a")], "GET", "a", None, id="relative-path-no-match"),
        # "xa" minus its first character is "a": only the leading-/ guard refuses it.
        pytest.param([rule("/a")], "GET", "xa", None, id="relative-path-not-read-past-char-0"),
        pytest.param([rule("/{x}")], "GET", "xa", None, id="relative-path-no-param"),
        pytest.param([rule("/")], "GET", "//", None, id="double-slash-is-not-root"),
        pytest.param([rule("/A")], "GET", "/a", None, id="literals-case-sensitive"),
    ],
)
def test_most_specific_rule_wins(
    rules: list[RouteConfig], method: str, path: str, expected: str | None
) -> None:
    assert winner(RouteTable(rules), method, path) == expected


# Each case sets two precedence rules against each other (and against the
# left-to-right order of rule 4), so that every weight of the folded
# precedence key is pinned: see the module docstring of keystile.routes.
@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    [
        pytest.param(
            [rule("/{p}/b/c/{rest:path}"), rule("/a/{x}/{y}/{z}", "GET")],
            "/a/b/c/d",
            "/{p}/b/c/{rest:path}",
            id="1-literals-beat-no-path-and-a-method-list",
        ),
        pytest.param(
            [rule("/a/b/{rest:path}"), rule("/a/{x}/{y}/{z}")],
            "/a/b/c/d",
            "/a/b/{rest:path}",
            id="1-literals-beat-a-longer-rule",
        ),
        pytest.param(
            [rule("/{x}/b/c"), rule("/a/{y}/{z}", "GET")],
            "/a/b/c",
            "/{x}/b/c",
            id="1-literals-beat-a-method-list",
        ),
        pytest.param(
            [rule("/{x}/b/c/{rest:path}"), rule("/a/{y}/{z}/{w}")],
            "/a/b/c/d",
            "/{x}/b/c/{rest:path}",
            id="1-literals-beat-no-path",
        ),
        pytest.param(
            [rule("/a/{rest:path}", "GET"), rule("/{x}/b/{y}")],
            "/a/b/c",
            "/{x}/b/{y}",
            id="2-no-path-beats-a-method-list",
        ),
        pytest.param(
            [rule("/a/{rest:path}"), rule("/{x}/b")],
            "/a/b",
            "/{x}/b",
            id="2-no-path-beats-the-leftmost-literal",
        ),
        pytest.param(
            [rule("/a/{x}/{y}"), rule("/{p}/{q}/c", "GET")],
            "/a/b/c",
            "/{p}/{q}/c GET",
            id="3-a-method-list-beats-the-leftmost-literal",
        ),
        pytest.param(
            [rule("/a/{rest:path}"), rule("/a/{x}/{more:path}")],
            "/a/b/c",
            "/a/{x}/{more:path}",
            id="4-param-beats-path-where-the-shorter-rule-has-it",
        ),
        pytest.param(
            [rule("/{x}/b/{rest:path}"), rule("/a/{y}/{more:path}")],
            "/a/b/c/d",
            "/a/{y}/{more:path}",
            id="4-the-first-difference-decides-not-the-length",
        ),
        pytest.param(
            [rule("/a/{x}/c/{rest:path}"), rule("/a/b/{more:path}")],
            "/a/b/c/d",
            "/a/b/{more:path}",
            id="4-the-first-difference-outweighs-all-later-ones",
        ),
    ],
)
def test_precedence_rules_apply_in_order(
    rules: list[RouteConfig], path: str, expected: str
) -> None:
    # The answer must not depend on file order, nor on other rules that
    # merely make the table deeper (precedence pads every rule to its depth).
    deeper = [*rules, rule("/z/z/z/z/z/z/z")]
    for table in (rules, rules[::-1], deeper):
        assert winner(RouteTable(table), "GET", path) == expected


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        pytest.param("/e/{event_id}", "/e/42", {"event_id": "42"}, id="one-param"),
        pytest.param("/o/{org}/m/{m}", "/o/acme/m/7", {"org": "acme", "m": "7"}, id="two-params"),
        pytest.param("/f/{rest:path}", "/f/a/b/c.txt", {"rest": "a/b/c.txt"}, id="path"),
        pytest.param("/f/{rest:path}", "/f/a/b/", {"rest": "a/b"}, id="path-trailing-slash"),
        pytest.param("/{x}/{rest:path}", "/1/2", {"x": "1", "rest": "2"}, id="param-and-path"),
        pytest.param("/e/{id}", "/e/a b%2F", {"id": "a b%2F"}, id="value-as-given"),
        # The static index holds rules without parameters only: were this rule
        # indexed under its text, "/items/id" would find it there and bind nothing.
        pytest.param("/items/{id}", "/items/id", {"id": "id"}, id="value-spelled-as-the-name"),
    ],
)
def test_params_are_bound(pattern: str, path: str, params: dict[str, str]) -> None:
    found = RouteTable([rule(pattern)]).match("GET", path)
    assert found is not None
    assert dict(found.params) == params


def test_params_are_read_only() -> None:
    found = RouteTable([rule("/e/{id}")]).match("GET", "/e/1")
    assert found is not None
    with pytest.raises(TypeError):
        found.params["id"] = "2"  # type: ignore[index]


# Each tie, and what the error says both rules match: the shape, and the
# methods they share (HEAD comes with GET).
@pytest.mark.parametrize(
    ("first", "second", "both"),
    [
        pytest.param(
            rule("/a/{x}", line=3), rule("/a/{y}", line=7), "/a/{} for any method", id="no-methods"
        ),
        pytest.param(
            rule("/a", "GET", line=3),
            rule("/a/", "GET", line=7),
            "/a for GET, HEAD",
            id="trailing-slash",
        ),
        pytest.param(
            rule("/a", "GET", "POST", line=3),
            rule("/a", "POST", "PUT", line=7),
            "/a for POST",
            id="overlapping-methods",
        ),
        pytest.param(
            rule("/a", "GET", line=3), rule("/a", "HEAD", line=7), "/a for HEAD", id="head-and-get"
        ),
        pytest.param(
            rule("/f/{a:path}", line=3),
            rule("/f/{b:path}", line=7),
            "/f/{:path} for any method",
            id="both-path-same-prefix",
        ),
    ],
)
def test_rules_that_tie_are_a_config_error_naming_both_lines(
    first: RouteConfig, second: RouteConfig, both: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RouteTable([first, second], source="k.yaml")
    assert caught.value.line == 7
    assert str(caught.value) == (
        f"k.yaml:7: route at line 3 ties with route at line 7: both match {both}, "
        "and no rule is more specific"
    )


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param([rule("/a", "GET"), rule("/a", "POST")], id="disjoint-methods"),
        pytest.param([rule("/a", "GET"), rule("/a")], id="list-and-none"),
        pytest.param([rule("/a/{x}"), rule("/a/{x:path}")], id="param-and-path"),
        pytest.param([rule("/a/{x}"), rule("/{x}/a")], id="different-literal-positions"),
        pytest.param([rule("/a/b"), rule("/a/{x}")], id="literal-and-param"),
    ],
)
def test_rules_that_can_be_ordered_do_not_tie(rules: list[RouteConfig]) -> None:
    assert len(RouteTable(rules)) == 2


def test_a_tie_without_lines_names_the_paths() -> None:
    with pytest.raises(ConfigError, match=r"route '/a/\{x\}' ties with route '/a/\{y\}'"):
        RouteTable([rule("/a/{x}"), rule("/a/{y}")])


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param("a/b", "must be a string starting with '/'", id="relative"),
        pytest.param("", "must be a string starting with '/'", id="empty"),
        pytest.param("/a//b", "empty segment", id="double-slash"),
        pytest.param("//", "empty segment", id="root-double-slash"),
        pytest.param("/a//", "empty segment", id="double-slash-at-the-end"),
        pytest.param("/a/{", "is not a parameter", id="lone-brace"),
        pytest.param("/a/{x", "is not a parameter", id="unclosed-brace"),
        pytest.param("/a/x}", "is not a parameter", id="unopened-brace"),
        pytest.param("/a/{}", "without a name", id="empty-braces"),
        pytest.param("/a/{1x}", "is not a parameter", id="name-starts-with-digit"),
        pytest.param("/a/file-{x}.json", "is not a parameter", id="partial-segment"),
        pytest.param("/a/{x}/{x}", "names the parameter 'x' twice", id="duplicate-name"),
        pytest.param("/a/{x:int}", "unknown converter 'int'", id="unknown-converter"),
        pytest.param("/a/{x:path}/b", "must be the last segment", id="path-not-last"),
        pytest.param("/a/../b", "dot segment", id="dot-dot"),
        pytest.param("/./b", "dot segment", id="dot"),
    ],
)
def test_bad_patterns_are_reported_with_the_route_line(pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        RouteTable([rule("/ok"), rule(pattern, line=12)], source="k.yaml")
    assert str(caught.value).startswith("k.yaml:12: ")


def test_parse_pattern_describes_its_shape() -> None:
    parsed = parse_pattern("/o/{org}/files/{rest:path}/")
    assert parsed.params == ("org", "rest")
    assert parsed.has_path
    assert parsed.literal_count == 2
    assert parsed.shape == "/o/{}/files/{:path}"


def test_rules_keep_config_order() -> None:
    rules = [rule("/b"), rule("/a"), rule("/c/{x}")]
    assert RouteTable(rules).rules == tuple(rules)
    assert len(RouteTable(rules)) == 3
    assert repr(RouteTable(rules)) == "<RouteTable of 3 rules>"


def big_table_rules() -> list[RouteConfig]:
    rules: list[RouteConfig] = []
    for i in range(100):
        rules += [
            rule(f"/api/v1/r{i}", "GET"),
            rule(f"/api/v1/r{i}", "POST", "DELETE"),
            rule(f"/api/v1/r{i}/{{id}}"),
            rule(f"/api/v1/r{i}/{{id}}/sub/{{sub}}", "PUT"),
            rule(f"/files/r{i}/{{rest:path}}"),
        ]
    return rules


@pytest.mark.parametrize(
    ("method", "path", "expected", "params"),
    [
        pytest.param("GET", "/api/v1/r0", "/api/v1/r0 GET", {}, id="first"),
        pytest.param("DELETE", "/api/v1/r99", "/api/v1/r99 POST,DELETE", {}, id="last"),
        pytest.param("HEAD", "/api/v1/r57", "/api/v1/r57 GET", {}, id="head"),
        pytest.param("PATCH", "/api/v1/r57", None, {}, id="no-method"),
        pytest.param("GET", "/api/v1/r42/7", "/api/v1/r42/{id}", {"id": "7"}, id="param"),
        pytest.param(
            "PUT",
            "/api/v1/r42/7/sub/x",
            "/api/v1/r42/{id}/sub/{sub} PUT",
            {"id": "7", "sub": "x"},
            id="two-params",
        ),
        pytest.param("GET", "/api/v1/r42/7/sub/x", None, {}, id="two-params-wrong-method"),
        pytest.param(
            "GET", "/files/r63/a/b/c", "/files/r63/{rest:path}", {"rest": "a/b/c"}, id="path"
        ),
        pytest.param("GET", "/api/v1/r100", None, {}, id="unknown-resource"),
    ],
)
def test_a_500_rule_table_matches_correctly(
    method: str, path: str, expected: str | None, params: dict[str, str]
) -> None:
    table = RouteTable(big_table_rules())
    assert len(table) == 500
    assert winner(table, method, path) == expected
    found = table.match(method, path)
    assert (dict(found.params) if found else {}) == params
