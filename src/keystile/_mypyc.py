"""The compiled build's two needs at run time (docs/performance.md).

``compiled`` tells whether a module was imported compiled; ``mypyc_attr``
marks the classes of the compiled modules.

Compiled by mypyc, a class refuses subclasses written in Python unless it
is marked ``@mypyc_attr(allow_interpreted_subclasses=True)``; apps subclass
the doors. The decorator speaks to mypyc when it compiles, and does nothing
at run time, so without ``mypy_extensions`` (a build-time need only) it is
a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

__all__ = ["compiled", "mypyc_attr"]

_Class = TypeVar("_Class", bound=type)


def compiled(module: ModuleType) -> bool:
    """Whether ``module`` was imported from an extension mypyc built, not from its ``.py``."""
    return module.__file__ is not None and not module.__file__.endswith(".py")


try:
    from mypy_extensions import mypyc_attr
except ImportError:

    def mypyc_attr(*attrs: str, **kwattrs: bool) -> Callable[[_Class], _Class]:  # type: ignore[misc]
        return lambda cls: cls
