"""``labelloop ingest FILE --project P``: read items from a file or folder, submit them to NATS."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from labelloop.events import ItemIn, ItemsSubmitted, deterministic_id
from labelloop_ingester.domain.intake import chunk_by_size
from labelloop_ingester.settings import IngesterSettings
from labelloop_ingester.sources import BadRow, read_positioned

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
    """Submit items to the ingester (validation results arrive as ItemsIngested / ItemsRejected).

    The file is read as a stream: items go out in messages of up to 800 kB as they are read,
    so memory stays flat in the file's size. Every row that cannot be submitted is reported with
    its line (or position) and reason, the good rows are submitted all the same, and the exit
    code is 2 when any row was bad."""
    try:
        report = asyncio.run(_stream(file, project, source, media_field, IngesterSettings()))
    except _Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"submitted {report.items} items in {report.messages} messages; "
        f"{report.bad} rows not submitted"
    )
    if report.bad:
        raise typer.Exit(code=2)


class _Refused(Exception):
    """Nothing can be submitted (no bus, no such project, an unreadable file): said in one line."""


@dataclass
class _Report:
    items: int = 0
    messages: int = 0
    bad: int = 0


async def _stream(
    file: Path, project: str, source: str, media_field: str | None, settings: IngesterSettings
) -> _Report:
    # the kernel's client: credentials, TLS and stream provisioning as the services have them
    from labelloop.client import COMMAND_WAIT_SECONDS, Unreachable, connect

    report = _Report()
    bus_context = connect(settings, give_up_after=COMMAND_WAIT_SECONDS)
    try:
        bus = await bus_context.__aenter__()
    except Unreachable as exc:
        raise _Refused(f"cannot reach NATS: {exc}") from None
    try:
        if await bus.project(project) is None:
            raise _Refused(f"unknown project {project!r}: apply its configuration first")
        pending: list[ItemIn] = []
        size = 0
        try:
            for at, row in read_positioned(file, media_field=media_field):
                if isinstance(row, BadRow):
                    _bad(report, row)
                    continue
                item_bytes = len(row.model_dump_json()) + 1
                if item_bytes > _CHUNK_BYTES:
                    reason = (
                        f"too_large: {item_bytes} bytes, over the {_CHUNK_BYTES}-byte message"
                        " limit (send large media by URL or path)"
                    )
                    _bad(report, BadRow(at.index, reason, at.where))
                    continue
                if pending and size + item_bytes > _CHUNK_BYTES:
                    await _send(bus, pending, project, source, report)
                    pending, size = [], 0
                pending.append(row)
                size += item_bytes
        except (OSError, ValueError) as exc:  # the file as a whole: unknown type, not JSON
            raise _Refused(str(exc)) from None
        if pending:
            await _send(bus, pending, project, source, report)
    finally:
        await bus_context.__aexit__(None, None, None)
    return report


def _bad(report: _Report, row: BadRow) -> None:
    report.bad += 1
    typer.echo(f"{row.describe()}: not submitted", err=True)


async def _send(bus: Any, items: list[ItemIn], project: str, source: str, report: _Report) -> None:
    for message in submissions(items, project, source=source):
        await bus.publish(message)
        report.messages += 1
    report.items += len(items)
