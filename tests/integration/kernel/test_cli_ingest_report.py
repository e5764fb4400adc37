"""``labelloop ingest`` waits for the ingester and reports each row it did not ingest.

Against a real nats-server with the ingester running: a file with good rows, a duplicate, a row
missing its field, an over-long value and an unreadable line comes back as one line per bad row
(its line and reason) and a summary with the right counts; the same file again is all duplicates
and rejections; ``--json`` says the same for scripts; a CSV's rows are numbered by file line."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from cli_support import labelloop

from labelloop.testing import started
from labelloop_ingester.app import build_app
from labelloop_ingester.settings import IngesterSettings

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


async def test_ingest_reports_each_bad_row_with_its_line_and_the_counts(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            labelloop, *args, nats_url=nats_url, namespace=namespace, cwd=tmp_path
        )

    applied = await run("project", "apply", str(EXAMPLES / "reviews" / "project.yaml"))
    assert applied.returncode == 0, applied.stderr
    rows = [
        json.dumps({"data": {"text": "review one"}}),
        json.dumps({"data": {"text": "review two"}}),
        "",  # a blank line is skipped, and counted: the numbers are the file's lines
        json.dumps({"data": {"text": "review one"}, "metadata": {"again": True}}),
        json.dumps({"data": {"title": "no text"}}),
        json.dumps({"data": {"text": "x" * 5001}}),  # the project's max_length is 5000
        "{oops",
        json.dumps({"data": {"text": "review three"}}),
    ]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(rows[:2]) + "\n", encoding="utf-8")
    table = tmp_path / "table.csv"
    table.write_text('text,meta.source\n"csv\none",a\n,b\ncsv two,c\n', encoding="utf-8")

    ingester = build_app(IngesterSettings(nats_url=nats_url, namespace=namespace))
    async with started(ingester):
        done = await run("ingest", str(mixed), "--project", "reviews")
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout.splitlines() == [
            "submitted 6 items in 1 message",
            "3 ingested, 1 duplicate, 2 rejected, 1 not submitted",
        ]
        said = done.stderr.splitlines()
        assert said[0].startswith("line 7: not valid JSON")  # said as the file is read
        assert said[0].endswith(": not submitted")
        assert said[1:] == [
            "line 4: same content as line 1: duplicate",
            "line 5: missing_field: data.text is required: rejected",
            "line 6: too_long: data.text has 5001 characters, the limit is 5000: rejected",
        ]

        # good rows ingested before are duplicates, which are not errors
        again = await run("ingest", str(good), "--project", "reviews")
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.splitlines()[1] == (
            "0 ingested, 2 duplicates, 0 rejected, 0 not submitted"
        )
        assert again.stderr.splitlines() == [
            f"line {n}: same content as an item ingested before: duplicate" for n in (1, 2)
        ]

        scripted = await run("ingest", str(mixed), "--project", "reviews", "--json")
        assert scripted.returncode == 2, scripted.stderr
        assert scripted.stderr == ""
        *lines, last = [json.loads(line) for line in scripted.stdout.splitlines()]
        assert [(r["where"], r["number"], r["verdict"]) for r in lines] == [
            ("line", 7, "not_submitted"),
            ("line", 1, "duplicate"),
            ("line", 2, "duplicate"),
            ("line", 4, "duplicate"),
            ("line", 5, "rejected"),
            ("line", 6, "rejected"),
            ("line", 8, "duplicate"),
        ]
        assert lines[4]["reason"] == "missing_field: data.text is required"
        summary = last["summary"]
        assert (summary["submitted"], summary["ingested"], summary["duplicates"]) == (6, 0, 4)
        assert (summary["rejected"], summary["not_submitted"], summary["exit_code"]) == (2, 1, 2)
        assert summary["unanswered"] == 0

        tabled = await run("ingest", str(table), "--project", "reviews")
        assert tabled.returncode == 2, tabled.stdout + tabled.stderr
        # the header is line 1 and the first row's quoted field spans lines 2 and 3
        assert tabled.stderr.splitlines() == [
            "line 4: missing_field: data.text is required: rejected"
        ]
        assert tabled.stdout.splitlines()[1] == (
            "2 ingested, 0 duplicates, 1 rejected, 0 not submitted"
        )
