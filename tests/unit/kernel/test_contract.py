"""The wire contract: subjects, streams and a JSON-schema snapshot of every event."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from labelloop.events import (
    ALL_EVENTS,
    BatchCreated,
    Event,
    ItemsSubmitted,
    RoundDelta,
    RoundExported,
    schema_of,
)
from labelloop.streams import STREAMS, Namespace, split_subject, subject_matches

SNAPSHOT = Path(__file__).parent / "snapshots" / "event_schemas.json"


def test_every_event_has_its_own_subject() -> None:
    subjects = [cls.SUBJECT for cls in ALL_EVENTS]
    assert len(subjects) == len(set(subjects))
    assert all(isinstance(s, str) and s and " " not in s for s in subjects)


def test_every_event_subclass_is_listed() -> None:
    def all_subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        return found.union(*(all_subclasses(c) for c in found)) if found else found

    assert all_subclasses(Event) == set(ALL_EVENTS)


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.__name__)
def test_every_subject_is_captured_by_exactly_one_stream(event: type[Event]) -> None:
    probe = f"{event.SUBJECT}.some-project"
    capturing = [s.name for s in STREAMS if any(subject_matches(p, probe) for p in s.subjects)]
    assert len(capturing) == 1, f"{event.SUBJECT} captured by {capturing}"


def test_streams_do_not_overlap() -> None:
    patterns = [(s.name, p) for s in STREAMS for p in s.subjects]
    for name, pattern in patterns:
        probe = pattern.replace("*", "x").replace(">", "x")
        owners = {n for n, p in patterns if subject_matches(p, probe)}
        assert owners == {name}, f"{pattern} overlaps {owners}"


def test_namespace_prefixes_subjects_streams_and_buckets() -> None:
    ns = Namespace("acme")
    assert ns.subject(BatchCreated) == "acme.batches.created.*"
    assert ns.subject(BatchCreated, "digits") == "acme.batches.created.digits"
    event = ItemsSubmitted(project="digits", items=[{"data": {"text": "hi"}}])  # type: ignore[list-item]
    assert ns.subject(event) == "acme.items.submitted.digits"
    assert ns.parse("acme.items.submitted.digits") == (ItemsSubmitted, "digits")
    assert ns.parse("acme.nothing.here.p") == (None, "p")
    assert split_subject("batches.completed") == ("batches.completed", None)
    assert ns.stream_name(ns.stream_for(BatchCreated)) == "ACME_BATCHES"
    assert ns.kv_bucket("state") == "acme_state"
    with pytest.raises(ValueError, match="namespace"):
        Namespace("bad prefix")


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("items.*", "items.submitted")
    assert not subject_matches("items.*", "items.submitted.extra")
    assert subject_matches("items.>", "items.submitted.extra")
    assert not subject_matches("items.>", "items")


def test_events_are_frozen_and_ignore_unknown_fields() -> None:
    event = ItemsSubmitted.model_validate(
        {"project": "p", "items": [{"data": {"text": "hi"}}], "added_in_v2": True}
    )
    with pytest.raises(ValidationError):
        event.project = "q"  # type: ignore[misc]
    assert not hasattr(event, "added_in_v2")
    assert event.occurred_at.tzinfo is not None


def test_event_schemas_match_the_snapshot() -> None:
    """A contract change shows up in review as a change of this snapshot.

    Regenerate deliberately with ``LABELLOOP_UPDATE_SNAPSHOTS=1 pytest tests/unit/kernel``.
    """
    current = {
        cls.__name__: {"subject": cls.SUBJECT, "schema": schema_of(cls)} for cls in ALL_EVENTS
    }
    if os.environ.get("LABELLOOP_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: the contract cannot be compared"
    stored = json.loads(SNAPSHOT.read_text())
    assert current == stored, "event schemas changed: review, then update the snapshot"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "names no rows"),
        ({"base_ref": "exporter/p/datasets/v0001/labels.parquet"}, "without base_sha256"),
        (
            {"base_ref": "trainer/p/models/m0001.skops", "base_sha256": "0" * 64},
            "not the exporter's file",
        ),
        (
            {"base_ref": "exporter/other/datasets/v0001/labels.parquet", "base_sha256": "0" * 64},
            "not the exporter's file",
        ),
        (
            {"deltas": [RoundDelta(round=1, ref="qa/p/x.parquet", sha256="0" * 64, n_labels=1)]},
            "not the exporter's file",
        ),
    ],
)
def test_a_round_names_only_its_exporters_files_with_their_digests(
    fields: dict[str, object], reason: str
) -> None:
    """The trainer reads what a ``RoundExported`` names: an event naming another area's file
    (the trainer's own models, say), another project's, a file without its sha256, or nothing,
    is refused when it is parsed, so it is dead-lettered before anything is read."""
    with pytest.raises(ValidationError, match=reason):
        RoundExported(project="p", round=1, n_rows=1, **fields)  # type: ignore[arg-type]
    good = RoundExported(
        project="p",
        round=2,
        n_rows=1,
        base_ref="exporter/p/datasets/v0001/labels.parquet",
        base_sha256="0" * 64,
        base_version="v0001",
        deltas=[
            RoundDelta(round=2, ref="exporter/p/deltas/000002.parquet", sha256="1" * 64, n_labels=1)
        ],
    )
    assert good.dataset_version == "v0001+r0002"
