"""The ``labelloop`` command against a real nats-server, as an operator types it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_support import labelloop

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_project_apply_ingest_dlq_and_status(nats_url: str, namespace: str, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return labelloop(*args, nats_url=nats_url, namespace=namespace, cwd=tmp_path)

    applied = run("project", "apply", str(EXAMPLES / "reviews" / "project.yaml"))
    assert applied.returncode == 0, applied.stderr
    assert "revision 1" in applied.stdout
    shown = run("project", "show", "reviews")
    assert json.loads(shown.stdout)["labels"]["classes"] == ["positive", "negative", "neutral"]

    items = tmp_path / "items.jsonl"
    items.write_text(
        "\n".join(json.dumps({"data": {"text": f"review {i}"}}) for i in range(5)) + "\n{oops\n"
    )
    # no ingester runs here: not waiting, the unreadable row is said, not silently dropped
    ingested = run("ingest", str(items), "--project", "reviews", "--wait", "0")
    assert ingested.returncode == 2
    assert "submitted 5 items in 1 message; not waiting for the ingester" in ingested.stdout
    assert "line 6: not valid JSON" in ingested.stderr
    assert ingested.stderr.rstrip().endswith(": not submitted")
    # waiting for an ingester that does not answer: the report is incomplete, exit code 1
    unheard = run("ingest", str(items), "--project", "reviews", "--wait", "1")
    assert unheard.returncode == 1
    assert "no answer from the ingester for 1 message of 1 within 1 s" in unheard.stderr

    listed = run("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == ""

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\ntask_type: ner\n")
    refused = run("project", "apply", str(bad))
    assert refused.returncode == 1
    assert "name:" in refused.stdout + refused.stderr

    status = run("status", "--project", "reviews")
    assert status.returncode == 0, status.stderr


async def test_ingest_submits_every_good_row_and_reports_every_bad_one(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """The files of 2026-12-01 that made ``labelloop ingest`` print a traceback and submit
    nothing: a line of invalid UTF-8, a row over NATS' message limit; and a project nobody
    applied, and no NATS at all. Each is said in one line with where and why; good rows go."""
    import asyncio

    from labelloop.events import ItemsSubmitted
    from labelloop.testing import EventCollector

    def run(*args: str, url: str = nats_url) -> subprocess.CompletedProcess[str]:
        return labelloop(*args, nats_url=url, namespace=namespace, cwd=tmp_path)

    applied = await asyncio.to_thread(
        run, "project", "apply", str(EXAMPLES / "reviews" / "project.yaml")
    )
    assert applied.returncode == 0, applied.stderr
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps({"data": {"text": f"review {i}"}}).encode() for i in range(300)]
    lines = [*good[:100], b'{"data": {"text": "caf\xe9"}}', *good[100:200]]
    lines += [json.dumps({"data": {"text": "x" * 900_000}}).encode(), *good[200:]]
    path.write_bytes(b"\n".join(lines) + b"\n")

    async with EventCollector(nats_url, namespace, ItemsSubmitted) as submitted:
        done = await asyncio.to_thread(
            run, "ingest", str(path), "--project", "reviews", "--wait", "0"
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "line 101: not valid UTF-8" in done.stderr
        assert "line 202: too_large: 900" in done.stderr
        assert "submitted 300 items" in done.stdout
        assert "2 not submitted" in done.stdout
        messages = await submitted.wait_for(1, timeout=30)
        await asyncio.sleep(0)  # the command has finished publishing: every message is here
    texts = [item.data["text"] for m in submitted.events for item in m.items]
    assert sorted(texts) == sorted(f"review {i}" for i in range(300)), len(messages)

    headless = tmp_path / "headless.csv"  # 2026-12-01: its first row was taken for the header
    headless.write_text("great value,pos\nbroke in a day,neg\n", encoding="utf-8")
    refused = await asyncio.to_thread(run, "ingest", str(headless), "--project", "reviews")
    assert refused.returncode == 1
    assert "names none of the project's data fields (text)" in refused.stderr
    assert "Traceback" not in refused.stderr

    unknown = await asyncio.to_thread(run, "ingest", str(path), "--project", "nosuch")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1] == (
        "error: unknown project 'nosuch': apply its configuration first"
    )
    nobody = await asyncio.to_thread(
        run, "ingest", str(path), "--project", "reviews", url="nats://127.0.0.1:9"
    )
    assert nobody.returncode == 1
    assert "cannot reach NATS: no NATS server answered at nats://127.0.0.1:9" in nobody.stderr
    assert "Traceback" not in nobody.stderr
    # the other commands that need the bus say the same, once (they retried for minutes)
    for command in (["status"], ["dlq", "list"]):
        said = await asyncio.to_thread(run, *command, url="nats://127.0.0.1:9")
        assert said.returncode == 1, command
        assert said.stderr.strip().startswith("error: cannot reach NATS: no NATS server")
        assert said.stderr.strip().endswith(
            "start one with `labelloop up` (or `make nats`), or point LABELLOOP_NATS_URL at yours"
        )
        assert "Traceback" not in said.stderr


def test_annotators_feedback_readmit_and_sampling_commands(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """The crew commands read QA's reports from the bus and publish the operator's commands."""
    import asyncio

    import nats

    from labelloop.client import connect
    from labelloop.events import (
        AnnotatorScore,
        Confusion,
        QAReport,
        ReadmitAnnotator,
        RequestSampling,
    )
    from labelloop.settings import ServiceSettings
    from labelloop.streams import Namespace

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return labelloop(*args, nats_url=nats_url, namespace=namespace, cwd=tmp_path)

    def report(number: int, spam_accuracy: float, flagged: bool) -> QAReport:
        return QAReport(
            project="crew",
            batch_id=f"b{number}",
            round=number,
            n_items=20,
            n_annotations=60,
            consensus_method="dawid-skene",
            annotators=[
                AnnotatorScore(
                    annotator_id="careful",
                    n_annotations=20 * number,
                    estimated_accuracy=0.95,
                    gold_accuracy=1.0,
                    gold_n=4,
                ),
                AnnotatorScore(
                    annotator_id="spam",
                    n_annotations=20 * number,
                    estimated_accuracy=spam_accuracy,
                    flagged=flagged,
                    confusions=[Confusion(truth="a", given="b", weight=6.5)],
                ),
            ],
        )

    settings = ServiceSettings(nats_url=nats_url, namespace=namespace)

    async def publish_reports() -> None:
        async with connect(settings) as bus:
            await bus.publish(report(1, 0.6, False))
            await bus.publish(report(2, 0.4, True))

    asyncio.run(publish_reports())
    shown = run("annotators", "--project", "crew", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["annotator_id"] for r in rows] == ["careful", "spam"]  # worst last
    assert rows[1]["flagged"] is True
    assert rows[1]["trend"] == [[1, 0.6], [2, 0.4]]
    assert rows[1]["confusions"] == [["a", "b", 6.5]]
    table = run("annotators", "--project", "crew")
    assert "flagged" in table.stdout
    missing = run("annotators")
    assert missing.returncode != 0

    assert run("annotators", "readmit", "spam", "--project", "crew").returncode == 0
    assert run("sampling", "pause", "--project", "crew").returncode == 0
    assert run("sampling", "start", "--project", "crew").returncode == 0

    async def commands() -> list[object]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        ns = Namespace(namespace)
        out: list[object] = []
        for cls in (ReadmitAnnotator, RequestSampling):
            sub = await js.subscribe(ns.subject(cls, "crew"), ordered_consumer=True)
            for _ in range(1 if cls is ReadmitAnnotator else 2):
                msg = await sub.next_msg(timeout=30)
                out.append(cls.model_validate_json(msg.data))
            await sub.unsubscribe()
        await nc.close()
        return out

    readmit, pause, start = asyncio.run(commands())
    assert isinstance(readmit, ReadmitAnnotator)
    assert readmit.annotator_id == "spam"
    assert [pause.action, start.action] == ["pause", "start"]  # type: ignore[attr-defined]
