"""``labelloop ingest FILE --project P``: read items from a file or folder, submit them to NATS."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Annotated

import typer

from labelloop.events import ItemIn, ItemsSubmitted, deterministic_id
from labelloop_ingester.domain.intake import chunk_by_size
from labelloop_ingester.settings import IngesterSettings
from labelloop_ingester.sources import BadRow, read_items

__all__ = ["register", "submissions"]

_CHUNK_BYTES = 800_000
"""Submitted messages stay under NATS' default 1 MB payload limit."""


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def submissions(
    items: list[ItemIn], project: str, *, source: str, max_bytes: int = _CHUNK_BYTES
) -> list[ItemsSubmitted]:
    """Items cut into messages under ``max_bytes``; event ids from the content, so submitting
    the same file twice publishes duplicates that JetStream drops (and the ingester dedups)."""
    payloads = [item.model_dump_json().encode() for item in items]
    out = []
    for part in chunk_by_size([len(p) + 1 for p in payloads], max_bytes):
        digest = hashlib.sha256(b"\n".join(payloads[i] for i in part)).hexdigest()
        out.append(
            ItemsSubmitted(
                event_id=deterministic_id("items-submitted", project, digest),
                project=project,
                source=source,
                items=[items[i] for i in part],
            )
        )
    return out


def ingest(
    file: Annotated[
        Path,
        typer.Argument(exists=True, help="JSONL, CSV, JSON list, Label Studio tasks or a folder"),
    ],
    project: Annotated[str, typer.Option("--project", "-p", help="Project name")],
    media_field: Annotated[
        str | None,
        typer.Option(help="Data field for media files of a folder (default: image/audio/video)"),
    ] = None,
    source: Annotated[str, typer.Option(help="Recorded as the submission's source")] = "cli",
) -> None:
    """Submit items to the ingester (validation results arrive as ItemsIngested / ItemsRejected)."""
    items: list[ItemIn] = []
    bad: list[BadRow] = []
    for row in read_items(file, media_field=media_field):
        (bad if isinstance(row, BadRow) else items).append(row)  # type: ignore[arg-type]
    for row in bad:
        typer.echo(f"row {row.index}: not submitted: {row.reason}", err=True)
    messages = submissions(items, project, source=source)
    if messages:
        asyncio.run(_publish(IngesterSettings(), messages))
    typer.echo(
        f"submitted {len(items)} items in {len(messages)} messages; {len(bad)} unreadable rows"
    )
    if bad:
        raise typer.Exit(code=2)


async def _publish(settings: IngesterSettings, messages: list[ItemsSubmitted]) -> None:
    # the kernel's client: credentials, TLS and stream provisioning as the services have them
    from labelloop.client import connect

    async with connect(settings) as bus:
        for message in messages:
            await bus.publish(message)
