"""``keystile keys patterns``: what a secret scanner registers matches our keys, and only them.

The property: for any key types the config accepts, every key of a type
matches that type's pattern, and no type's pattern matches another type's
key, even when one prefix is a substring of another (``sk_`` in
``live_sk_``). Prefixes that are prefixes of one another (``sk_`` and
``sk_live_``) are refused by the config itself, because then no pattern,
and no lookup, could tell the types apart.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystile import ConfigError
from keystile._cli_patterns import patterns
from keystile.cli import main
from keystile.config import load_config
from keystile.keys import ALPHABETS, CHECKSUM_LENGTH, KeyFormat

PREFIX_CHARS = string.ascii_letters + string.digits + "_-"
TYPES = ("secret", "publishable", "embed")
MIN_LENGTH = {"base62": 22, "hex": 32}  # 128 bits


def bounded(entry: dict[str, Any]) -> re.Pattern[str]:
    """The pattern as a scanner runs it: between its before and after expressions."""
    after = entry["after"].replace(r"\z", r"\Z")  # Python's spelling before 3.14
    return re.compile(f"(?:{entry['before']})({entry['regex']})(?:{after})")


def key_of(fmt: KeyFormat, body: str) -> str:
    head = fmt.prefix + body
    return head + fmt._checksum(head) if fmt.checksum else head


@st.composite
def key_type_configs(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    """Three key types whose prefixes often contain, extend or repeat one another."""
    base = draw(st.text(PREFIX_CHARS, min_size=1, max_size=8))
    types = {}
    for name in TYPES:
        fresh = draw(st.text(PREFIX_CHARS, min_size=1, max_size=8))
        how = draw(st.sampled_from(["fresh", "extends", "contains", "same"]))
        prefix = {
            "fresh": fresh,
            "extends": base + fresh,
            # After a separator as in "live_sk_": a boundary that stops only at
            # letters and digits would let "sk_..." be found inside it.
            "contains": fresh + draw(st.sampled_from(["", "_", "-"])) + base,
            "same": base,
        }[how]
        alphabet = draw(st.sampled_from(["base62", "hex"]))
        length = draw(st.integers(MIN_LENGTH[alphabet], MIN_LENGTH[alphabet] + 30))
        types[name] = {
            "prefix": prefix,
            "alphabet": alphabet,
            "length": length,
            "checksum": draw(st.booleans()),
        }
    return types


def _overlap(types: dict[str, dict[str, Any]]) -> bool:
    prefixes = [t["prefix"] for t in types.values()]
    return any(
        a.startswith(b) for i, a in enumerate(prefixes) for j, b in enumerate(prefixes) if i != j
    )


@given(key_type_configs(), st.data())
def test_every_key_matches_its_own_pattern_and_no_other_types(
    types: dict[str, dict[str, Any]], data: st.DataObject
) -> None:
    try:
        config = load_config({"store": "memory://", "key_types": types})
    except ConfigError as exc:
        assert _overlap(types) and "overlap" in str(exc)
        return
    assert not _overlap(types)
    entries = {e["type"]: e for e in patterns(config)}
    keys: dict[str, list[str]] = {}
    for name, t in types.items():
        fmt = KeyFormat(t["prefix"], t["alphabet"], t["length"], t["checksum"])
        body = data.draw(
            st.text(ALPHABETS[t["alphabet"]], min_size=t["length"], max_size=t["length"])
        )
        keys[name] = [fmt.generate(), key_of(fmt, body)]
        assert entries[name]["length"] == len(keys[name][0])
    for name, own in keys.items():
        entry = entries[name]
        for key in own:
            assert re.fullmatch(entry["regex"], key)
            found = [m.group(1) for m in bounded(entry).finditer(f'API_KEY="{key}"\n')]
            assert found == [key]
            assert [m.group(1) for m in bounded(entry).finditer(key)] == [key]
        for other, theirs in keys.items():
            if other == name:
                continue
            for key in theirs:
                assert not re.fullmatch(entry["regex"], key), (name, other, key)
                assert bounded(entry).search(f'API_KEY="{key}"\n') is None, (name, other, key)
                assert bounded(entry).search(key) is None, (name, other, key)


def test_a_prefix_inside_another_types_prefix_needs_the_boundaries() -> None:
    config = load_config(
        {
            "store": "memory://",
            "key_types": {"secret": {"prefix": "sk_"}, "embed": {"prefix": "live_sk_"}},
        }
    )
    entries = {e["type"]: e for e in patterns(config)}
    embed_key = KeyFormat("live_sk_").generate()
    # Unbounded, "sk_" plus 49 characters is found inside the embed key...
    assert re.search(entries["secret"]["regex"], embed_key)
    # ...which is why the pattern comes with what may stand around it.
    assert bounded(entries["secret"]).search(embed_key) is None
    assert bounded(entries["embed"]).search(embed_key)


def test_prefixes_that_are_prefixes_of_one_another_are_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        load_config(
            {
                "store": "memory://",
                "key_types": {"secret": {"prefix": "sk_"}, "embed": {"prefix": "sk_live_"}},
            }
        )


def test_the_pattern_is_what_the_endpoint_checks_before_the_checksum() -> None:
    for fmt in (
        KeyFormat("sk_"),
        KeyFormat("sq_live_", "hex", 64, False),
        KeyFormat("h-", "hex", 32),
    ):
        key = fmt.generate()
        assert re.fullmatch(fmt.scanner_regex, key) and fmt.matches(key)
        wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
        assert re.fullmatch(fmt.scanner_regex, wrong)  # a regex cannot see the checksum...
        assert fmt.matches(wrong) is not fmt.checksum  # ...the endpoint can
    assert KeyFormat("sk_").scanner_regex == "sk_[0-9A-Za-z]{49}"
    assert KeyFormat("sq_live_", "hex", 64, False).scanner_regex == "sq_live_[0-9a-f]{64}"
    hex_checked = KeyFormat("h-", "hex", 32).scanner_regex
    assert hex_checked == r"h\-[0-9a-f]{32}[0-9A-Za-z]{" + str(CHECKSUM_LENGTH) + "}"


# -- the command ----------------------------------------------------------------------------------

CONFIG = """\
store: "memory://"
key_types:
  secret: {prefix: "sk_live_"}
  publishable: {prefix: "sq_pub_", alphabet: hex, length: 64, checksum: false}
