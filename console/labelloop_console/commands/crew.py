"""``labelloop annotators`` (feedback per annotator), ``labelloop annotators readmit`` and
``labelloop sampling start|pause``: managing the crew and the campaign from the console."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    annotators = typer.Typer(
        help="How each annotator is doing, and letting a flagged one work again.",
        invoke_without_command=True,
    )
    annotators.callback()(feedback)
    annotators.command("readmit")(readmit)
    app.add_typer(annotators, name="annotators")
    sampling = typer.Typer(help="Start or pause a project's sampling.", no_args_is_help=True)
    sampling.command("start")(start)
    sampling.command("pause")(pause)
    app.add_typer(sampling, name="sampling")


def _trend(points: list[tuple[int, float]]) -> str:
    if not points:
        return "-"
    shown = points[-5:]
    return " → ".join(f"{acc:.2f}" for _, acc in shown) + f" (rounds {shown[0][0]}-{shown[-1][0]})"


def feedback(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Project name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per annotator")] = False,
) -> None:
    """Per annotator: gold accuracy, estimated accuracy and its trend over the rounds, the most
    frequent confusions, and whether QA flagged them (flagged annotators get no new tasks)."""
    if ctx.invoked_subcommand is not None:
        return
    if project is None:
        raise typer.BadParameter("name the project: labelloop annotators --project P")
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop_console.campaign import AnnotatorFeedback, CampaignWatcher

    async def read() -> list[AnnotatorFeedback]:
        async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
            watcher = CampaignWatcher(bus.nc, bus.ns, [project])
            await watcher.start()
            await watcher.caught_up()
            rows = watcher.view(project).annotator_feedback()
            await watcher.stop()
            return rows

    rows = asyncio.run(read())
    if as_json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return
    if not rows:
        typer.echo(f"no QA report for {project} yet")
        return
    table = Table(
        "annotator",
        "annotations",
        "gold",
        "est. accuracy",
        "trend",
        "most frequent confusions",
        "status",
        title=f"annotators of {project} (flagged: gets no new tasks)",
    )
    for f in rows:
        gold = f"{f.gold_accuracy:.2f} of {f.gold_n}" if f.gold_accuracy is not None else "-"
        est = f"{f.estimated_accuracy:.3f}" if f.estimated_accuracy is not None else "-"
        confusions = ", ".join(f"{t}→{g} ({w:.1f})" for t, g, w in f.confusions) or "-"
        table.add_row(
            f.annotator_id,
            str(f.annotations),
            gold,
            est,
            _trend(f.trend),
            confusions,
            "[red]flagged[/]" if f.flagged else "",
        )
    Console().print(table)


def readmit(
    annotator: Annotated[str, typer.Argument(help="The annotator's id")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project name")],
    reason: Annotated[str, typer.Option(help="Recorded with the command")] = "operator",
) -> None:
    """Let an annotator QA flagged work again: their record starts afresh with the next round."""
    import asyncio

    from labelloop.events import ReadmitAnnotator

    command = ReadmitAnnotator(project=project, annotator_id=annotator, reason=reason)
    asyncio.run(_publish(command))
    typer.echo(f"{annotator} re-admitted to {project} from the next round on")


def start(project: Annotated[str, typer.Option("--project", "-p", help="Project name")]) -> None:
    """Start (or resume) sampling: batches are cut as the rules allow."""
    _sampling(project, "start")


def pause(project: Annotated[str, typer.Option("--project", "-p", help="Project name")]) -> None:
    """Pause sampling: open batches go on, no new batch is cut until `start`."""
    _sampling(project, "pause")


def _sampling(project: str, action: str) -> None:
    import asyncio

    from labelloop.events import RequestSampling

    asyncio.run(_publish(RequestSampling.model_validate({"project": project, "action": action})))
    typer.echo(f"sampling of {project}: {action} requested")


async def _publish(event: object) -> None:
    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop.events import Event

    assert isinstance(event, Event)
    async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
        await bus.publish(event)
