"""``keystile keys patterns``: the regular expressions to register with a secret scanner.

One per key type, read from the config alone (no store, no pepper): the
prefix, alphabet and length that GitHub's secret-scanning partner program
(or gitleaks, trufflehog...) needs, and the boundaries to match it between.
The checksum cannot be written as a regex; the leak endpoint
(``keystile.leaks``) checks it before any lookup.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

from keystile._cli_command import EXIT_OK, config_path, print_json
from keystile.config import Config, load_config
from keystile.keys import CHECKSUM_LENGTH, SCANNER_AFTER, SCANNER_BEFORE, KeyFormat

__all__ = ["add_commands", "patterns"]


def patterns(config: Config) -> list[dict[str, Any]]:
    """One entry per key type, in config order, with everything a scanner's form asks."""
    out = []
    for name, kt in config.key_types.items():
        fmt = KeyFormat(kt.prefix, kt.alphabet, kt.length, kt.checksum)
        out.append(
            {
                "type": name,
                "prefix": kt.prefix,
                "alphabet": kt.alphabet,
                "random_length": kt.length,
                "checksum": "crc32-base62" if kt.checksum else None,
                "length": fmt.secret_length,
                "regex": fmt.scanner_regex,
                "before": SCANNER_BEFORE,
                "after": SCANNER_AFTER,
                # Browser keys are published by design: registering them gets
                # them revoked whenever a site's code is pushed to GitHub.
                "origin_bound": kt.origin_bound,
            }
        )
    return out


def _text(entries: list[dict[str, Any]]) -> str:
    width = max(len(e["type"]) for e in entries)
    lines = []
    for e in entries:
        lines.append(f"{e['type']:<{width}}  {e['regex']}")
        checksum = f" + {CHECKSUM_LENGTH} checksum (CRC32, base62)" if e["checksum"] else ""
        lines.append(
            f"{'':<{width}}  prefix {e['prefix']!r}, {e['random_length']} {e['alphabet']}"
            f"{checksum}: {e['length']} characters"
        )
        if e["origin_bound"]:
            lines.append(
                f"{'':<{width}}  origin-bound (public by design): register it only if a "
                "key found on GitHub should be revoked"
            )
    lines.append("")
    lines.append(f"match between  before: {SCANNER_BEFORE}   after: {SCANNER_AFTER}")
    return "\n".join(lines) + "\n"


def add_commands(key_commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``patterns`` on the ``keystile keys`` subparsers."""
    parser = key_commands.add_parser(
        "patterns", parents=parents, help="each key type's regex for secret scanners"
    )
    parser.set_defaults(func=_patterns)


def _patterns(args: argparse.Namespace, out: TextIO) -> int:
    entries = patterns(load_config(config_path(args)))  # the config alone: no store, no pepper
    if args.json:
        print_json(out, entries)
    else:
        out.write(_text(entries))
    return EXIT_OK
