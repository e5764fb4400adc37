"""Thin adapters: a typed event in, the backend's placement of the batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from labelloop.events import BatchCreated
from labelloop.project import ProjectConfig

__all__ = ["Placement", "place_batch"]

ProjectLookup = Callable[[str], Awaitable[ProjectConfig | None]]


class Placement(Protocol):
    """Where batches go: Label Studio (``BatchImporter``) or the simulated crew."""

    async def place(self, batch: BatchCreated, config: ProjectConfig) -> int: ...


async def place_batch(event: BatchCreated, projects: ProjectLookup, backend: Placement) -> None:
    """Put a new batch before annotators; retried (not dead-lettered) until its project is known."""
    config = await projects(event.project)
    if config is None:
        raise LookupError(f"project {event.project!r} has no configuration yet")
    await backend.place(event, config)
