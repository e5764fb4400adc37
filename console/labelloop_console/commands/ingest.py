"""``labelloop ingest FILE --project P``: submit a file's items, report what became of each."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from labelloop.events import ItemIn, ItemsSubmitted, OriginUnit, SubmissionAnswered
    from labelloop_ingester.settings import IngesterSettings
    from labelloop_ingester.sources import BadRow

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "Answers",
    "IngestReport",
    "describe_row",
    "exit_code",
    "register",
    "submissions",
    "summary_json",
    "summary_lines",
]

_CHUNK_BYTES = 450_000
"""Submitted messages travel inline (under ``labelloop.payloads.DEFAULT_INLINE_LIMIT``, 512 kB):
a larger one would be stored in the object store, which a data producer's NATS user may not
write."""

DEFAULT_WAIT_SECONDS = 60.0


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def submissions(
    items: list[ItemIn], project: str, *, source: str, max_bytes: int = _CHUNK_BYTES
) -> list[ItemsSubmitted]:
    """Items cut into messages under ``max_bytes``; event ids from the content, so submitting
    the same items twice publishes duplicates that JetStream drops (and the ingester dedups).
    No request id: whoever sends these does not wait for the answers."""
    from labelloop.events import ItemsSubmitted, deterministic_id
    from labelloop_ingester.domain.intake import chunk_by_size

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


# --------------------------------------------------------------------------- the report


@dataclass
class IngestReport:
    """What became of a file's rows. Counts only: a good row leaves nothing behind."""

    request_id: str
    where: str = "line"
    """What the rows' numbers count: ``line``, ``item`` (of a JSON list) or ``file``."""
    waited: bool = True
    messages: int = 0
    items: int = 0
    """Items submitted."""
    not_submitted: int = 0
    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0
    unanswered: int = 0
    """Messages the ingester did not (fully) answer in time."""


def describe_row(where: str, number: int, verdict: str, reason: str) -> str:
    """One bad row as the report prints it: ``line 7: missing_field: data.text is required:
    rejected``, short enough for a narrow terminal, the verdict last so that it greps."""
    return f"{where} {number}: {reason}: {verdict.replace('_', ' ')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary_lines(report: IngestReport) -> list[str]:
    """The report's closing lines (what was submitted; what became of it)."""
    sent = f"submitted {report.items} items in {_count(report.messages, 'message')}"
    if not report.waited:
        return [f"{sent}; not waiting for the ingester", f"{report.not_submitted} not submitted"]
    counts = (
        f"{report.ingested} ingested, {_count(report.duplicates, 'duplicate')},"
        f" {report.rejected} rejected, {report.not_submitted} not submitted"
    )
    if report.unanswered:
        counts += f" ({_count(report.unanswered, 'message')} unanswered)"
    return [sent, counts]


def exit_code(report: IngestReport) -> int:
    """1 when an answer is missing (the report is incomplete), 2 when a row was rejected or
    could not be submitted, else 0: duplicates are not errors (ingesting a file again is safe,
    and says so)."""
    if report.waited and report.unanswered:
        return 1
    return 2 if report.rejected or report.not_submitted else 0


def summary_json(report: IngestReport) -> dict[str, Any]:
    """The last line of ``--json``: ``{"summary": {...}}``."""
    return {
        "summary": {
            "request_id": report.request_id,
            "where": report.where,
            "waited": report.waited,
            "messages": report.messages,
            "submitted": report.items,
            "ingested": report.ingested if report.waited else None,
            "duplicates": report.duplicates if report.waited else None,
            "rejected": report.rejected if report.waited else None,
            "not_submitted": report.not_submitted,
            "unanswered": report.unanswered if report.waited else None,
            "exit_code": exit_code(report),
        }
    }


@dataclass
class _Output:
    as_json: bool

    def row(self, where: str, number: int, verdict: str, reason: str) -> None:
        if self.as_json:
            line = {"where": where, "number": number, "verdict": verdict, "reason": reason}
            typer.echo(json.dumps(line, ensure_ascii=False))
        else:
            typer.echo(describe_row(where, number, verdict, reason), err=True)


@dataclass
class Answers:
    """The ingester's answers to one request, as they arrive: counts added up, each row that
    was not ingested handed to ``on_row`` at once (so nothing accumulates), every message sent
    checked off when all its answer parts came. A part heard twice (the ingester handled a
    message again after a restart) counts once."""

    report: IngestReport
    on_row: Callable[[str, int, str, str], None]
    """``on_row(where, number, verdict, reason)``."""
    _sent: set[str] = field(default_factory=set)
    _left: dict[str, int] = field(default_factory=dict)
    _heard: set[tuple[str, int]] = field(default_factory=set)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, submission_id: str) -> None:
        self._sent.add(submission_id)

    def take(self, answer: SubmissionAnswered) -> None:
        if answer.request_id != self.report.request_id:
            return  # another producer's
        key = (answer.submission_id, answer.part)
        if key in self._heard:
            return
        self._heard.add(key)
        left = self._left.get(answer.submission_id, answer.parts)
        self._left[answer.submission_id] = left - 1
        if answer.part == 1:
            self.report.ingested += answer.ingested
            self.report.duplicates += answer.duplicates
            self.report.rejected += answer.rejected
        for outcome in answer.outcomes:
            self.on_row(answer.origin_unit, outcome.origin, outcome.verdict, outcome.reason)
        self._progress.set()

    @property
    def missing(self) -> int:
        """Messages sent whose answer is not complete."""
        return sum(1 for s in self._sent if self._left.get(s, 1) > 0)

    async def wait(self, idle: float) -> None:
        """Until every message sent is answered, or no answer came for ``idle`` seconds (the
        wait starts again with each answer: a long file's answers keep coming)."""
        while self.missing:
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), timeout=idle)
            except TimeoutError:
                break
        self.report.unanswered = self.missing


