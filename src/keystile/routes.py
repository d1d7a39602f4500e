"""The compiled route table: which rule governs a request.

Patterns
    A pattern starts with ``/`` and is made of segments: literal text,
    ``{name}`` (exactly one non-empty segment) or ``{name:path}`` (the rest of
    the path, one or more segments; only as the last segment). A trailing
    slash is ignored, on patterns and on requests (``/a/`` is ``/a``); ``//``
    is an empty segment, never ``/``.

Precedence (decided by specificity, never by file order)
    Of the rules whose pattern and methods match the request:

    1. the rule with more literal segments wins;
    2. then a rule without ``{...:path}`` beats one with it;
    3. then a rule with a ``methods`` list beats one without;
    4. then, reading segments left to right, the first position where the
       rules differ decides: literal beats ``{name}`` beats ``{name:path}``
       (``/a/{x}`` beats ``/{y}/b`` for ``/a/b``).

    Each rule is consulted only when the rules above it tie, whatever the
    later ones would say:

    - ``/{p}/b/c/{rest:path}`` beats ``GET /a/{x}/{y}/{z}`` for ``/a/b/c/d``
      (rule 1: two literals against one, despite rules 2, 3 and 4);
    - ``/a/b/{rest:path}`` beats ``/a/{x}/{y}/{z}`` for ``/a/b/c/d``
      (rule 1, despite rule 2: a longer pattern is not more specific);
    - ``/{x}/b/{y}`` beats ``GET /a/{rest:path}`` for ``/a/b/c``
      (rule 2, despite rules 3 and 4);
    - ``GET /{p}/{q}/c`` beats ``/a/{x}/{y}`` for ``GET /a/b/c``
      (rule 3, despite rule 4).

    A rule whose ``methods`` do not include the request's method is not a
    match: the request falls back to less specific rules, or to none (and the
    config's ``default`` applies). ``HEAD`` is matched as ``GET``: a rule
    listing ``GET`` also governs ``HEAD``.

Ties
    Two rules with the same shape (the same literal segments in the same
    positions, parameters of the same kinds elsewhere) tie when both have no
    ``methods`` or both have lists that overlap (``GET`` overlapping
    ``HEAD``). No precedence could choose between them, so a tie is a
    :class:`~keystile.errors.ConfigError` naming both lines, never a silent
    "first one wins".

The table is a segment trie compiled once; a trie node *is* a shape, so
every rule ending at one node differs only by methods and is found by one
dict lookup. Matching walks the request's segments (following the literal
and the parameter branch where both exist), so its cost grows with the
path's depth, not with the number of rules.

Usage::

    table = RouteTable(config.routes, source="keystile.yaml")
    found = table.match("GET", "/api/v1/events/42/")
    if found is not None:
        found.rule.scopes, found.params["event_id"]

Security caveat: ``match`` expects a path that the caller has already
decoded and refused if malformed (dot segments, ``//``, encoded slashes:
SPEC section 4 step 3). It never normalizes on its own, and a path with an
empty segment simply matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from keystile.errors import ConfigError

if TYPE_CHECKING:
    from keystile.config import RouteConfig

__all__ = ["PathPattern", "RouteMatch", "RouteTable", "Segment", "parse_pattern"]

# Ranks double as the left-to-right tie-break of precedence rule 4.
LITERAL = 2
PARAM = 1
PATH = 0

_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")


@dataclass(frozen=True, slots=True)
class Segment:
    """One pattern segment: ``kind`` is LITERAL, PARAM or PATH; ``value`` the text or name."""

    kind: int
    value: str


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A parsed, validated path pattern."""

    text: str
    segments: tuple[Segment, ...]

    @property
    def params(self) -> tuple[str, ...]:
        """The parameter names, in path order."""
        return tuple(s.value for s in self.segments if s.kind != LITERAL)

    @property
    def has_path(self) -> bool:
        """Whether the pattern ends with a ``{name:path}`` segment."""
        return bool(self.segments) and self.segments[-1].kind == PATH

    @property
    def literal_count(self) -> int:
        """How many literal segments the pattern has (precedence rule 1)."""
        return sum(1 for s in self.segments if s.kind == LITERAL)

    @property
    def shape(self) -> str:
        """The pattern with parameter names erased: equal shapes can tie."""
        parts = {PARAM: "{}", PATH: "{:path}"}
        return "/" + "/".join(parts.get(s.kind, s.value) for s in self.segments)


