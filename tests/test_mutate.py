"""scripts/mutate.py, the mutation run of CONTRIBUTING.md: its mutants, ids and verdicts."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "scripts" / "mutate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


mutate = _mutate()

SAMPLE = textwrap.dedent(
    '''\
    """A docstring is never mutated."""

    LIMIT: int = 3


    def check(n: int, names: list[str], strict: bool = True) -> bool:
        """Nor is this one."""
        total = n + 1
        if not strict or n >= LIMIT:
            return False
        return f"{n + 1}" in names and n is not None


    class Box:
        def size(self) -> int:
            return 0
    '''
)

# What the sample must give, as (id, the mutated line): one mutant per site and operator.
EXPECTED = [
    ("sample:<module>:int+1#0", "LIMIT: int = 4"),
    (
        "sample:check:True>False#0",
        "def check(n: int, names: list[str], strict: bool = False) -> bool:",
    ),
    ("sample:check:delete#0", "pass"),
    ("sample:check:int+1#0", "total = n + 2"),
    ("sample:check:Or>And#0", "if not strict and n >= LIMIT:"),
    ("sample:check:drop-not#0", "if strict or n >= LIMIT:"),
    ("sample:check:GtE>Gt#0", "if not strict or n > LIMIT:"),
    ("sample:check:False>True#0", "return True"),
    ("sample:check:return-None#0", "return None"),  # not for `return False`: the flip does it
    ("sample:check:And>Or#0", 'return f"{n + 1}" in names or n is not None'),
    ("sample:check:In>NotIn#0", 'return f"{n + 1}" not in names and n is not None'),
    ("sample:check:IsNot>Is#0", 'return f"{n + 1}" in names and n is None'),
    ("sample:Box.size:return-None#0", "return None"),
    ("sample:Box.size:int+1#0", "return 1"),
]


def test_each_operator_gives_one_mutant_per_site_and_nothing_in_docstrings_or_fstrings() -> None:
    source = SAMPLE.encode()
    mutants = mutate.find_mutants(source, "sample")
    assert [(m.id, m.lines(source)[1]) for m in mutants] == EXPECTED
    for mutant in mutants:
        ast.parse(mutant.apply(source))


def test_the_mutated_line_is_where_the_change_is_and_the_rest_is_untouched() -> None:
    source = SAMPLE.encode()
    flip = next(m for m in mutate.find_mutants(source, "sample") if m.id.endswith("GtE>Gt#0"))
    assert flip.line == 9
    mutated = flip.apply(source).decode()
    assert mutated == SAMPLE.replace("n >= LIMIT", "n > LIMIT")


def test_ids_survive_an_unrelated_edit_above_them() -> None:
    before = mutate.find_mutants(SAMPLE.encode(), "sample")
    helper = "\n\ndef helper(x: int) -> bool:\n    return x > 2\n"
    edited = SAMPLE.replace("LIMIT: int = 3\n", "LIMIT: int = 3\n" + helper)
    after = {m.id: m for m in mutate.find_mutants(edited.encode(), "sample")}
    for mutant in before:
        assert after[mutant.id].line == mutant.line + (4 if mutant.line > 3 else 0)
    assert set(after) - {m.id for m in before} == {
        "sample:helper:return-None#0",
        "sample:helper:Gt>GtE#0",
        "sample:helper:int+1#0",
    }


def test_an_equivalent_needs_a_reason(tmp_path: Path) -> None:
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# comment\n\nmod:f:Gt>GtE#0   same result at the boundary\nmod:f:int+1#0\n")
    with pytest.raises(SystemExit, match=r"equivalent.txt:4: mod:f:int\+1#0 needs a reason"):
        mutate.load_equivalents(listed)
    listed.write_text("mod:f:Gt>GtE#0   same result at the boundary\n")
    assert mutate.load_equivalents(listed) == {"mod:f:Gt>GtE#0": "same result at the boundary"}


TINY = """\
def clamp(x, top):
    if x > top:
        return top
    return x


def double(x):
    return x * 2
"""

TINY_TEST = """\
from tiny import clamp, double


def test_it():
    assert clamp(5, 3) == 3
    assert clamp(1, 3) == 1
    assert double(0) == 0
"""


def test_a_run_kills_survives_and_leaves_out_equivalents_without_touching_the_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plugins (hypothesis's above all) would take most of each tiny run's time.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    module = tmp_path / "src" / "tiny.py"
    module.parent.mkdir()
    module.write_text(TINY)
    test = tmp_path / "tests" / "test_tiny.py"
    test.parent.mkdir()
    test.write_text(TINY_TEST)
    listed = tmp_path / "equivalent.txt"
    listed.write_text("tiny:clamp:Gt>GtE#0  at x == top both branches return the same value\n")
    argv = [str(module), "--tests", str(test), "--equivalents", str(listed), "--timeout", "30"]

    assert mutate.main([*argv, "--floor", "80"]) == 1
    out = capsys.readouterr().out
    # clamp's two returns and double's return are killed; x * 2 -> x * 3 is not (0 * 3 == 0).
    assert "3/4 killed (0 by timeout), 1 equivalent" in out
    assert "score 75.0%  (floor 80: UNDER THE FLOOR)" in out
    assert "survived: tiny:double:int+1#0  line 8\n    - return x * 2\n    + return x * 3" in out
    assert out.count("survived:") == 1
    assert module.read_text() == TINY


def test_contributing_shows_the_floors_and_tests_the_run_uses() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(src/[^`]+)` \| (.+) \| (\d+) \|$", text, re.MULTILINE)
    shown = {
        path: (tuple(re.findall(r"`([^`]+)`", tests)), float(floor)) for path, tests, floor in rows
    }
    assert shown == mutate.TARGETS


def test_every_recorded_equivalent_is_a_mutant_of_its_module() -> None:
    listed = mutate.load_equivalents(mutate.EQUIVALENTS)
    generated: set[str] = set()
    for path in mutate.TARGETS:
        target = ROOT / path
        generated |= {
            m.id for m in mutate.find_mutants(target.read_bytes(), mutate.module_of(target)[1])
        }
    assert set(listed) <= generated
