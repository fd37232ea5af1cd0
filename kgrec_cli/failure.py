"""The CLI's one way to fail: one line, ``kgrec: error: <reason>``, and exit status 1."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(reason: object) -> NoReturn:
    """Print ``kgrec: error: <reason>`` on standard error and exit with status 1."""
    click.echo(f"kgrec: error: {reason}", err=True)
    sys.exit(1)
