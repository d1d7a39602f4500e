"""What every ``keystile`` command shares: exit statuses, errors, the engine, output.

:mod:`keystile.cli` builds the parser and runs the key lifecycle commands;
:mod:`keystile._cli_usage` the read-only ones (usage, listing, audit). Both
stand on this module, so neither has to import the other.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from keystile._redact import redact_url
from keystile.engine import Keystile, config_path_from_env
from keystile.stores import is_memory_url

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CommandError",
    "config_path",
    "engine",
    "print_json",
    "verbose",
    "warn",
]

logger = logging.getLogger("keystile.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNCHANGED = 4  # nothing to do: the key was already revoked
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure the command reports as one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def config_path(args: argparse.Namespace) -> Path:
    path = config_path_from_env(getattr(args, "config", None))
    if not path.is_file():
        raise CommandError(f"no config file at {path} (pass --config PATH or set KEYSTILE_CONFIG)")
    return path


@contextmanager
def engine(args: argparse.Namespace) -> Iterator[Keystile]:
    """The engine for one command, closed at the end (which flushes last_used_at)."""
    path = config_path(args)
    ks = Keystile(path)
    # URLs with their passwords masked; the pepper and key secrets are never logged.
    logger.debug(
        "config %s: store %s, limiter %s",
        path,
        redact_url(ks.config.store),
        redact_url(ks.config.limiter.storage),
    )
    try:
        if is_memory_url(ks.config.store):
            warn(
                f"store {ks.config.store} keeps keys in this process only; "
                "they are gone when this command exits"
            )
        yield ks
    finally:
        ks.close()


def print_json(out: TextIO, data: Any) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"keystile: warning: {message}\n")


@contextmanager
def verbose(enabled: bool) -> Iterator[None]:
    """``--verbose``: keystile's loggers at DEBUG, one line each, on stderr, for one command.

    Only the ``keystile`` loggers (not the root, not SQLAlchemy's, whose
    statement logging would print bound parameters such as digests).
    keystile logs no secret at any level: keys appear by id and prefix.
    Undone afterwards, so that ``main`` run in a host process leaves its
    logging as it was.
    """
    if not enabled:
        yield
        return
    root = logging.getLogger("keystile")
    level = root.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("keystile: %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
