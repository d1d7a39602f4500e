"""Issue 6, goal 6: what a request with a known key never does.

No store statement (the verified-key cache answers; ``last_used_at`` is
written behind), and no read of the config file (it is compiled at start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import PEPPER, make_engine
from tests.doors import DOORS, Door
from tests.test_reliability import door_store_engine


@pytest.mark.parametrize("kind", DOORS)
def test_a_known_key_costs_no_store_statement_at_all(kind: str, tmp_path: Path) -> None:
    ks = make_engine(f"sqlite:///{tmp_path / 'keys.db'}", cache={"ttl": "60s"})
    secret = ks.keys.create(name="k", org="acme").secret
    try:
        with Door(kind, ks) as door:
            assert door("GET", "/api/v1/events", key=secret).status == 200  # the one lookup
            # The key's creation is audited by a background thread; let that
            # write land before listening, or it would count as a request's.
            ks.audit.flush()
            statements: list[str] = []
            event.listen(
                door_store_engine(door),
                "before_cursor_execute",
                lambda *args: statements.append(args[2]),
            )
            replies = [door("GET", "/api/v1/events", key=secret) for _ in range(200)]
            assert [r.status for r in replies] == [200] * 200
            assert statements == []  # no read, and no last_used_at write per request
    finally:
        ks.close()


@pytest.mark.parametrize("kind", DOORS)
def test_the_config_file_is_read_at_start_only(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "keystile.yaml"
    config.write_text('store: "memory://"\ndefault: authenticated\n')
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    door = Door(kind, str(config))
    door.engine = ks = door.app.ks
    secret = ks.keys.create(name="k", org="acme").secret
    config.unlink()  # every later request must do without it
    try:
        replies: list[Any] = [door("GET", "/api/v1/events", key=secret) for _ in range(3)]
        assert [r.status for r in replies] == [200] * 3
        assert door("GET", "/api/v1/events").status == 401
    finally:
        door.close()
        ks.close()
