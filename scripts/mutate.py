"""Mutation testing: would the tests notice if this line were wrong?

Each mutant is one small change to one module (a flipped comparison, an
integer one higher, a dropped ``not``, ``and`` for ``or``, a statement made
``pass``, ``True`` for ``False``, ``return None``), run against the module's
tests in a fresh pytest process. A mutant the tests pass is a behaviour no
test pins, or an *equivalent* one, listed with its reason in
``scripts/mutation-equivalent.txt`` and left out of the score. CONTRIBUTING.md
has the habit, the commands and the floors; ``--help`` the options.

Not mutmut: its import-time trampolines break on fixtures built at import
(``test_scopes.py``'s ``POLICY``). The real files are never edited here: each
mutant goes into a temporary copy of the package, first on ``PYTHONPATH``.
An id (``keystile.scopes:ScopePolicy.grants:In>NotIn#1``) is the module, the
enclosing function, the operator and its occurrence there, so an edit
elsewhere in the file leaves it alone.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import compileall
import contextlib
import copy
import importlib.util
import itertools
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE, STDOUT

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "scripts" / "mutation-equivalent.txt"

# Each core module, the tests that guard it, and the score it must keep
# (raised to 100 after issue 14's fresh run of 2026-12-03 killed every
# non-equivalent mutant; a floor is raised when the score rises, never lowered).
TARGETS: dict[str, tuple[tuple[str, ...], float]] = {
    # test_hostile_scopes.py is where max_scopes' algebra (over_ceiling, clamp) is pinned.
    "src/keystile/scopes.py": (("tests/test_scopes.py", "tests/test_hostile_scopes.py"), 100),
    "src/keystile/routes.py": (("tests/test_routes.py",), 100),
    "src/keystile/sansio.py": (
        (
            "tests/test_sansio.py",
            "tests/test_sansio_credentials.py",
            "tests/test_sansio_targets.py",
            "tests/test_requests.py",
        ),
        100,
    ),
    "src/keystile/_memory_limiter.py": (
        ("tests/test_memory_limiter.py", "tests/test_memory_limiter_refunds.py"),
        100,
    ),
}

_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip
_OP_TEXT: dict[type[ast.AST], bytes] = {
    ast.Lt: b"<", ast.LtE: b"<=", ast.Gt: b">", ast.GtE: b">=", ast.Eq: b"==",
    ast.NotEq: b"!=", ast.Is: b"is", ast.IsNot: b"is not", ast.In: b"in",
    ast.NotIn: b"not in", ast.And: b"and", ast.Or: b"or",
}  # fmt: skip
_DELETABLE = (
    ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Raise,
    ast.Continue, ast.Break, ast.Delete, ast.Assert,
)  # fmt: skip
_MEMORY = 2 << 30  # bytes of data a mutant's pytest may hold (these runs need well under 200 MB)
_NO_AUTOLOAD = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"  # then hypothesis's option does not exist
# Fields never mutated: annotations are not evaluated (``from __future__
# import annotations``), decorators are configuration, not behaviour.
_SKIP_FIELDS = frozenset({"annotation", "returns", "decorator_list", "type_comment"})


@dataclass(frozen=True)
class Mutant:
    """One change: bytes ``start:end`` of the module's source become ``text``."""

    id: str
    line: int
    start: int
    end: int
    text: bytes

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.text + source[self.end :]

    def lines(self, source: bytes) -> tuple[str, str]:
        """The original line and the mutated one, for the report."""
        before = source.splitlines()[self.line - 1].decode().strip()
        after = self.apply(source).splitlines()[self.line - 1].decode().strip()
        return before, after

    def show(self, source: bytes) -> str:
        before, after = self.lines(source)
        return f"{self.id}  line {self.line}\n    - {before}\n    + {after}"