# --------------------------------------------------------------------------- the command


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
    wait: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the ingester's next answer once the file is sent"
            " (0: do not wait)"
        ),
    ] = DEFAULT_WAIT_SECONDS,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='One JSON object per bad row, then {"summary": {...}}'),
    ] = False,
) -> None:
    """Submit a file's items and report what became of each row.

    Rows are read as a stream and sent in messages of up to 450 kB, so
    memory stays flat in the file's size. Each bad row is printed on
    stderr with its line and reason: rows that cannot be sent (not
    UTF-8, not JSON, too large, extra CSV fields) as they are read,
    then rows the ingester rejected (missing field, too long, invalid
    value) or found to be duplicates. The summary goes to stdout.

    Exit code 0: every row ingested or a duplicate; 2: a row rejected
    or not submitted; 1: no answer within --wait, no NATS, or an
    unknown project.
    """
    import uuid

    from labelloop_ingester.settings import IngesterSettings

    out = _Output(as_json)
    report = IngestReport(request_id=uuid.uuid4().hex, waited=wait > 0)
    try:
        asyncio.run(
            _stream(file, project, source, media_field, IngesterSettings(), report, out, wait)
        )
    except _Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if report.waited and report.unanswered:
        typer.echo(
            f"error: no answer from the ingester for {_count(report.unanswered, 'message')} of"
            f" {report.messages} within {wait:g} s (request {report.request_id}): is it running?"
            " Ingesting the file again is safe: rows already in come back as duplicates",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(summary_json(report)))
    else:
        for line in summary_lines(report):
            typer.echo(line)
    code = exit_code(report)
    if code:
        raise typer.Exit(code=code)


class _Refused(Exception):
    """Nothing can be submitted (no such project, an unreadable file): said in one line."""


async def _stream(
    file: Path,
    project: str,
    source: str,
    media_field: str | None,
    settings: IngesterSettings,
    report: IngestReport,
    out: _Output,
    wait: float,
) -> None:
    # the kernel's client: credentials, TLS and stream provisioning as the services have them;
    # no NATS within COMMAND_WAIT_SECONDS raises Unreachable, which the CLI says in one line
    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop.events import SubmissionAnswered
    from labelloop_ingester.domain.intake import stream_chunks

    async with connect(settings, give_up_after=COMMAND_WAIT_SECONDS) as bus:
        config = await bus.project(project)
        if config is None:
            raise _Refused(f"unknown project {project!r}: apply its configuration first")
        fields = [f.name for f in config.data_fields]
        answers = Answers(report, out.row)

        async def heard(msg: Any) -> None:
            try:
                answers.take(SubmissionAnswered.model_validate_json(msg.data))
            except ValueError:
                return  # not an answer this version understands: not ours to judge

        subscription = None
        if report.waited:
            # subscribed before the first message goes out, so that no answer comes too early;
            # the answers' subject (all of this project's), not a consumer of the ITEMS stream:
            # a data producer may read those answers and nothing else there
            subscription = await bus.nc.subscribe(
                bus.ns.subject(SubmissionAnswered, project), cb=heard
            )
            await bus.nc.flush()
        try:
            rows = _good_rows(file, media_field, report, out, fields)
            for number, chunk in enumerate(stream_chunks(rows, _CHUNK_BYTES), start=1):
                message = _message(chunk, project, source, report, number)
                answers.expect(message.event_id)
                await bus.publish(message)
                report.messages += 1
                report.items += len(chunk)
        except (OSError, ValueError) as exc:  # the file as a whole: unknown type, not JSON
            raise _Refused(str(exc)) from None
        if subscription is not None:
            await answers.wait(idle=wait)
            await subscription.unsubscribe()


def _message(
    chunk: list[tuple[ItemIn, bytes, int]],
    project: str,
    source: str,
    report: IngestReport,
    number: int,
) -> ItemsSubmitted:
    from labelloop.events import ItemsSubmitted, deterministic_id

    return ItemsSubmitted(
        # the same on a retried publish, another on a second run (which gets its own answers)
        event_id=deterministic_id("items-submitted", project, report.request_id, number),
        project=project,
        source=source,
        items=[item for item, _, _ in chunk],
        request_id=report.request_id,
        origins=[origin for _, _, origin in chunk],
        origin_unit=_unit(report.where),
    )


def _unit(where: str) -> OriginUnit:
    if where == "line":
        return "line"
    return "file" if where == "file" else "item"


def _good_rows(
    file: Path, media_field: str | None, report: IngestReport, out: _Output, data_fields: list[str]
) -> Iterator[tuple[tuple[ItemIn, bytes, int], int]]:
    """Each submittable item with its JSON and where it is, sized for :func:`stream_chunks`;
    every other row is reported (with where it is and why) as it is read."""
    from labelloop_ingester.sources import BadRow, read_positioned

    for at, row in read_positioned(file, media_field=media_field, data_fields=data_fields):
        report.where = at.where
        if isinstance(row, BadRow):
            _bad(report, out, row)
            continue
        payload = row.model_dump_json().encode()
        size = len(payload) + 1
        if size > _CHUNK_BYTES:
            reason = (
                f"too_large: {size} bytes, over the {_CHUNK_BYTES}-byte message limit"
                " (send large media by URL or path)"
            )
            _bad(report, out, BadRow(at.index, reason, at.where))
            continue
        yield (row, payload, at.index), size + len(str(at.index)) + 1


def _bad(report: IngestReport, out: _Output, row: BadRow) -> None:
    report.not_submitted += 1
    out.row(row.where, row.index, "not_submitted", row.reason)
