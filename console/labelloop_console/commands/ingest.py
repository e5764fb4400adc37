"""``labelloop ingest FILE --project P``: read items from a file or folder, submit them to NATS."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from labelloop.events import ItemIn, ItemsSubmitted
    from labelloop_ingester.settings import IngesterSettings
    from labelloop_ingester.sources import BadRow

__all__ = ["register", "submissions"]

_CHUNK_BYTES = 450_000
"""Submitted messages travel inline (under ``labelloop.payloads.DEFAULT_INLINE_LIMIT``, 512 kB):
a larger one would be stored in the object store, which a data producer's NATS user may not
write."""


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def submissions(
    items: list[ItemIn], project: str, *, source: str, max_bytes: int = _CHUNK_BYTES
) -> list[ItemsSubmitted]:
    """Items cut into messages under ``max_bytes``; event ids from the content, so submitting
    the same file twice publishes duplicates that JetStream drops (and the ingester dedups)."""
    from labelloop_ingester.domain.intake import chunk_by_size

    payloads = [item.model_dump_json().encode() for item in items]
    return [
        _message([items[i] for i in part], [payloads[i] for i in part], project, source)
        for part in chunk_by_size([len(p) + 1 for p in payloads], max_bytes)
    ]


def _message(
    items: list[ItemIn], payloads: list[bytes], project: str, source: str
) -> ItemsSubmitted:
    from labelloop.events import ItemsSubmitted, deterministic_id

    digest = hashlib.sha256(b"\n".join(payloads)).hexdigest()
    return ItemsSubmitted(
        event_id=deterministic_id("items-submitted", project, digest),
        project=project,
        source=source,
        items=items,
    )


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
    import asyncio

    from labelloop_ingester.settings import IngesterSettings

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
    """Nothing can be submitted (no such project, an unreadable file): said in one line."""


@dataclass
class _Report:
    items: int = 0
    messages: int = 0
    bad: int = 0


async def _stream(
    file: Path, project: str, source: str, media_field: str | None, settings: IngesterSettings
) -> _Report:
    # the kernel's client: credentials, TLS and stream provisioning as the services have them;
    # no NATS within COMMAND_WAIT_SECONDS raises Unreachable, which the CLI says in one line
    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop_ingester.domain.intake import stream_chunks

    report = _Report()
    async with connect(settings, give_up_after=COMMAND_WAIT_SECONDS) as bus:
        config = await bus.project(project)
        if config is None:
            raise _Refused(f"unknown project {project!r}: apply its configuration first")
        fields = [f.name for f in config.data_fields]
        try:
            rows = _good_rows(file, media_field, report, fields)
            for chunk in stream_chunks(rows, _CHUNK_BYTES):
                items = [item for item, _ in chunk]
                await bus.publish(_message(items, [p for _, p in chunk], project, source))
                report.messages += 1
                report.items += len(items)
        except (OSError, ValueError) as exc:  # the file as a whole: unknown type, not JSON
            raise _Refused(str(exc)) from None
    return report


def _good_rows(
    file: Path, media_field: str | None, report: _Report, data_fields: list[str]
) -> Iterator[tuple[tuple[ItemIn, bytes], int]]:
    """Each submittable item with its JSON, sized for :func:`stream_chunks`; every other row is
    reported (with where it is and why) as it is read."""
    from labelloop_ingester.sources import BadRow, read_positioned

    for at, row in read_positioned(file, media_field=media_field, data_fields=data_fields):
        if isinstance(row, BadRow):
            _bad(report, row)
            continue
        payload = row.model_dump_json().encode()
        size = len(payload) + 1
        if size > _CHUNK_BYTES:
            reason = (
                f"too_large: {size} bytes, over the {_CHUNK_BYTES}-byte message limit"
                " (send large media by URL or path)"
            )
            _bad(report, BadRow(at.index, reason, at.where))
            continue
        yield (row, payload), size


def _bad(report: _Report, row: BadRow) -> None:
    report.bad += 1
    typer.echo(f"{row.describe()}: not submitted", err=True)
