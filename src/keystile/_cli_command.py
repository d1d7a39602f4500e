"""What every ``keystile`` command shares: exit statuses, errors, the engine, output.

:mod:`keystile.cli` builds the parser and runs the key lifecycle commands;
:mod:`keystile._cli_usage` the read-only ones (usage, listing, audit). Both
stand on this module, so neither has to import the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

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
    "warn",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
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
    ks = Keystile(config_path(args))
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
