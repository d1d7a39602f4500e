"""The scope algebra: wildcards, destructive scopes, near misses, implies, presets."""

from __future__ import annotations

import string
from dataclasses import replace
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystile.config import ScopesConfig, load_config
from keystile.errors import KeyInputError
from keystile.scopes import ScopePolicy, find_cycle, is_well_formed

DESTRUCTIVE = ("servers:delete", "backups:restore", "wipe")

POLICY = ScopePolicy(
    implies={
        "admin": ["*"],
        "events:write": ["events:read"],
        "ops": ["servers:*"],
        "owner": ["servers:delete"],
        "a": ["b"],
        "b": ["c"],
        "c": ["a"],  # a cycle: expand must still terminate
    },
    presets={
        "read-only": ["*:read"],
        "full": ["*"],
        "servers": ["servers:*"],
        "mixed": ["results", "*:read", "results"],
    },
    destructive=DESTRUCTIVE,
    known=[
        "events:read",
        "events:write",
        "servers:read",
        "servers:write",
        "servers:delete",
        "backups:restore",
        "results",
        "admin",
        "owner",
        "members:read",
    ],
)


def readonly(mapping: dict[str, tuple[str, ...]]) -> MappingProxyType[str, tuple[str, ...]]:
    return MappingProxyType(mapping)


def grants(granted: list[str], required: str) -> bool:
    return POLICY.grants(POLICY.expand(granted), required)


@pytest.mark.parametrize(
    ("granted", "required", "expected"),
    [
        pytest.param(["events:read"], "events:read", True, id="exact"),
        pytest.param(["*"], "events:read", True, id="star-grants-concrete"),
        pytest.param(["*"], "results", True, id="star-grants-bare-word"),
        pytest.param(["*"], "servers:delete", True, id="star-grants-destructive"),
        pytest.param(["*"], "wipe", True, id="star-grants-destructive-bare-word"),
        pytest.param(["events:*"], "events:write", True, id="resource-wildcard"),
        pytest.param(["events:*"], "events", False, id="resource-wildcard-not-bare-resource"),
        pytest.param(["events:*"], "members:read", False, id="resource-wildcard-other-resource"),
        pytest.param(
            ["servers:*"], "servers:delete", False, id="resource-wildcard-not-destructive"
        ),
        pytest.param(["*:read"], "members:read", True, id="action-wildcard"),
        pytest.param(["*:read"], "members:write", False, id="action-wildcard-other-action"),
        pytest.param(["*:read"], "read", False, id="action-wildcard-not-bare-word"),
        pytest.param(["*:restore"], "backups:restore", False, id="action-wildcard-not-destructive"),
        pytest.param(["servers:delete"], "servers:delete", True, id="destructive-by-exact-name"),
        pytest.param(["admin"], "servers:delete", True, id="destructive-through-implied-star"),
        pytest.param(["owner"], "servers:delete", True, id="destructive-through-implied-exact"),
        pytest.param(["ops"], "servers:write", True, id="implied-resource-wildcard"),
        pytest.param(["ops"], "servers:delete", False, id="implied-wildcard-not-destructive"),
        pytest.param(["events:write"], "events:read", True, id="implied"),
        pytest.param(["events:read"], "events:write", False, id="implies-is-one-way"),
        pytest.param(["events"], "events:read", False, id="bare-resource-not-action"),
        pytest.param(["events:read"], "events", False, id="action-not-bare-resource"),
        pytest.param(["events:rea"], "events:read", False, id="prefix-near-miss"),
        pytest.param(["events:readall"], "events:read", False, id="suffix-near-miss"),
        pytest.param(["Events:read"], "events:read", False, id="case-near-miss"),
        pytest.param(["events:read "], "events:read", False, id="trailing-space"),
        pytest.param(["events:*"], "events:read:x", False, id="malformed-required-not-wildcarded"),
        pytest.param([], "events:read", False, id="nothing-granted"),
        pytest.param(["a"], "c", True, id="transitive-through-cycle"),
    ],
)
def test_grants(granted: list[str], required: str, expected: bool) -> None:
    assert grants(granted, required) is expected


def test_expand_is_transitive_and_terminates_on_a_cycle() -> None:
    assert POLICY.expand(["a"]) == {"a", "b", "c"}
    assert POLICY.expand(["events:write", "results"]) == {"events:write", "events:read", "results"}