"""


def test_keys_patterns_json_gives_each_types_regex(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keystile.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    assert main(["keys", "patterns", "--config", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_type = {e["type"]: e for e in listed}
    assert list(by_type) == ["secret", "publishable", "embed"]
    assert by_type["secret"] == {
        "type": "secret",
        "prefix": "sk_live_",
        "alphabet": "base62",
        "random_length": 43,
        "checksum": "crc32-base62",
        "length": 57,
        "regex": "sk_live_[0-9A-Za-z]{49}",
        "before": r"\A|[^0-9A-Za-z_-]",
        "after": r"\z|[^0-9A-Za-z_-]",
        "origin_bound": False,
    }
    assert by_type["publishable"]["regex"] == "sq_pub_[0-9a-f]{64}"
    assert by_type["publishable"]["checksum"] is None
    assert by_type["publishable"]["origin_bound"] is True


def test_keys_patterns_text_names_each_type_and_the_boundaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keystile.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    assert main(["--config", str(path), "keys", "patterns"]) == 0
    out = capsys.readouterr().out
    assert "secret       sk_live_[0-9A-Za-z]{49}" in out
    assert "publishable  sq_pub_[0-9a-f]{64}" in out
    assert "43 base62 + 6 checksum (CRC32, base62): 57 characters" in out
    assert "origin-bound (public by design)" in out
    assert r"before: \A|[^0-9A-Za-z_-]" in out


def test_keys_patterns_without_a_config_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "patterns", "--config", str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keystile: error: no config file at") and err.count("\n") == 1