class _Finder:
    """Walks a module's AST in source order and yields its mutants."""

    def __init__(self, source: bytes, module: str) -> None:
        self.source = source
        self.module = module
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))
        self.seen: dict[tuple[str, str], int] = {}

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col  # col_offset counts UTF-8 bytes, as we do

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        return start, self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def mutant(self, qual: str, op: str, node: ast.AST, text: bytes) -> Mutant:
        n = self.seen.get((qual, op), 0)
        self.seen[(qual, op)] = n + 1
        start, end = self.span(node)
        # The line shown is the first one the change touches (`and` may sit lines below).
        old = self.source[start:end]
        same = next(
            (i for i, (a, b) in enumerate(zip(old, text, strict=False)) if a != b), len(old)
        )
        line = bisect.bisect_right(self.starts, start + min(same, len(text)))
        return Mutant(f"{self.module}:{qual}:{op}#{n}", line, start, end, text)

    def swap_ops(self, node: ast.AST, parts: Sequence[ast.AST], old: bytes, new: bytes) -> bytes:
        """``node``'s source with the operator between each pair of ``parts`` swapped.

        Only the operator text changes, so the mutated line reads like the
        original; a comment between the operands makes us fall back to
        ``ast.unparse`` of the whole node, in parentheses.
        """
        start, end = self.span(node)
        out, pos = [], start
        pattern = re.compile(
            rb"(?<![\w<>=!])" + re.escape(old).replace(b"\\ ", rb"\s+") + rb"(?![\w=])"
        )
        for left, right in itertools.pairwise(parts):
            gap_start, gap_end = self.span(left)[1], self.span(right)[0]
            gap = self.source[gap_start:gap_end]
            if b"#" in gap or len(pattern.findall(gap)) != 1:
                raise ValueError("operator not found in the gap")
            out += [self.source[pos:gap_start], pattern.sub(new, gap)]
            pos = gap_end
        return b"".join([*out, self.source[pos:end]])

    def visit(self, node: ast.AST, qual: str, in_function: bool) -> Iterator[Mutant]:
        if isinstance(node, ast.JoinedStr):
            return  # f-string pieces have no usable positions before 3.12
        yield from self.mutate(node, qual, in_function)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qual = node.name if qual == "<module>" else f"{qual}.{node.name}"
            in_function = not isinstance(node, ast.ClassDef)
        for field, value in ast.iter_fields(node):
            if field in _SKIP_FIELDS:
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    yield from self.visit(child, qual, in_function)

    def mutate(self, node: ast.AST, qual: str, in_function: bool) -> Iterator[Mutant]:
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                flipped = _FLIP[type(op)]
                try:
                    text = self.swap_ops(
                        node, parts[i : i + 2], _OP_TEXT[type(op)], _OP_TEXT[flipped]
                    )
                except ValueError:
                    other = copy.deepcopy(node)
                    other.ops[i] = flipped()
                    text = f"({ast.unparse(other)})".encode()
                name = f"{type(op).__name__}>{flipped.__name__}"
                yield self.mutant(qual, name, node, text)
        elif isinstance(node, ast.BoolOp):
            old, new = (ast.And, ast.Or) if isinstance(node.op, ast.And) else (ast.Or, ast.And)
            try:
                text = self.swap_ops(node, node.values, _OP_TEXT[old], _OP_TEXT[new])
            except ValueError:
                text = f"({ast.unparse(ast.BoolOp(new(), node.values))})".encode()
            yield self.mutant(qual, f"{old.__name__}>{new.__name__}", node, text)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            start, end = self.span(node)
            text = re.sub(rb"^not\b\s*", b"", self.source[start:end])
            yield self.mutant(qual, "drop-not", node, text)
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield self.mutant(
                qual, f"{node.value}>{not node.value}", node, b"%r" % (not node.value)
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, int):
            yield self.mutant(qual, "int+1", node, b"%d" % (node.value + 1))
        elif isinstance(node, ast.Return) and node.value is not None and in_function:
            # For `return True` or `return False` it would only repeat the bool flip.
            value = node.value.value if isinstance(node.value, ast.Constant) else 0
            if not (value is None or isinstance(value, bool)):
                yield self.mutant(qual, "return-None", node, b"return None")
        elif isinstance(node, _DELETABLE) and in_function:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if not docstring and not (isinstance(node, ast.AnnAssign) and node.value is None):
                yield self.mutant(qual, "delete", node, b"pass")


def find_mutants(source: bytes, module: str) -> list[Mutant]:
    """Every mutant of ``source`` (the text of module ``module``), in source order."""
    finder = _Finder(source, module)
    return list(finder.visit(ast.parse(source), "<module>", False))


def module_of(path: Path) -> tuple[Path, str]:
    """The top package directory (or lone module file) of ``path``, and its dotted name."""
    path = path.resolve()
    parts = [path.stem] if path.name != "__init__.py" else []
    top = path
    while (top.parent / "__init__.py").exists():
        top = top.parent
        parts.insert(0, top.name)
    return top, ".".join(parts)