def test_expand_does_not_treat_wildcards_as_implying_their_matches() -> None:
    # `servers:*` is kept as a pattern; it must not pull in `owner`'s implication.
    assert POLICY.expand(["servers:*"]) == {"servers:*"}


@pytest.mark.parametrize(
    ("granted", "all_of", "any_of", "expected"),
    [
        pytest.param(["events:read"], ["events:read"], [], (), id="authorized"),
        pytest.param([], [], [], (), id="nothing-required"),
        pytest.param(["x"], ["a:b", "c:d"], [], ("a:b", "c:d"), id="each-missing-all-of"),
        pytest.param(["a:b"], ["a:b", "c:d"], [], ("c:d",), id="only-the-missing-one"),
        pytest.param(["results"], [], ["results", "admin"], (), id="any-of-one-granted"),
        pytest.param([], [], ["results", "admin"], ("results", "admin"), id="any-of-none-granted"),
        pytest.param(
            ["results"], ["events:read"], ["results"], ("events:read",), id="all-of-and-any-of"
        ),
        pytest.param(["x"], ["a:b"], ["a:b", "c"], ("a:b", "c"), id="no-duplicate-listing"),
    ],
)
def test_missing(
    granted: list[str], all_of: list[str], any_of: list[str], expected: tuple[str, ...]
) -> None:
    assert POLICY.missing(POLICY.expand(granted), all_of, any_of) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("read-only", ("events:read", "members:read", "servers:read"), id="star-read"),
        pytest.param(
            "full",
            (
                "events:read",
                "events:write",
                "members:read",
                "results",
                "servers:read",
                "servers:write",
            ),
            id="star-is-known-non-destructive-and-not-admin",
        ),
        pytest.param("servers", ("servers:read", "servers:write"), id="resource-wildcard"),
        pytest.param(
            "mixed", ("results", "events:read", "members:read", "servers:read"), id="concrete-kept"
        ),
    ],
)
def test_preset_expands_against_known_scopes(name: str, expected: tuple[str, ...]) -> None:
    assert POLICY.preset(name) == expected


def test_preset_never_grants_a_destructive_scope() -> None:
    for name in POLICY.presets:
        closure = POLICY.expand(POLICY.preset(name))
        assert not any(POLICY.grants(closure, s) for s in DESTRUCTIVE), name


@pytest.mark.parametrize(
    ("policy", "choices"),
    [
        pytest.param(
            POLICY, "choose from: full, mixed, read-only, servers", id="lists-the-presets"
        ),
        pytest.param(ScopePolicy(), "choose from: none defined", id="says-there-are-none"),
    ],
)
def test_unknown_preset_is_a_key_input_error_naming_the_field_and_the_choices(
    policy: ScopePolicy, choices: str
) -> None:
    with pytest.raises(KeyInputError) as caught:
        policy.preset("everything")
    assert caught.value.field == "preset"
    assert str(caught.value) == f"unknown preset 'everything' ({choices})"


def test_a_scope_named_only_in_a_preset_is_known() -> None:
    # No route, implies or `known` list names "deploy:run": the preset alone
    # must keep it known, or `*` presets and the management API forget it.
    section = ScopesConfig(
        presets=MappingProxyType({"ci": ("deploy:run",), "all": ("*",), "reads": ("*:read",)}),
        known=("events:read",),
        default=("events:read",),
    )
    policy = ScopePolicy.from_config(section)
    assert policy.known == {"deploy:run", "events:read"}
    assert policy.preset("all") == ("deploy:run", "events:read")
    assert policy.preset("reads") == ("events:read",)
    config = load_config({"store": "memory://", "scopes": {"presets": {"ci": ["deploy:run"]}}})
    assert "deploy:run" in config.known_scopes()
    assert "deploy:run" in config.scope_policy.known