def parse_pattern(
    path: object, *, line: int | None = None, source: str | None = None
) -> PathPattern:
    """Parse a route pattern, raising :class:`ConfigError` at ``source:line``.

    Patterns that could never match a request the pipeline lets through
    (``//``, ``/a//b``, ``.``/``..`` segments) are refused here rather than
    left as dead rules.
    """

    def fail(message: str) -> ConfigError:
        return ConfigError(f"route path {path!r}: {message}", file=source, line=line)

    if not isinstance(path, str) or not path.startswith("/"):
        raise fail("must be a string starting with '/'")
    # One trailing slash after a segment is ignored; `//` is an empty
    # segment before it, never `/`.
    body = path[1:-1] if path.endswith("/") and not path.endswith("//") else path[1:]
    segments: list[Segment] = []
    names: set[str] = set()
    texts = body.split("/") if body else []
    for index, text in enumerate(texts):
        if not text:
            raise fail("has an empty segment ('//')")
        if text in (".", ".."):
            raise fail(f"has a dot segment {text!r}, which no request can match")
        if "{" not in text and "}" not in text:
            segments.append(Segment(LITERAL, text))
            continue
        found = _PARAM_RE.fullmatch(text)
        if found is None:
            if text == "{}":
                raise fail("has a parameter without a name ('{}')")
            raise fail(
                f"segment {text!r} is not a parameter: write a whole segment "
                "as {name} or {name:path} (name: letters, digits, _)"
            )
        name, converter = found.group(1), found.group(2)
        if name in names:
            raise fail(f"names the parameter {name!r} twice")
        names.add(name)
        if converter is None:
            segments.append(Segment(PARAM, name))
        elif converter == "path":
            if index != len(texts) - 1:
                raise fail(f"{{{name}:path}} must be the last segment")
            segments.append(Segment(PATH, name))
        else:
            raise fail(f"unknown converter {converter!r} in {text!r} (only ':path' exists)")
    return PathPattern(path, tuple(segments))


class RouteMatch(NamedTuple):
    """The rule that governs a request, with the path parameters it bound (read-only)."""

    # A NamedTuple rather than a frozen dataclass: one is built per request,
    # and a frozen dataclass's __init__ costs several times as much.
    rule: RouteConfig
    params: Mapping[str, str]


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Rule:
    config: RouteConfig
    pattern: PathPattern
    methods: frozenset[str] | None  # with HEAD added wherever GET is
    key: int  # precedence, larger wins: see _precedence
    binds: tuple[tuple[int, str, bool], ...]  # (segment index, name, is {name:path})
    static: RouteMatch | None  # the answer itself, for a rule without parameters


class _Slot:
    """The rules ending at one trie node (one shape), indexed by method."""

    __slots__ = ("any", "by_method", "rules")

    def __init__(self) -> None:
        self.by_method: dict[str, _Rule] = {}
        self.any: _Rule | None = None
        self.rules: list[_Rule] = []

    def find(self, method: str) -> _Rule | None:
        return self.by_method.get(method) or self.any


class _Node:
    __slots__ = ("end", "literals", "param", "rest")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.end: _Slot | None = None  # rules whose pattern ends here
        self.rest: _Slot | None = None  # rules with {name:path} starting here


