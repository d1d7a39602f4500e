"""A progress bar for long commands (``keys import``), when one can be shown.

The bar comes from ``rich`` (the ``keystile[cli]`` extra) and is drawn on
stderr only when stderr is a terminal and the job is long enough to watch;
otherwise the rows go by silently and the command's summary says what
happened. Without ``rich`` nothing changes but the bar: it is a nicety, never
a dependency of the command.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = ["MIN_ROWS", "progress", "summary"]

T = TypeVar("T")
MIN_ROWS = 200  # below this an import takes a moment: a bar would only flicker


def progress(items: Sequence[T], label: str) -> Iterable[T]:
    """``items``, with a bar on stderr while they are consumed, if it can be shown."""
    if len(items) < MIN_ROWS or not sys.stderr.isatty():
        return items
    try:
        from rich.console import Console
        from rich.progress import track
    except ImportError:
        return items
    # stderr: stdout stays the command's output (``--json`` piped to jq).
    console = Console(stderr=True)
    return track(items, description=label, total=len(items), transient=True, console=console)


def summary(rows: int, done: int, skipped: Sequence[str], *, dry_run: bool = False) -> str:
    """The last line of ``keys import``: every row accounted for, skips by reason."""
    counts: dict[str, int] = {}
    for reason in skipped:
        counts[reason] = counts.get(reason, 0) + 1
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return (
        f"{rows} {'row' if rows == 1 else 'rows'}: {done} imported, {len(skipped)} skipped"
        + (f" ({why})" if why else "")
        + "\n"
    )