# Each case names a scope in one place of a `scopes:` section only: from_config
# must know it all the same, or a `*` preset silently stops handing it out.
@pytest.mark.parametrize(
    ("section", "scope"),
    [
        pytest.param(ScopesConfig(known=("deploy:run",)), "deploy:run", id="known"),
        pytest.param(ScopesConfig(default=("deploy:run",)), "deploy:run", id="default"),
        pytest.param(
            ScopesConfig(presets=readonly({"ci": ("deploy:run",)})), "deploy:run", id="preset"
        ),
        pytest.param(
            ScopesConfig(implies=readonly({"deploy:run": ("deploy:read",)})),
            "deploy:run",
            id="implying",
        ),
        pytest.param(
            ScopesConfig(implies=readonly({"deploy:run": ("deploy:read",)})),
            "deploy:read",
            id="implied",
        ),
    ],
)
def test_from_config_knows_every_scope_its_section_names(section: ScopesConfig, scope: str) -> None:
    policy = ScopePolicy.from_config(section)
    assert scope in policy.known
    everything = replace(section, presets=readonly({**section.presets, "all": ("*",)}))
    assert scope in ScopePolicy.from_config(everything).preset("all")


def test_from_config_knows_its_destructive_scopes_and_never_hands_them_out() -> None:
    section = ScopesConfig(destructive=("servers:delete",), presets=readonly({"all": ("*",)}))
    policy = ScopePolicy.from_config(section, known=["servers:read"])
    assert policy.destructive == {"servers:delete"}
    assert policy.known == {"servers:delete", "servers:read", "read"}  # "read": the default
    assert policy.preset("all") == ("read", "servers:read")


def test_the_policy_reports_what_it_was_built_with() -> None:
    assert POLICY.destructive == frozenset(DESTRUCTIVE)
    assert POLICY.known == {
        "events:read",
        "events:write",
        "servers:read",
        "servers:write",
        "servers:delete",
        "backups:restore",
        "results",
        "admin",
        "owner",
        "members:read",
    }


def test_is_destructive() -> None:
    assert POLICY.is_destructive("servers:delete")
    assert not POLICY.is_destructive("servers:write")


# What a closure keeps under a key type's ceiling (max_scopes): exactly the
# scopes both grant, as the scopes the app then sees, with no made-up pattern.
@pytest.mark.parametrize(
    ("held", "ceiling", "expected"),
    [
        pytest.param(["events:*"], ["servers:*"], set(), id="resource-wildcards-of-two-resources"),
        pytest.param(["*:read"], ["*:write"], set(), id="action-wildcards-of-two-actions"),
        pytest.param(["events:*"], ["*:read"], {"events:read"}, id="resource-meets-action"),
        pytest.param(["*:read"], ["events:*"], {"events:read"}, id="action-meets-resource"),
        pytest.param(["servers:*"], ["*:delete"], set(), id="meet-is-destructive"),
        pytest.param(["*"], ["events:read", "*:write"], {"events:read", "*:write"}, id="star"),
        pytest.param(
            ["events:read", "events:write", "results"], ["*:read"], {"events:read"}, id="concrete"
        ),
        pytest.param(
            ["events:*"], ["events:read", "*:read"], {"events:read"}, id="two-ways-to-one-scope"
        ),
    ],
)
def test_clamp_keeps_exactly_what_the_ceiling_also_grants(
    held: list[str], ceiling: list[str], expected: set[str]
) -> None:
    assert POLICY.clamp(POLICY.expand(held), ceiling) == expected


def test_clamp_returns_a_closure_within_the_ceiling_unchanged() -> None:
    closure = POLICY.expand(["events:write"])
    assert POLICY.clamp(closure, ["events:*"]) is closure


@pytest.mark.parametrize(
    ("scope", "wildcards", "expected"),
    [
        pytest.param("events:read", False, True, id="resource-action"),
        pytest.param("read", False, True, id="bare-word"),
        pytest.param("a.b-c_d:E9", False, True, id="allowed-punctuation"),
        pytest.param("*", True, True, id="star"),
        pytest.param("*", False, False, id="star-when-concrete-only"),
        pytest.param("events:*", True, True, id="resource-wildcard"),
        pytest.param("*:read", True, True, id="action-wildcard"),
        pytest.param("*:*", True, False, id="double-wildcard"),
        pytest.param("ev*nts:read", True, False, id="star-inside-word"),
        pytest.param("", True, False, id="empty"),
        pytest.param("a:b:c", True, False, id="two-colons"),
        pytest.param(":read", True, False, id="empty-resource"),
        pytest.param("events:", True, False, id="empty-action"),
        pytest.param("events:read\n", True, False, id="trailing-newline"),
        pytest.param("events read", True, False, id="space"),
        pytest.param("évents:read", True, False, id="non-ascii"),
    ],
)
def test_is_well_formed(scope: str, wildcards: bool, expected: bool) -> None:
    assert is_well_formed(scope, allow_wildcards=wildcards) is expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(7, id="int"),
        pytest.param(b"events:read", id="bytes"),
        pytest.param(["events:read"], id="list"),
        pytest.param({"events": "read"}, id="mapping"),
    ],
)
def test_a_non_string_is_not_well_formed_and_does_not_raise(value: object) -> None:
    # YAML and JSON bodies hand over whatever they hold; the answer is "no".
    assert is_well_formed(value) is False  # type: ignore[arg-type]
    assert is_well_formed(value, allow_wildcards=False) is False  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------

