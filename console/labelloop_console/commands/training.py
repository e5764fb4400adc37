"""``labelloop train --project P``: train now on the latest (or a given) dataset version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from labelloop.events import Event
    from labelloop_trainer.settings import TrainerSettings

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name")],
    dataset_version: Annotated[
        str | None, typer.Option("--dataset", help="Dataset version (default: the latest)")
    ] = None,
) -> None:
    """Ask for the model of the latest (or a given) dataset version, announced again."""
    import asyncio

    from labelloop.events import RequestTraining
    from labelloop_trainer.settings import TrainerSettings

    command = RequestTraining(project=project, dataset_version=dataset_version)
    asyncio.run(_publish(TrainerSettings(), command))
    typer.echo(f"training requested for {project} (command {command.event_id})")


async def _publish(settings: TrainerSettings, event: Event) -> None:
    from labelloop.client import COMMAND_WAIT_SECONDS, connect

    async with connect(settings, give_up_after=COMMAND_WAIT_SECONDS) as bus:
        await bus.publish(event)
