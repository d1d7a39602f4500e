"""``mypyc_attr``, for the classes of the compiled build (docs/performance.md).

Compiled by mypyc, a class refuses subclasses written in Python unless it
is marked ``@mypyc_attr(allow_interpreted_subclasses=True)``; apps subclass
the doors. The decorator speaks to mypyc when it compiles, and does nothing
at run time, so without ``mypy_extensions`` (a build-time need only) it is
a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["mypyc_attr"]

_Class = TypeVar("_Class", bound=type)

try:
    from mypy_extensions import mypyc_attr
except ImportError:

    def mypyc_attr(*attrs: str, **kwattrs: bool) -> Callable[[_Class], _Class]:  # type: ignore[misc]
        return lambda cls: cls