WORD_CHARS = string.ascii_letters + string.digits + "_.-"
words = st.text(WORD_CHARS, min_size=1, max_size=10)
scopes = st.one_of(words, st.builds(lambda r, a: f"{r}:{a}", words, words))
# Edits may add a colon or change case, but never a `*`: a wildcard is a
# grant by design, not a near miss.
EDIT_CHARS = WORD_CHARS + ": "


@st.composite
def one_edit(draw: st.DrawFn, scope: str) -> str:
    kind = draw(st.sampled_from(["insert", "delete", "replace"]))
    if kind == "delete" and len(scope) > 1:
        i = draw(st.integers(0, len(scope) - 1))
        return scope[:i] + scope[i + 1 :]
    if kind == "replace":
        i = draw(st.integers(0, len(scope) - 1))
        char = draw(st.sampled_from(EDIT_CHARS).filter(lambda c: c != scope[i]))
        return scope[:i] + char + scope[i + 1 :]
    i = draw(st.integers(0, len(scope)))
    return scope[:i] + draw(st.sampled_from(EDIT_CHARS)) + scope[i:]


@given(scopes, st.booleans())
def test_a_scope_is_granted_by_itself_and_by_star(scope: str, destructive: bool) -> None:
    policy = ScopePolicy(destructive=[scope] if destructive else [])
    assert is_well_formed(scope, allow_wildcards=False)
    assert policy.grants(policy.expand([scope]), scope)
    assert policy.grants(policy.expand(["*"]), scope)


@given(st.data(), scopes)
def test_a_single_edit_away_is_never_granted(data: st.DataObject, scope: str) -> None:
    edited = data.draw(one_edit(scope))
    policy = ScopePolicy()
    assert edited != scope
    assert not policy.grants(frozenset({edited}), scope)
    assert not policy.grants(frozenset({scope}), edited)


@given(words, words, st.sampled_from(["resource", "action"]))
def test_wildcards_never_grant_a_destructive_scope(resource: str, action: str, which: str) -> None:
    required = f"{resource}:{action}"
    pattern = f"{resource}:*" if which == "resource" else f"*:{action}"
    plain = ScopePolicy()
    guarded = ScopePolicy(destructive=[required])
    assert plain.grants(frozenset({pattern}), required)  # the pattern does match...
    assert not guarded.grants(frozenset({pattern}), required)  # ...but not when destructive


@pytest.mark.parametrize(
    ("implies", "cycle"),
    [
        pytest.param({}, None, id="empty"),
        pytest.param({"a": ["b"], "b": ["c"], "x": ["c"]}, None, id="diamond-is-not-a-cycle"),
        pytest.param({"a": ["a"]}, ("a", "a"), id="self-loop"),
        pytest.param({"a": ["b"], "b": ["c"], "c": ["a"]}, ("a", "b", "c", "a"), id="three"),
        pytest.param({"x": ["a"], "a": ["b"], "b": ["a"]}, ("a", "b", "a"), id="reached-later"),
    ],
)
def test_find_cycle(implies: dict[str, list[str]], cycle: tuple[str, ...] | None) -> None:
    assert find_cycle(implies) == cycle


def test_find_cycle_handles_a_long_chain() -> None:
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(5000)}
    assert find_cycle(chain) is None
    chain["s5000"] = ["s0"]
    found = find_cycle(chain)
    assert found is not None
    assert (found[0], found[-1], len(found)) == ("s0", "s0", 5002)
