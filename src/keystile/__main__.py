"""``python -m keystile``: the same command as ``keystile`` (see :mod:`keystile.cli`)."""

from keystile.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
