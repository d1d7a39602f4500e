"""Reading the config: YAML that remembers line numbers, and checked sections.

Split from :mod:`keystile.config` so that module reads as the schema (what a
config holds) while this one holds the mechanics of reading and refusing.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import timedelta
from typing import Any, TypeAlias

import yaml
from limits import parse_many

from keystile.errors import ConfigError
from keystile.scopes import is_well_formed

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | timedelta) -> float:
    """Return ``value`` in seconds: ``250ms``, ``2s``, ``1m``, ``24h``, ``7d`` or a number.

    Negative, infinite and NaN durations are refused: none of keystile's
    durations (TTLs, timeouts, grace periods) means anything below zero.
    """
    seconds: float | None = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (found := _DURATION.fullmatch(value)):
        seconds = float(found.group(1)) * _UNIT[found.group(2) or "s"]
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"{value!r} is not a duration: write 250ms, 2s, 1m, 24h, 7d or a number of seconds"
        )
    return seconds


# --- YAML with line numbers ------------------------------------------------


class _LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its own line and each key's line."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}


class _LineList(list[Any]):
    """A YAML sequence that remembers its own line and each item's line."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry 1-based line numbers."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[_LineDict]:
    data = _LineDict(node.start_mark.line + 1)
    yield data  # yielded first so that anchors and aliases resolve as in SafeLoader
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            seen = key in data
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if seen:
            # PyYAML keeps the last duplicate silently; in an auth config the
            # first one is often the one the reader trusts, so refuse both.
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {data.key_lines[key]})",
                key_node.start_mark,
            )
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Iterator[_LineList]:
    data = _LineList(node.start_mark.line + 1)
    yield data
    for child in node.value:
        data.append(loader.construct_object(child, deep=True))
        data.item_lines.append(child.start_mark.line + 1)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def read_yaml(file: str) -> Any:
    try:
        with open(file, encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_LineLoader)
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc.strerror}", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("the config is not UTF-8 text", file=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None


# --- validation helpers -------------------------------------------------------

Check: TypeAlias = Callable[[str], str | None]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a mapping" if isinstance(value, Mapping) else "a list" if _is_list(value) else "?"


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple))


class Section:
    """One mapping of the config: typed getters whose errors carry the key's line."""

    def __init__(self, data: object, name: str, line: int | None, file: str | None) -> None:
        if data is None:
            data = {}  # `limiter:` with nothing under it means "all defaults"
        if not isinstance(data, Mapping):
            where = name or "the config"
            line = data.line if isinstance(data, _LineList) and line is None else line
            raise ConfigError(f"{where} must be a mapping, not {_kind(data)}", file=file, line=line)
        self.data: Mapping[Any, Any] = data
        self.name = name
        self.file = file
        self.line = data.line if isinstance(data, _LineDict) else line

    def where(self, key: object) -> str:
        return f"{self.name}.{key}" if self.name else str(key)

    def line_of(self, key: object) -> int | None:
        if isinstance(self.data, _LineDict):
            return self.data.key_lines.get(key, self.line)
        return self.line

    def fail(self, key: object, message: str, line: int | None = None) -> ConfigError:
        line = line if line is not None else self.line_of(key)
        return ConfigError(f"{self.where(key)}: {message}", file=self.file, line=line)

    def only(self, allowed: Collection[str]) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown key {self.where(key)!r} (allowed: {', '.join(allowed)}){hint}",
                    file=self.file,
                    line=self.line_of(key),
                )

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def sub(self, key: str) -> Section:
        return Section(self.data.get(key), self.where(key), self.line_of(key), self.file)

    def text(self, key: str, default: str, choices: Collection[str] = ()) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value or (choices and value not in choices):
            expected = f"one of {', '.join(choices)}" if choices else "a non-empty string"
            raise self.fail(key, f"must be {expected}, not {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(key, f"must be a whole number >= {minimum}, not {value!r}")
        return value

    def duration(self, key: str, default: float, *, positive: bool) -> float:
        try:
            seconds = parse_duration(self.data.get(key, default))
        except ConfigError as exc:
            raise self.fail(key, exc.message) from None
        if positive and seconds <= 0:
            raise self.fail(key, "must be longer than zero")
        return seconds

    def limit(self, key: str, default: str | None) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        problem = limit_problem(value)
        if problem:
            raise self.fail(key, problem)
        return str(value)

    def items(self, key: str) -> list[tuple[Any, int | None]]:
        value = self.data.get(key)
        if value is None:
            return []
        if not _is_list(value):
            raise self.fail(key, f"must be a list, not {_kind(value)}")
        if isinstance(value, _LineList):
            return list(zip(value, value.item_lines, strict=True))
        return [(item, self.line_of(key)) for item in value]

    def strings(self, key: str, default: tuple[str, ...], check: Check) -> tuple[str, ...]:
        """A list of strings, each checked, duplicates dropped (order kept)."""
        if key not in self.data:
            return default
        out: dict[str, None] = {}
        for item, line in self.items(key):
            problem = check(item) if isinstance(item, str) else f"must be a string, not {item!r}"
            if problem:
                raise self.fail(key, problem, line)
            out[item] = None
        return tuple(out)


def limit_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a rate limit such as '100/minute', not {value!r}"
    try:
        parsed = parse_many(value)
    except ValueError:
        return f"{value!r} is not a rate limit; write e.g. '100/minute' or '10/second;1000/day'"
    if any(item.amount < 1 for item in parsed):
        return f"{value!r} allows no request at all; remove the route instead"
    return None


def scope_check(*, wildcards: bool) -> Check:
    def check(scope: str) -> str | None:
        if is_well_formed(scope, allow_wildcards=wildcards):
            return None
        if not wildcards and is_well_formed(scope):
            return f"{scope!r}: a wildcard is not allowed here, name concrete scopes"
        return f"{scope!r} is not a well-formed scope (resource:action or a word of A-Za-z0-9_.-)"

    return check


def choice(choices: Collection[str]) -> Check:
    return lambda v: None if v in choices else f"{v!r} is not one of {', '.join(choices)}"
