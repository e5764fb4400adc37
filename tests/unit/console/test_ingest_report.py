"""``labelloop ingest``'s report: rows by line and reason, a summary, exit codes, answers."""

from __future__ import annotations

from labelloop.events import ItemOutcome, SubmissionAnswered
from labelloop_console.commands.ingest import (
    Answers,
    IngestReport,
    describe_row,
    exit_code,
    summary_json,
    summary_lines,
)


def _answer(
    submission: str,
    *outcomes: ItemOutcome,
    request: str = "req",
    counts: tuple[int, int, int] = (0, 0, 0),
    part: int = 1,
    parts: int = 1,
) -> SubmissionAnswered:
    ingested, duplicates, rejected = counts
    return SubmissionAnswered(
        project="p",
        submission_id=submission,
        request_id=request,
        origin_unit="line",
        n_items=ingested + duplicates + rejected,
        ingested=ingested,
        duplicates=duplicates,
        rejected=rejected,
        outcomes=list(outcomes),
        part=part,
        parts=parts,
    )


def test_a_bad_row_is_one_short_line_ending_in_its_verdict() -> None:
    assert (
        describe_row("line", 7, "rejected", "missing_field: data.text is required")
        == "line 7: missing_field: data.text is required: rejected"
    )
    assert describe_row("item", 3, "duplicate", "same content as item 1") == (
        "item 3: same content as item 1: duplicate"
    )
    assert describe_row("line", 2, "not_submitted", "not valid UTF-8").endswith(": not submitted")


def test_the_summary_counts_every_row_and_the_exit_code_follows() -> None:
    report = IngestReport(request_id="r", messages=1, items=5, ingested=3, duplicates=1)
    assert summary_lines(report) == [
        "submitted 5 items in 1 message",
        "3 ingested, 1 duplicate, 0 rejected, 0 not submitted",
    ]
    assert exit_code(report) == 0  # a duplicate is not an error
    report.rejected, report.not_submitted, report.duplicates = 1, 2, 2
    assert summary_lines(report)[1] == "3 ingested, 2 duplicates, 1 rejected, 2 not submitted"
    assert exit_code(report) == 2
    report.unanswered = 1  # the report is incomplete: that wins
    assert summary_lines(report)[1].endswith("(1 message unanswered)")
    assert exit_code(report) == 1
    assert all(len(line) <= 80 for line in summary_lines(report))
    summary = summary_json(report)["summary"]
    assert summary["ingested"] == 3
    assert summary["unanswered"] == 1
    assert summary["exit_code"] == 1


def test_not_waiting_reports_what_was_sent() -> None:
    report = IngestReport(request_id="r", waited=False, messages=2, items=9, not_submitted=1)
    assert summary_lines(report) == [
        "submitted 9 items in 2 messages; not waiting for the ingester",
        "1 not submitted",
    ]
    assert exit_code(report) == 2
    assert summary_json(report)["summary"]["ingested"] is None
    report.not_submitted = 0
    assert exit_code(report) == 0


async def test_answers_add_up_once_per_part_and_ignore_other_requests() -> None:
    report = IngestReport(request_id="req")
    rows: list[tuple[str, int, str, str]] = []
    answers = Answers(report, lambda *row: rows.append(row))
    answers.expect("m1")
    answers.expect("m2")
    assert answers.missing == 2
    bad = ItemOutcome(origin=4, verdict="rejected", reason="missing_field: data.text is required")
    twin = ItemOutcome(origin=9, verdict="duplicate", reason="same content as line 2")
    answers.take(_answer("m1", bad, counts=(8, 0, 1), parts=2))
    answers.take(_answer("m1", bad, counts=(8, 0, 1), parts=2))  # heard again: counted once
    answers.take(_answer("m9", twin, request="another producer's", counts=(0, 1, 0)))
    assert answers.missing == 2  # m1 has one part of two
    answers.take(_answer("m1", twin, counts=(8, 0, 1), part=2, parts=2))
    answers.take(_answer("m2", counts=(5, 0, 0)))
    assert answers.missing == 0
    assert rows == [
        ("line", 4, "rejected", "missing_field: data.text is required"),
        ("line", 9, "duplicate", "same content as line 2"),
    ]
    assert (report.ingested, report.duplicates, report.rejected) == (13, 0, 1)
    await answers.wait(idle=30)  # everything is answered: returns at once
    assert report.unanswered == 0


async def test_a_message_nobody_answers_is_counted_after_the_wait() -> None:
    report = IngestReport(request_id="req")
    answers = Answers(report, lambda *row: None)
    answers.expect("m1")
    await answers.wait(idle=0.01)
    assert report.unanswered == 1
    assert exit_code(report) == 1
