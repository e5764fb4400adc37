"""An operator's command that waits for its answer: what the service did, or why it refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from labelloop.events import Event
    from labelloop.settings import ServiceSettings

__all__ = ["ask"]


def ask(
    settings: ServiceSettings,
    command: Event,
    answers: tuple[type[Event], ...],
    *,
    wait: float,
    who: str,
) -> Event | None:
    """Publish ``command``; with ``wait`` > 0, the answer (one of ``answers`` naming it as its
    request). A dead letter the command became is printed with its reason and exits 1; no answer
    within ``wait`` seconds also exits 1, saying so. ``wait`` 0 publishes and returns ``None``."""
    import asyncio

    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop.events import DeadLetter

    async def run() -> Event | None:
        async with connect(settings, give_up_after=COMMAND_WAIT_SECONDS) as bus:
            if wait <= 0:
                await bus.publish(command)
                return None
            return await bus.command(command, answers, timeout=wait)

    answer = asyncio.run(run())
    if wait <= 0:
        typer.echo(f"sent (command {command.event_id}); not waiting for the {who}")
        return None
    if answer is None:
        typer.echo(
            f"error: no answer from the {who} within {wait:g} s (command {command.event_id}): "
            f"is it running? `labelloop status` shows what the project waits for",
            err=True,
        )
        raise typer.Exit(1)
    if isinstance(answer, DeadLetter):
        typer.echo(f"error: the {who} refused the command: {answer.reason}", err=True)
        raise typer.Exit(1)
    return answer
