"""The key lifecycle on every store backend: memory, SQLite, PostgreSQL, MariaDB."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keystile import KeyConflict, KeyInputError, KeyNotFound
from keystile.sansio import RequestView


def _ask(ks: Any, secret: str | None, path: str = "/x") -> Any:
    headers = {"authorization": [f"Bearer {secret}"]} if secret else {}
    return ks.decide(RequestView("GET", path.encode(), headers=headers, client="127.0.0.1"))


def test_created_key_is_found_by_its_secret_and_stores_no_secret(ks: Any) -> None:
    new = ks.keys.create(name="CI upload", scopes=["results"], org="acme", plan="pro")
    assert new.secret.startswith("sk_")
    assert ks.formats["secret"].matches(new.secret)
    stored = ks.keys.get(new.id)
    assert stored.digest == ks.digest(new.secret)
    assert stored.prefix == new.secret[:14] and stored.last4 == new.secret[-4:]
    assert stored.scopes == ("results",) and stored.org == "acme" and stored.plan == "pro"
    assert stored.kind == "bot" and stored.owner is None
    assert new.secret not in repr(new) and new.secret not in repr(stored)
    assert ks.store.execute("find_by_digest", ks.digest(new.secret)).id == new.id


def test_list_shows_active_keys_of_one_org_only(ks: Any) -> None:
    a = ks.keys.create(name="a", org="acme")
    b = ks.keys.create(name="b", org="acme")
    ks.keys.create(name="other", org="globex")
    ks.keys.revoke(b.id)
    assert [k.id for k in ks.keys.list(org="acme")] == [a.id]
    assert {k.org for k in ks.keys.list()} == {"acme", "globex"}


def test_expired_key_is_not_listed(store_url: str) -> None:
    from tests.conftest import make_engine

    clock = _Clock()
    ks = make_engine(store_url)
    ks.now = clock
    try:
        new = ks.keys.create(name="short", org="acme", expires_in_days=1)
        assert [k.id for k in ks.keys.list(org="acme")] == [new.id]
        clock.advance(days=2)
        assert ks.keys.list(org="acme") == []
    finally:
        ks.close()


def test_one_user_key_per_user_and_org(ks: Any) -> None:
    first = ks.keys.create(name="mine", org="acme", user="u_42")
    assert first.kind == "user" and first.owner == "u_42"
    with pytest.raises(KeyConflict, match="already has an active key"):
        ks.keys.create(name="again", org="acme", user="u_42")
    # Another org, or a bot key in the same org, is fine.
    ks.keys.create(name="elsewhere", org="globex", user="u_42")
    ks.keys.create(name="bot", org="acme")
    # Once revoked, the user may have a new one.
    ks.keys.revoke(first.id)
    ks.keys.create(name="new", org="acme", user="u_42")


def test_revoke_is_immediate_and_permanent(ks: Any) -> None:
    new = ks.keys.create(name="k", org="acme")
    assert _ask(ks, new.secret).principal.id == new.id  # cached now
    ks.keys.revoke(new.id)
    refusal = _ask(ks, new.secret)
    assert refusal.status == 401 and refusal.message == "API key has been revoked"
    assert ks.keys.get(new.id).revoked_at is not None
    with pytest.raises(KeyNotFound):
        ks.keys.update(new.id, name="revived")


def test_unknown_key_id_is_not_found(ks: Any) -> None:
    for call in (ks.keys.get, ks.keys.revoke, ks.keys.rotate):
        with pytest.raises(KeyNotFound):
            call("key_doesnotexist")


def test_rotation_with_grace_keeps_the_old_key_until_the_grace_ends(ks: Any) -> None:
    old = ks.keys.create(name="k", org="acme", user="u_1", scopes=["results"])
    new = ks.keys.rotate(old.id, grace="24h")
    assert new.secret != old.secret and new.rotated_from == old.id
    assert new.scopes == ("results",) and new.owner == "u_1"
    assert _ask(ks, new.secret).principal.id == new.id
    assert _ask(ks, old.secret).principal.id == old.id
    old_after = ks.keys.get(old.id)
    assert old_after.expires_at is not None
    assert timedelta(hours=23) < old_after.expires_at - ks.now() <= timedelta(hours=24)
    # The old key is in its grace period: it does not hold the user's slot,
    # and the new one does.
    with pytest.raises(KeyConflict):
        ks.keys.create(name="third", org="acme", user="u_1")


def test_rotation_without_grace_ends_the_old_key_now(ks: Any) -> None:
    old = ks.keys.create(name="k", org="acme")
    new = ks.keys.rotate(old.id)
    assert _ask(ks, old.secret).status == 401
    assert _ask(ks, new.secret).principal.id == new.id


def test_a_key_in_its_grace_is_rotated_once_then_its_successor_is(store_url: str) -> None:
    from tests.conftest import make_engine

    clock = _Clock()
    ks = make_engine(store_url)
    ks.now = clock
    try:
        old = ks.keys.create(name="k", org="acme", user="u_1")
        first = ks.keys.rotate(old.id, grace="24h")
        before = ks.keys.list_all("acme")
        with pytest.raises(KeyConflict) as refused:
            ks.keys.rotate(old.id, grace="1h")
        assert str(refused.value) == (
            f"key {old.id} was already rotated: its successor is {first.id}; "
            f"rotate {first.id} instead"
        )
        assert old.secret not in str(refused.value) and first.secret not in str(refused.value)
        # Nothing changed: no third key, the old key's grace and the successor as they were.
        assert ks.keys.list_all("acme") == before
        assert _ask(ks, old.secret).principal.id == old.id
        assert _ask(ks, first.secret).principal.id == first.id
        # The successor is the one to rotate, and it can be.
        second = ks.keys.rotate(first.id, grace="1h")
        assert second.rotated_from == first.id and second.expires_at is None
        with pytest.raises(KeyConflict, match=f"its successor is {second.id};"):
            ks.keys.rotate(first.id)
        # Once the grace is over the old key has expired: rotating it is "not found".
        clock.advance(hours=24, seconds=1)
        with pytest.raises(KeyNotFound):
            ks.keys.rotate(old.id)
        assert {k.id for k in ks.keys.list(org="acme")} == {second.id}
    finally:
        ks.close()


def test_an_expired_or_revoked_successor_does_not_block_a_rotation(ks: Any) -> None:
    old = ks.keys.create(name="k", org="acme")
    first = ks.keys.rotate(old.id, grace="24h")
    ks.keys.revoke(first.id)
    second = ks.keys.rotate(old.id, grace="1h")
    assert second.rotated_from == old.id
    with pytest.raises(KeyConflict, match=f"its successor is {second.id};"):
        ks.keys.rotate(old.id)


def test_a_rotation_the_user_slot_refuses_changes_nothing(ks: Any) -> None:
    # A user key in its grace, its successor revoked, and a new key of that
    # user since: the successor would take a slot that is taken. The store
    # refuses, and the old key keeps the expiry it had (as a rolled-back
    # transaction leaves it), on every store.
    old = ks.keys.create(name="k", org="acme", user="u_7")
    first = ks.keys.rotate(old.id, grace="24h")
    ks.keys.revoke(first.id)
    ks.keys.create(name="newer", org="acme", user="u_7")
    before = ks.keys.get(old.id)
    with pytest.raises(KeyConflict, match="already has an active key"):
        ks.keys.rotate(old.id, grace="1h")
    after = ks.keys.get(old.id)
    assert (after.expires_at, after.revoked_at) == (before.expires_at, before.revoked_at)
    assert _ask(ks, old.secret).principal is not None


@pytest.mark.anyio
async def test_async_rotate_refuses_a_key_in_its_grace(ks: Any) -> None:
    old = await ks.keys.acreate(name="k", org="acme")
    first = await ks.keys.arotate(old.id, grace="1h")
    with pytest.raises(KeyConflict, match=f"its successor is {first.id}; rotate {first.id}"):
        await ks.keys.arotate(old.id, grace="1h")
    assert len(await ks.keys.alist(org="acme")) == 2
    await ks.aclose()


def test_revoke_user_ends_that_members_keys_in_one_org_only(ks: Any) -> None:
    mine = ks.keys.create(name="mine", org="acme", user="u_42")
    other_org = ks.keys.create(name="elsewhere", org="globex", user="u_42")
    bot = ks.keys.create(name="bot", org="acme", created_by="u_42")
    assert ks.keys.revoke_user(org="acme", user="u_42") == [mine.id]
    assert _ask(ks, mine.secret).status == 401
    assert _ask(ks, other_org.secret).principal is not None
    assert _ask(ks, bot.secret).principal is not None


def test_update_changes_scopes_and_takes_effect_at_once(ks: Any) -> None:
    new = ks.keys.create(name="k", org="acme", scopes=["results"])
    assert _ask(ks, new.secret).principal.scopes == ("results",)
    updated = ks.keys.update(new.id, scopes=["results", "events:read"], name="CI")
    assert updated.name == "CI" and updated.scopes == ("results", "events:read")
    assert _ask(ks, new.secret).principal.scopes == ("results", "events:read")


def test_last_used_is_written_behind_in_one_batch(ks: Any) -> None:
    a = ks.keys.create(name="a", org="acme")
    b = ks.keys.create(name="b", org="acme")
    for _ in range(5):
        _ask(ks, a.secret)
        _ask(ks, b.secret)
    assert ks.keys.get(a.id).last_used_at is None  # nothing written per request
    ks.flush()
    assert ks.keys.get(a.id).last_used_at is not None
    assert ks.keys.get(b.id).last_used_at is not None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "x" * 101}, "name", id="long-name"),
        pytest.param({"name": "a\nb"}, "name", id="control-char-name"),
        pytest.param({"name": "k", "expires_in_days": 0}, "expires_in_days", id="zero-days"),
        pytest.param({"name": "k", "expires_in_days": 366}, "expires_in_days", id="366-days"),
        pytest.param({"name": "k", "expires_in_days": True}, "expires_in_days", id="bool-days"),
        pytest.param({"name": "k", "scopes": "results"}, "scopes", id="scopes-string"),
        pytest.param({"name": "k", "scopes": ["bad scope"]}, "scopes", id="malformed-scope"),
        pytest.param({"name": "k", "rate_limit": "lots"}, "rate_limit", id="bad-rate-limit"),
        pytest.param({"name": "k", "plan": "gold"}, "plan", id="unknown-plan"),
        pytest.param({"name": "k", "type": "magic"}, "type", id="unknown-type"),
        pytest.param({"name": "k", "preset": "nope"}, "preset", id="unknown-preset"),
        pytest.param({"name": "k", "org": ""}, "org", id="empty-org"),
        pytest.param({"name": "k", "metadata": {"a": object()}}, "metadata", id="metadata-json"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(
    ks: Any, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(KeyInputError) as info:
        ks.keys.create(**options)
    assert info.value.field == field
    assert ks.keys.list() == []


def test_preset_grants_known_non_destructive_scopes(store_url: str) -> None:
    from tests.conftest import make_engine

    ks = make_engine(
        store_url,
        scopes={
            "known": ["events:read", "events:write", "servers:delete"],
            "destructive": ["servers:delete"],
        },
    )
    try:
        full = ks.keys.create(name="full", preset="full", org="acme")
        assert "servers:delete" not in full.scopes
        assert {"events:read", "events:write"} <= set(full.scopes)
        ro = ks.keys.create(name="ro", preset="read-only", org="acme")
        assert set(ro.scopes) == {"events:read"}
    finally:
        ks.close()


@pytest.mark.anyio
async def test_async_twins_share_the_same_store(ks: Any) -> None:
    new = await ks.keys.acreate(name="async", org="acme", scopes=["results"])
    assert (await ks.keys.aget(new.id)).name == "async"
    assert [k.id for k in await ks.keys.alist(org="acme")] == [new.id]
    decision = await ks.adecide(
        RequestView("GET", b"/x", headers={"authorization": [f"Bearer {new.secret}"]})
    )
    assert decision.principal.id == new.id
    rotated = await ks.keys.arotate(new.id)
    await ks.keys.arevoke(rotated.id)
    assert await ks.keys.alist(org="acme") == []
    with pytest.raises(KeyConflict):
        await ks.keys.acreate(name="u", org="acme", user="u1")
        await ks.keys.acreate(name="u", org="acme", user="u1")
    # A sync engine call and an async one see the same rows.
    assert ks.keys.get(new.id).revoked_at is not None
    await ks.aclose()


class _Clock:
    def __init__(self) -> None:
        from keystile.stores.base import utcnow

        self.now = utcnow()

    def __call__(self) -> Any:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
