"""``labelloop train --project P``: the model of the latest (or a given) dataset version."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name")],
    dataset_version: Annotated[
        str | None,
        typer.Option("--dataset", help="v0012, or v0010+r0012 between versions (default: latest)"),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the trainer's answer (0: do not wait)")
    ] = 30.0,
) -> None:
    """Ask for the model of the latest (or a given) round and print it (every round is trained
    in its turn on its rows; ``--dataset`` takes a version, ``v0012``, or the name a model's
    rows have between versions, ``v0010+r0012``; this announces that round's outcome again)."""
    from labelloop.events import ModelTrained, RequestTraining
    from labelloop_console.commands.asking import ask
    from labelloop_trainer.settings import TrainerSettings

    command = RequestTraining(project=project, dataset_version=dataset_version)
    answer = ask(TrainerSettings(), command, (ModelTrained,), wait=wait, who="trainer")
    if isinstance(answer, ModelTrained):
        if answer.skipped:
            outcome = f"no model: {answer.skipped}"
        else:
            accuracy = answer.metrics.get("accuracy")
            scored = f", accuracy {accuracy:.3f} out of sample" if accuracy is not None else ""
            outcome = ("promoted" if answer.promoted else "not promoted") + scored
        typer.echo(
            f"{project} {answer.model_version} on {answer.dataset_version}: {outcome}; "
            f"serving {answer.serving_model_version or 'no model'}"
        )
