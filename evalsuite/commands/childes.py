"""CLI commands: childes (owned by the issue that implements it)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app (none yet)."""