def load_equivalents(path: Path) -> dict[str, str]:
    """The known-equivalent mutants: ``id  reason`` per line, ``#`` comments."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        mutant_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {mutant_id} needs a reason after its id")
        out[mutant_id] = reason.strip()
    return out


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    verdict: str  # killed, timeout (counted as killed), survived, error
    seconds: float


class Runner:
    """Runs a module's tests against copies of its package, one copy per mutant."""

    def __init__(self, target: Path, source: bytes, tests: Sequence[str], workdir: Path) -> None:
        self.top, self.module = module_of(target)
        self.target = target.resolve()
        self.source = source  # what the mutants were made from, whatever the file holds now
        self.tests = [str(Path(t).resolve()) for t in tests]
        self.workdir = workdir
        # One compiled copy, cloned per mutant, so that only the mutated module compiles.
        self.base = workdir / "base"
        self.base.mkdir()
        if self.top.is_dir():
            shutil.copytree(self.top, self.base / self.top.name, ignore=_ignored)
        else:
            shutil.copy2(self.top, self.base)
        (self.base / self.target.relative_to(self.top.parent)).write_bytes(source)
        compileall.compile_dir(self.base, quiet=1)

    def baseline(self, timeout: float) -> float:
        """Seconds the unmutated tests take; refuses to go on if they fail."""
        code, seconds, output = self._pytest(None, timeout)
        if code != 0:
            sys.stdout.write(output.decode(errors="replace"))
            why = "did not finish in time" if code is None else f"fail (exit {code})"
            raise SystemExit(f"the tests {why} without any mutant")
        return seconds

    def run(self, mutant: Mutant, timeout: float) -> Outcome:
        try:  # a mutant that does not parse would be "killed" for nothing
            ast.parse(mutant.apply(self.source))
        except SyntaxError:
            return Outcome(mutant, "error", 0.0)
        code, seconds, _ = self._pytest(mutant, timeout)
        # 1: a test failed; 2, 3 or a signal: the mutant broke collection or pytest itself.
        verdict = {None: "timeout", 0: "survived", 4: "error", 5: "error"}.get(code, "killed")
        return Outcome(mutant, verdict, seconds)

    def _pytest(self, mutant: Mutant | None, timeout: float) -> tuple[int | None, float, bytes]:
        here = Path(tempfile.mkdtemp(dir=self.workdir))
        try:
            src = here / "src"
            shutil.copytree(self.base, src)
            if mutant is not None:
                copy_of = src / self.target.relative_to(self.top.parent)
                copy_of.write_bytes(mutant.apply(self.source))
                Path(importlib.util.cache_from_source(str(copy_of))).unlink(missing_ok=True)
            env = {**os.environ, "PYTHONPATH": str(src)}
            env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(here / "hypothesis")  # no replays
            command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
            command += [f"--basetemp={here / 'tmp'}", *self.tests]
            if importlib.util.find_spec("hypothesis") and not env.get(_NO_AUTOLOAD):
                command.append("--hypothesis-seed=0")  # the same examples each run: a stable score
            began = time.monotonic()
            proc = subprocess.Popen(
                command, env=env, stdout=PIPE, stderr=STDOUT, start_new_session=True
            )
            if hasattr(resource, "prlimit"):  # Linux: a mutant looping on a list growing
                with contextlib.suppress(ProcessLookupError):  # stops at a MemoryError
                    resource.prlimit(proc.pid, resource.RLIMIT_DATA, (_MEMORY, _MEMORY))
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its session: pytest and what it started
                return None, time.monotonic() - began, proc.communicate()[0]
            return proc.returncode, time.monotonic() - began, output
        finally:
            shutil.rmtree(here, ignore_errors=True)


def _ignored(_: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))]


