"""The ingester's answer to a submitted message: each item not ingested, by where it came from."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from labelloop.events import (
    ItemIn,
    ItemsIngested,
    ItemsRejected,
    ItemsSubmitted,
    SubmissionAnswered,
)
from labelloop.project import parse_project
from labelloop.testing import in_memory
from labelloop_ingester.app import build_app
from labelloop_ingester.domain.answer import MAX_REASON_CHARS, answer
from labelloop_ingester.domain.intake import take_in
from labelloop_ingester.domain.validation import Limits
from labelloop_ingester.settings import IngesterSettings

PROJECT = "reviews"
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text", "max_length": 40}],
}


def _items(*texts: str | None) -> list[ItemIn]:
    return [ItemIn(data={} if t is None else {"text": t}) for t in texts]


async def test_the_answer_names_each_item_not_ingested_by_its_line() -> None:
    service = build_app(IngesterSettings())
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(CONFIG))
        first = ItemsSubmitted(
            project=PROJECT,
            items=_items("good one", "good two", None, "x" * 41, "good one"),
            request_id="r1",
            origins=[2, 3, 5, 8, 13],
            origin_unit="line",
        )
        await bus.publish(first)
        (said,) = bus.published(SubmissionAnswered)
        assert said.submission_id == first.event_id
        assert said.request_id == "r1"
        assert (said.n_items, said.ingested, said.duplicates, said.rejected) == (5, 2, 1, 2)
        assert (said.part, said.parts, said.origin_unit) == (1, 1, "line")
        assert [(o.origin, o.verdict, o.reason) for o in said.outcomes] == [
            (5, "rejected", "missing_field: data.text is required"),
            (8, "rejected", "too_long: data.text has 41 characters, the limit is 40"),
            (13, "duplicate", "same content as line 2"),
        ]
        # what operators read on the stream carries the request and the lines too
        (rejected,) = bus.published(ItemsRejected)
        assert rejected.request_id == "r1"
        assert [r.origin for r in rejected.rejections] == [5, 8]
        assert {e.request_id for e in bus.published(ItemsIngested)} == {"r1"}

        # another request with an item ingested before; no origins: positions in the message
        again = ItemsSubmitted(project=PROJECT, items=_items("new", "good two"), request_id="r2")
        await bus.publish(again)
        said = bus.published(SubmissionAnswered)[-1]
        assert (said.request_id, said.ingested, said.duplicates, said.rejected) == ("r2", 1, 1, 0)
        assert said.origin_unit == "item"
        assert [(o.origin, o.verdict, o.reason) for o in said.outcomes] == [
            (2, "duplicate", "same content as an item ingested before"),
        ]

        # the same message delivered again (a restart before its ack): the same answer, whose
        # event id the stream drops as a duplicate
        await bus.publish(first)
        assert len(bus.published(SubmissionAnswered)) == 2


def test_a_long_answer_comes_in_parts_that_each_travel_inline() -> None:
    project = parse_project(CONFIG)
    items = _items(*(None for _ in range(300)), "fine")
    submission = ItemsSubmitted(
        project=PROJECT, items=items, request_id="r", origins=list(range(10, 311))
    )
    intake = take_in(items, project, Limits(), submission.origins)
    parts = answer(submission, intake, [], max_bytes=5_000)
    assert len(parts) > 1
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert {p.parts for p in parts} == {len(parts)}
    assert len({p.event_id for p in parts}) == len(parts)
    assert all(len(p.model_dump_json()) < 5_000 + 1_000 for p in parts)
    listed = [o.origin for p in parts for o in p.outcomes]
    assert listed == list(range(10, 310))  # every rejected row once, in order; the last ingested
    assert {(p.n_items, p.ingested, p.rejected) for p in parts} == {(301, 1, 300)}
    # deterministic: a redelivered message answers with the same events
    assert [p.event_id for p in answer(submission, intake, [], max_bytes=5_000)] == [
        p.event_id for p in parts
    ]


def test_a_very_long_reason_is_cut_and_an_empty_answer_is_one_part() -> None:
    project = parse_project({**CONFIG, "labels": {"classes": ["pos", "neg"]}})
    odd = ItemIn(data={"text": "ok"}, known_label="z" * 2_000)
    submission = ItemsSubmitted(project=PROJECT, items=[odd])
    (part,) = answer(submission, take_in([odd], project, Limits()), [])
    (outcome,) = part.outcomes
    assert len(outcome.reason) == MAX_REASON_CHARS
    assert outcome.reason.startswith("bad_label: known_label: unknown class")
    fine = ItemsSubmitted(project=PROJECT, items=_items("a"))
    (part,) = answer(fine, take_in(fine.items, project, Limits()), [])
    assert (part.ingested, part.outcomes, part.parts) == (1, [], 1)


def test_a_submission_gives_one_origin_per_item() -> None:
    with pytest.raises(ValidationError, match="2 origins for 1 items"):
        ItemsSubmitted(project=PROJECT, items=_items("a"), origins=[1, 2])
