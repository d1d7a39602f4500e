"""SPEC section 10 from the command line: ``limits override|clear|list`` and ``--allow-ip``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli_usage import Shell, _shell


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shell]:
    sh = _shell(tmp_path, f"sqlite:///{tmp_path / 'keys.db'}", capsys, monkeypatch)
    yield sh
    sh.close()


def test_limits_override_clear_and_list(shell: Shell) -> None:
    empty = shell("limits", "list")
    assert empty.status == 0 and "No overrides" in empty.out
    made = shell("limits", "override", "--org", "acme", "100000/day")
    assert made.status == 0 and "Org acme now has the limit 100000/day" in made.out
    assert shell("limits", "override", "--org", "beta", "5/second", "--json").json == {
        "org": "beta",
        "limit": "5/second",
    }
    listed = shell("limits", "list")
    assert listed.rows()[:2] == [["acme", "100000/day"], ["beta", "5/second"]]
    assert shell("limits", "list", "--json").json["overrides"] == {
        "acme": "100000/day",
        "beta": "5/second",
    }
    assert shell("limits", "clear", "--org", "beta").status == 0
    again = shell("limits", "clear", "--org", "beta")
    assert again.status == 1 and "has no override" in again.err
    assert shell("limits", "list", "--json").json["overrides"] == {"acme": "100000/day"}
    trail = shell("audit", "--org", "acme", "--json").json
    assert any(e["event"] == "org.limit_override" for e in trail)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(("override", "--org", "acme", "lots"), "lots", id="bad-limit"),
        pytest.param(("override", "--org", "", "10/minute"), "--org", id="empty-org"),
        pytest.param(("override", "10/minute"), "--org", id="no-org"),
        pytest.param(("clear",), "--org", id="clear-without-org"),
    ],
)
def test_limits_bad_input_is_exit_2_naming_it(
    shell: Shell, args: tuple[str, ...], named: str
) -> None:
    done = shell("limits", *args)
    assert done.status == 2, done.err
    assert named in done.err
    assert shell("limits", "list", "--json").json["overrides"] == {}


def test_allow_ip_on_create_and_update(shell: Shell) -> None:
    made = shell(
        "keys", "create", "--name", "srv", "--scope", "events:read", "--org", "acme",
        "--allow-ip", "203.0.113.0/24",
        "--allow-ip", "2001:db8::/32", "--json",
    )  # fmt: skip
    assert made.status == 0, made.err
    key_id = made.json["id"]
    engine = shell.engine()
    assert engine.keys.get(key_id).allowed_ips == ("203.0.113.0/24", "2001:db8::/32")
    changed = shell("keys", "update", key_id, "--allow-ip", "198.51.100.7")
    assert changed.status == 0 and "allowed IPs: 198.51.100.7/32" in changed.out
    bad = shell("keys", "update", key_id, "--allow-ip", "10.0.0.7/8")
    assert bad.status == 2 and "--allow-ip" in bad.err and "10.0.0.7/8" in bad.err
    both = shell("keys", "update", key_id, "--allow-ip", "10.0.0.0/8", "--clear-allow-ip")
    assert both.status == 2
    assert engine.keys.get(key_id).allowed_ips == ("198.51.100.7/32",)
    cleared = shell("keys", "update", key_id, "--clear-allow-ip")
    assert cleared.status == 0 and "allowed IPs: any" in cleared.out
    assert engine.keys.get(key_id).allowed_ips == ()