class RouteTable:
    """The routes of a config, compiled once into a segment trie.

    ``match(method, path)`` returns the most specific rule (see the module
    docstring for precedence) and its path parameters, or ``None``.

    Usage::

        table = RouteTable(routes)
        table.match("HEAD", "/api/v1/events/")   # the GET rule of /api/v1/events

    Security caveat: the path must already be decoded and validated by the
    caller; see the module docstring.
    """

    __slots__ = ("_root", "_rules", "_source", "_static")

    def __init__(self, routes: Sequence[RouteConfig], *, source: str | None = None) -> None:
        self._source = source
        self._rules = tuple(routes)
        self._root = _Node()
        # Rules made only of literals, by path: the most specific match there
        # can be, so most requests are answered with one dict lookup.
        self._static: dict[str, _Slot] = {}
        patterns = [parse_pattern(c.path, line=c.line, source=source) for c in self._rules]
        depth = max((len(p.segments) for p in patterns), default=0)
        for config, pattern in zip(self._rules, patterns, strict=True):
            self._insert(_compile(config, pattern, depth))

    @property
    def rules(self) -> tuple[RouteConfig, ...]:
        """The rules in config order (for ``keystile explain``)."""
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"<RouteTable of {len(self._rules)} rules>"

    def match(self, method: str, path: str) -> RouteMatch | None:
        """Return the rule governing ``method path`` and its parameters, or ``None``."""
        if not path.startswith("/"):
            return None
        if len(path) > 1 and path.endswith("/"):
            if path.endswith("//"):
                return None  # an empty segment, as `//` is: never the rule of `/`
            path = path[:-1]
        method = method.upper()
        static = self._static.get(path)  # never holds a path with `//`
        if static is not None:
            found = static.by_method.get(method) or static.any
            if found is not None:
                return found.static
        parts = path[1:].split("/") if len(path) > 1 else []
        if "" in parts:
            return None  # the pipeline refuses `//`; never let it match a parameter
        depth = len(parts)
        best: _Rule | None = None
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if node.rest is not None and index < depth:
                found = node.rest.find(method)
                if found is not None and (best is None or found.key > best.key):
                    best = found
            if index == depth:
                if node.end is not None:
                    found = node.end.find(method)
                    if found is not None and (best is None or found.key > best.key):
                        best = found
                continue
            child = node.literals.get(parts[index])
            if child is not None:
                stack.append((child, index + 1))
            if node.param is not None:
                stack.append((node.param, index + 1))
        if best is None:
            return None
        if best.static is not None:
            return best.static
        params: dict[str, str] = {}
        for index, name, rest in best.binds:
            params[name] = "/".join(parts[index:]) if rest else parts[index]
        return RouteMatch(best.config, MappingProxyType(params))

    def _insert(self, rule: _Rule) -> None:
        node = self._root
        segments = rule.pattern.segments
        for segment in segments[:-1] if rule.pattern.has_path else segments:
            if segment.kind == LITERAL:
                node = node.literals.setdefault(segment.value, _Node())
            else:
                if node.param is None:
                    node.param = _Node()
                node = node.param
        if rule.pattern.has_path:
            if node.rest is None:
                node.rest = _Slot()
            slot = node.rest
        else:
            if node.end is None:
                node.end = _Slot()
            slot = node.end
        for other in slot.rules:
            if _overlap(rule.methods, other.methods):
                raise self._tie(other, rule)
        slot.rules.append(rule)
        if rule.static is not None:
            self._static.setdefault("/" + "/".join(s.value for s in segments), slot)
        if rule.methods is None:
            slot.any = rule
        else:
            for method in rule.methods:
                slot.by_method[method] = rule

    def _tie(self, first: _Rule, second: _Rule) -> ConfigError:
        common = (
            "any method"
            if first.methods is None
            else ", ".join(sorted(first.methods & (second.methods or frozenset())))
        )
        return ConfigError(
            f"{_name(first.config)} ties with {_name(second.config)}: both match "
            f"{second.pattern.shape} for {common}, and no rule is more specific",
            file=self._source,
            line=second.config.line,
        )


def _compile(config: RouteConfig, pattern: PathPattern, depth: int) -> _Rule:
    methods: frozenset[str] | None = None
    if config.methods is not None:
        methods = frozenset(m.upper() for m in config.methods)
        if "GET" in methods:
            methods |= {"HEAD"}
    binds = tuple(
        (i, s.value, s.kind == PATH) for i, s in enumerate(pattern.segments) if s.kind != LITERAL
    )
    static = None if binds else RouteMatch(config, _NO_PARAMS)
    return _Rule(config, pattern, methods, _precedence(pattern, methods, depth), binds, static)


def _precedence(pattern: PathPattern, methods: frozenset[str] | None, depth: int) -> int:
    """The module docstring's precedence rules 1 to 4 folded into one integer.

    Compared once per candidate on the request path, an int is cheaper than
    a tuple. Rules 1 to 3 make the leading digit, ``literals * 4 + 2 * (no
    {name:path}) + (methods listed)``: 4 exceeds the 3 that rules 2 and 3 add
    at most, and rule 2's 2 exceeds rule 3's 1. Rule 4's segment kinds follow
    as base-3 digits, each worth more than all the digits after it. Every
    rule is padded to the table's depth, so every key has the same number of
    digits and rule 1 is never outweighed by a longer pattern. The padding's
    value never decides: two matching rules whose leading digits tie and whose
    lengths differ both end in ``{name:path}``, and they differ at or before
    the shorter one's last segment.
    """
    key = pattern.literal_count * 4 + (0 if pattern.has_path else 2) + (methods is not None)
    kinds = [s.kind for s in pattern.segments]
    for kind in kinds + [PATH] * (depth - len(kinds)):
        key = key * 3 + kind
    return key


def _overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    """Whether two rules of one shape could both govern a request."""
    if a is None or b is None:
        return a is None and b is None
    return not a.isdisjoint(b)


def _name(config: RouteConfig) -> str:
    if config.line is not None:
        return f"route at line {config.line}"
    return f"route {config.path!r}"
