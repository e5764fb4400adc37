"""The sampler adds no CLI commands of its own (batches are made by events)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Nothing to add: ``labelloop`` drives the sampler through events."""
    del app
