"""Headless project commands: new, import, export, info (see README)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the project subcommands to the top-level parser (they arrive with the project issue)."""
    return None