def run_module(
    target: Path,
    source: bytes,
    tests: Sequence[str],
    mutants: list[Mutant],
    jobs: int,
    timeout: float | None,
) -> list[Outcome]:
    """Run every mutant of ``target``, ``jobs`` at a time, printing one mark each."""
    with tempfile.TemporaryDirectory(prefix="keystile-mutate-") as tmp:
        runner = Runner(target, source, tests, Path(tmp))
        baseline = runner.baseline(timeout or 600)
        limit = timeout or max(30.0, 5 * baseline)
        print(f"  unmutated run {baseline:.1f}s; {len(mutants)} mutants, {limit:.0f}s each at most")
        marks = {"killed": ".", "timeout": "T", "survived": "S", "error": "E"}
        outcomes: list[Outcome] = []
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for outcome in pool.map(lambda m: runner.run(m, limit), mutants):
                outcomes.append(outcome)
                print(marks[outcome.verdict], end="", flush=True)
        print()
        return outcomes


def report(
    source: bytes, outcomes: list[Outcome], equivalent: int, floor: float | None, partial: bool
) -> bool:
    """Print the score and the survivors; tell whether the floor (if any) holds."""
    killed = sum(o.verdict in ("killed", "timeout") for o in outcomes)
    timeouts = sum(o.verdict == "timeout" for o in outcomes)
    score = 100.0 * killed / len(outcomes) if outcomes else 100.0
    ok = partial or floor is None or score >= floor
    if partial:
        status = "a partial run: floor not checked"
    elif floor is None:
        status = "no floor"
    else:
        status = f"floor {floor:g}: {'ok' if ok else 'UNDER THE FLOOR'}"
    print(f"  {killed}/{len(outcomes)} killed ({timeouts} by timeout), {equivalent} equivalent")
    print(f"  score {score:.1f}%  ({status})")
    for o in outcomes:
        if o.verdict in ("survived", "error"):
            print(f"  {o.verdict}: {o.mutant.show(source)}")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("targets", nargs="*", type=Path, help="modules to mutate (default: the core four)")
    add("--tests", nargs="+", help="test files to run (default: the module's, from TARGETS)")
    add("--floor", type=float, help="least score in percent (default: the module's floor)")
    add("-j", "--jobs", type=int, default=2, help="mutants run at once (default 2)")
    add("--timeout", type=float, help="seconds per mutant (default: 5x the unmutated run, >=30)")
    add("--sample", type=int, metavar="N", help="run only N mutants picked at random (--seed)")
    add("--seed", type=int, default=0, help="seed for --sample (default 0)")
    add("--only", action="append", metavar="TEXT", help="run only mutants whose id has TEXT")
    add("--list", action="store_true", help="list the mutants and their ids, run nothing")
    add("--equivalents", type=Path, default=EQUIVALENTS, help="the known-equivalent mutants")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every module is at or above its floor, 1 under it, 2 on an error."""
    args = parse_args(argv)
    targets = args.targets or [ROOT / t for t in TARGETS]
    equivalents = load_equivalents(args.equivalents)
    partial = bool(args.only or args.sample is not None)
    status = 0
    for target in targets:
        resolved = target.resolve()
        key = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else ""
        tests, floor = TARGETS.get(key, ((), None))
        tests = tuple(args.tests or tests)
        if not tests and not args.list:
            raise SystemExit(f"{target}: no tests known for this module; pass --tests")
        source = target.read_bytes()
        module = module_of(target)[1]
        mutants = find_mutants(source, module)
        ids = {m.id for m in mutants}
        for stale in sorted(i for i in equivalents if i.startswith(f"{module}:") and i not in ids):
            print(f"warning: {args.equivalents.name} lists {stale}, no longer generated")
        counted = [m for m in mutants if m.id not in equivalents]
        left_out = len(mutants) - len(counted)
        if args.only:
            counted = [m for m in counted if any(text in m.id for text in args.only)]
        if args.sample is not None and args.sample < len(counted):
            chosen = set(random.Random(args.seed).sample(range(len(counted)), args.sample))
            counted = [m for i, m in enumerate(counted) if i in chosen]
        print(f"{module} ({target}; tests: {' '.join(tests)})", flush=True)
        if args.list:
            print("".join(f"  {m.show(source)}\n" for m in counted), end="")
            continue
        began = time.monotonic()
        outcomes = run_module(target, source, tests, counted, args.jobs, args.timeout)
        floor = args.floor if args.floor is not None else floor
        if not report(source, outcomes, left_out, floor, partial):
            status = max(status, 1)
        if any(o.verdict == "error" for o in outcomes):
            print("  some mutants could not be judged (pytest usage error or no tests ran)")
            status = 2
        print(f"  {time.monotonic() - began:.0f}s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
