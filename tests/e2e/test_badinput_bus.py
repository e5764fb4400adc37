"""Bad input on every subject the services consume: each message ends in the DLQ or is a no-op.

The six services run in process against a real nats-server. Hypothesis generates the garbage
(random bytes, random JSON, valid events with one field broken); the whole flood is published at
once, then every (message, consumer) pair is checked against its verdict:

* a payload the event's schema rejects -> a ``DeadLetter`` of kind ``invalid`` for every consumer
  of the subject, with the reason, counted in ``labelloop_runtime_dead_letters_total``;
* a valid event of a project nobody configured -> a dead letter saying so, from every consumer;
* valid events with absurd values -> handled or dead-lettered with a reason, never a crash loop;
* oversized: items over the ingester's limits are rejected per item (``ItemsRejected``), garbage
  near NATS' max payload is dead-lettered (its payload kept truncated), over it the client refuses.

Afterwards every service is still ready and a clean project runs a whole round (items -> batch ->
annotations -> QA report).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext
from pydantic import ValidationError

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    BudgetExhausted,
    ConsensusLabel,
    DatasetExported,
    DeadLetter,
    Event,
    IngestedItem,
    ItemIn,
    ItemsIngested,
    ItemsRejected,
    ItemsSubmitted,
    LabelingConverged,
    LabelsReady,
    ModelTrained,
    ProjectConfigured,
    QAReport,
    ReadmitAnnotator,
    RequestExport,
    RequestSampling,
    RequestTraining,
    ReviewItem,
    ReviewRequested,
    RoundDelta,
    RoundExported,
    deterministic_id,
    event_type,
)
from labelloop.project import parse_project
from labelloop.runtime import Service
from labelloop.streams import Namespace
from labelloop.testing import EventCollector, configure_project

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EXAMPLES = 30
"""Hypothesis examples per subject and kind of garbage."""
MAX_DELIVER = 3

NOW = "2026-01-01T00:00:00+00:00"
GHOST = "ghost-project"
ABSURD = "absurd"
CLEAN = "clean"


def _project(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg", "meh"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {"overlap_fraction": 0.3, "annotators_per_overlapped_item": 2},
        "sampling": {"strategy": "random", "batch_size": 10, "seed": 1},
        "budget": {"max_labels": 20},
        "simulation": {
            "seed": 2,
            "annotators": [{"id": "sim-a", "accuracy": 0.95}, {"id": "sim-b", "accuracy": 0.95}],
        },
    }


# ---------------------------------------------------------------------- valid events per subject


def _annotation(**over: Any) -> Annotation:
    fields: dict[str, Any] = {
        "annotation_id": "a-1",
        "item_id": "i-1",
        "annotator_id": "ann",
        "value": "pos",
        "batch_id": "b-1",
        "created_at": NOW,
        "updated_at": NOW,
        "source": AnnotationSource.IMPORT,
    }
    return Annotation(**(fields | over))


def valid_event(cls: type[Event], project: str) -> Event:
    """One sensible event of each consumed type (the base the mutations start from)."""
    p = {"project": project}
    task = BatchTask(item_id="i-1", data={"text": "hello"}, annotations_required=2)
    label = ConsensusLabel(
        item_id="i-1", label="pos", confidence=0.9, method="majority", n_annotations=2
    )
    builders: dict[type[Event], Callable[[], Event]] = {
        ItemsSubmitted: lambda: ItemsSubmitted(**p, items=[ItemIn(data={"text": "hello"})]),
        ItemsIngested: lambda: ItemsIngested(
            **p, items=[IngestedItem(item_id="i-1", data={"text": "hello"})], submission_id="s-1"
        ),
        BatchCreated: lambda: BatchCreated(
            **p, batch_id="b-1", round=1, tasks=[task], strategy="random", seed=1
        ),
        AnnotationsSubmitted: lambda: AnnotationsSubmitted(**p, annotations=[_annotation()]),
        BatchCompleted: lambda: BatchCompleted(
            **p, batch_id="b-1", round=1, n_tasks=1, n_annotations=1, annotations=[_annotation()]
        ),
        LabelsReady: lambda: LabelsReady(**p, batch_id="b-1", round=1, labels=[label]),
        QAReport: lambda: QAReport(
            **p, batch_id="b-1", round=1, n_items=1, n_annotations=2, consensus_method="majority"
        ),
        ReviewRequested: lambda: ReviewRequested(
            **p, batch_id="b-1", round=1, items=[ReviewItem(item_id="i-1", reason="low_confidence")]
        ),
        DatasetExported: lambda: DatasetExported(
            **p,
            version="v0001",
            round=1,
            path="/nonexistent/v0001",
            n_rows=1,
            n_new_rows=1,
            split_sizes={"train": 1},
            class_counts={"pos": 1},
            formats=["jsonl"],
            manifest_sha256="0" * 64,
        ),
        RoundExported: lambda: RoundExported(
            **p,
            round=1,
            n_rows=1,
            version="v0001",
            base_version="v0001",
            base_ref=f"exporter/{project}/datasets/v0001/labels.parquet",
            base_sha256="0" * 64,
        ),
        ModelTrained: lambda: ModelTrained(
            **p,
            model_version="m-1",
            dataset_version="v0001",
            round=1,
            promoted=True,
            metrics={"accuracy": 0.5},
            n_train=1,
        ),
        LabelingConverged: lambda: LabelingConverged(**p, model_version="m-1", reason="plateau"),
        BudgetExhausted: lambda: BudgetExhausted(
            **p, labels_used=20, annotations_used=26, reason="max_labels"
        ),
        RequestExport: lambda: RequestExport(**p),
        RequestTraining: lambda: RequestTraining(**p, dataset_version="v0001"),
        RequestSampling: lambda: RequestSampling(**p, action="start"),
        ReadmitAnnotator: lambda: ReadmitAnnotator(**p, annotator_id="ann"),
        ProjectConfigured: lambda: ProjectConfigured(**p, revision=1, config={}),
    }
    return builders[cls]()


def absurd_events(project: str) -> list[Event]:
    """Valid schemas, absurd values, for a project that exists."""
    p = {"project": project}
    huge = 2**62
    far = "9999-12-31T23:59:59+00:00"
    weird_id = "../../" + "\u202e" * 3 + "x" * 5000
    return [
        ItemsSubmitted(
            **p,
            items=[
                ItemIn(data={"text": "x"}, features=[1e308] * 5000),  # over max_feature_dim
                ItemIn(data={"text": 12345}),  # wrong type
                ItemIn(data={"other": "no text"}),  # missing field
                ItemIn(data={"text": "ok"}, known_label="not-a-class"),
            ],
        ),
        BatchCreated(
            **p,
            batch_id=weird_id,
            round=huge,
            strategy="🙂" * 100,
            seed=-huge,
            tasks=[
                BatchTask(
                    item_id=weird_id,
                    data={},
                    annotations_required=10**9,
                    is_gold=True,
                    gold_label="not-a-class",
                    score=-1e308,
                )
            ],
        ),
        AnnotationsSubmitted(
            **p,
            annotations=[
                _annotation(
                    annotation_id=weird_id,
                    item_id=weird_id,
                    batch_id=weird_id,
                    lead_time_seconds=1e300,
                    created_at=far,
                    updated_at=far,
                    value=[{"start": -5, "end": huge}],
                )
            ],
        ),
        BatchCompleted(**p, batch_id=weird_id, round=huge, n_tasks=-huge, n_annotations=huge),
        LabelsReady(
            **p,
            batch_id=weird_id,
            round=huge,
            labels=[
                ConsensusLabel(
                    item_id=weird_id,
                    label="not-a-class",
                    confidence=1.0,
                    method="?",
                    n_annotations=huge,
                )
            ],
        ),
        QAReport(
            **p,
            batch_id=weird_id,
            round=huge,
            n_items=-1,
            n_annotations=huge,
            consensus_method="?",
            percent_agreement=1e308,
            krippendorff_alpha=-1e308,
        ),
        ReviewRequested(
            **p,
            batch_id=weird_id,
            round=huge,
            items=[ReviewItem(item_id=f"r{i}", reason="?") for i in range(2000)],
        ),
        RoundExported(  # the trainer's input: paths climbing out of the exporter's files
            **p,
            round=huge,
            n_rows=huge,
            version=weird_id,
            base_version=weird_id,
            base_ref=f"exporter/{project}/../../nothing",
            base_sha256="zz",
            deltas=[
                RoundDelta(
                    round=r,
                    revision=huge,
                    ref=f"exporter/{project}/../../../etc/passwd",
                    sha256="",
                    n_labels=huge,
                )
                for r in (huge, 1)
            ],
            revisions={weird_id: -huge},
        ),
        ModelTrained(
            **p,
            model_version=weird_id,
            dataset_version=weird_id,
            round=huge,
            promoted=True,
            metrics={"accuracy": 1e308},
            n_train=-1,
            scores_ref="no/such/scores.npz",
            serving_scores_ref="no/such/scores.npz",
        ),
        RequestExport(**p, formats=["exe", "../../etc/passwd"]),
        BudgetExhausted(
            **p, labels_used=-huge, annotations_used=huge, cost=-1e308, reason=weird_id
        ),
        RequestTraining(**p, dataset_version=weird_id),
        ReadmitAnnotator(**p, annotator_id=weird_id[:256]),
    ]


UNKNOWN_PROJECT = "unknown project"
"""One policy in every service: a valid event of a project nobody configured is a dead letter
with this reason, and nothing is created for it."""


# ---------------------------------------------------------------------- hypothesis strategies

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
_wrong_values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.floats(allow_nan=False),
)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """The valid event with one field dropped or replaced by a value of another type."""
    keys = sorted(base)
    drop = st.sampled_from(keys).map(lambda k: {f: v for f, v in base.items() if f != k})
    swap = st.tuples(st.sampled_from(keys), _wrong_values).map(lambda kv: base | {kv[0]: kv[1]})
    return (drop | swap).map(lambda d: json.dumps(d).encode())


def garbage_for(cls: type[Event]) -> list[bytes]:
    """Random bytes, random JSON and broken events for one subject, drawn by hypothesis."""
    base = json.loads(valid_event(cls, ABSURD).model_dump_json())
    strategy = st.one_of(
        st.binary(max_size=2048),
        _json.map(lambda v: json.dumps(v).encode()),
        _mutations(base),
    )
    drawn: list[bytes] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(payload: bytes) -> None:
        drawn.append(payload)

    draw()
    return drawn


# ---------------------------------------------------------------------- bookkeeping


@dataclass
class Sent:
    cls: type[Event]
    subject: str
    seq: int
    payload: bytes
    kind: str  # garbage, unknown_project, absurd, oversized

    @property
    def schema_valid(self) -> bool:
        try:
            self.cls.model_validate_json(self.payload)
        except (ValidationError, ValueError):
            return False
        return True


async def _consumers(js: JetStreamContext, ns: Namespace) -> dict[str, list[str]]:
    """Subject -> durable consumers, as the server knows them (what the services registered)."""
    found: dict[str, list[str]] = {}
    for spec in ns.streams:
        for info in await js.consumers_info(ns.stream_name(spec)):
            subject = info.config.filter_subject
            if subject and info.name:
                found.setdefault(subject, []).append(info.name)
    return found


async def _quiet(js: JetStreamContext, ns: Namespace, timeout: float) -> None:
    """Wait until every consumer has decided every message (nothing pending, nothing unacked)."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 3:
        busy = []
        for spec in ns.streams:
            for info in await js.consumers_info(ns.stream_name(spec)):
                if info.num_pending or info.num_ack_pending:
                    busy.append(f"{info.name}: {info.num_pending}+{info.num_ack_pending}")
        calm = 0 if busy else calm + 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumers still busy after {timeout}s: {busy}")
        await asyncio.sleep(0.2)


async def _dead_letters(js: JetStreamContext, ns: Namespace) -> list[DeadLetter]:
    stream = ns.stream_name(ns.stream_for(DeadLetter))
    info = await js.stream_info(stream)
    letters = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, seq)
        letters.append(DeadLetter.model_validate_json(raw.data or b"{}"))
    return letters


def _metric_sum(service: Service, name: str, **labels: str) -> float:
    total = 0.0
    for family in service.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# ---------------------------------------------------------------------- the test


async def test_garbage_on_every_consumed_subject_is_dead_lettered_or_harmless(
    six_services: Any, nats_url: str, namespace: str
) -> None:
    started = time.monotonic()
    ns = Namespace(namespace)
    common = {"max_deliver": MAX_DELIVER, "retry_backoff_seconds": 0.05, "ack_wait_seconds": 10}
    async with six_services(**common) as services:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await configure_project(nats_url, namespace, parse_project(_project(ABSURD)))
            filters = await _consumers(js, ns)
            consumers = {event_type(ns.relative(s)): names for s, names in filters.items()}
            consumed = sorted(consumers, key=str)  # type: ignore[arg-type]
            handled = {s.event for svc in services.values() for s in svc.subscriptions()}
            assert set(consumed) == handled, filters  # every handler of the six services
            owner = {s.durable: n for n, svc in services.items() for s in svc.subscriptions()}

            sent: list[Sent] = []

            async def send(cls: type[Event], payload: bytes, kind: str, project: str) -> None:
                subject = ns.subject(cls, project)
                ack = await js.publish(subject, payload)
                sent.append(Sent(cls, subject, ack.seq, payload, kind))

            for cls in consumed:
                for payload in garbage_for(cls):
                    await send(cls, payload, "garbage", ABSURD)
                ghost = valid_event(cls, GHOST)
                await send(cls, ghost.model_dump_json().encode(), "unknown_project", GHOST)
            for event in absurd_events(ABSURD):
                await send(type(event), event.model_dump_json().encode(), "absurd", ABSURD)

            # oversized: over the ingester's limits (rejected per item), near and over max payload
            max_payload = nc.max_payload
            long_text = "x" * 110_000  # over text_max_length (100k characters)
            n_long = (max_payload - 200_000) // len(long_text)
            big = ItemsSubmitted(
                project=ABSURD,
                items=[ItemIn(data={"text": f"{i}{long_text}"}) for i in range(n_long)],
            )
            await send(ItemsSubmitted, big.model_dump_json().encode(), "oversized", ABSURD)
            for cls in (ItemsSubmitted, BatchCreated, ItemsIngested):
                await send(cls, os.urandom(max_payload - 64 * 1024), "oversized", ABSURD)
            items_stream, subject = (
                ns.stream_name(ns.stream_for(ItemsSubmitted)),
                ns.subject(ItemsSubmitted, ABSURD),
            )
            before = (await js.stream_info(items_stream, subjects_filter=subject)).state.subjects
            with pytest.raises(nats.errors.MaxPayloadError):
                await js.publish(subject, b"{" + b" " * max_payload + b"}")
            after = (await js.stream_info(items_stream, subjects_filter=subject)).state.subjects
            assert after == before, "an over-limit message never reaches the bus"
            flood = time.monotonic()

            await _quiet(js, ns, timeout=90)
            decided = time.monotonic()
            letters = await _dead_letters(js, ns)
            by_key: dict[tuple[str, str, int], list[DeadLetter]] = {}
            for letter in letters:
                key = (letter.original_subject, letter.consumer, letter.original_sequence or -1)
                by_key.setdefault(key, []).append(letter)

            outcomes: Counter[tuple[str, str]] = Counter()
            verdicts: dict[str, str] = {}
            problems: list[str] = []
            for s in sent:
                subject = s.subject
                for durable in consumers[s.cls]:
                    service = owner[durable]
                    found = by_key.get((subject, durable, s.seq), [])
                    shown = f"{service}/{s.cls.__name__} {s.kind} {s.payload[:80]!r}"
                    if len(found) > 1:
                        problems.append(f"{shown}: {len(found)} dead letters")
                        continue
                    letter = found[0] if found else None
                    kind = "valid_mutation" if s.kind == "garbage" and s.schema_valid else s.kind
                    outcomes[(kind, letter.kind if letter else "handled")] += 1
                    if s.kind == "absurd":
                        verdicts[f"{service}/{s.cls.__name__}"] = (
                            letter.reason[:60] if letter else "handled"
                        )
                    if letter is not None:
                        assert letter.reason, shown
                        assert letter.payload_size == len(s.payload), shown
                        assert s.payload.startswith(letter.payload()), shown
                        if letter.kind == "max_deliveries":
                            problems.append(f"{shown}: crashed or timed out ({letter.reason})")
                    if not s.schema_valid:
                        if letter is None or letter.kind != "invalid":
                            problems.append(f"{shown}: invalid payload not dead-lettered: {letter}")
                        elif not letter.reason.startswith("invalid payload"):
                            problems.append(f"{shown}: reason {letter.reason!r}")
                    elif s.kind == "unknown_project" and (
                        letter is None or UNKNOWN_PROJECT not in letter.reason
                    ):
                        problems.append(f"{shown}: expected {UNKNOWN_PROJECT!r}, got {letter}")
            assert not problems, "\n".join(problems)

            # every dead letter is counted where it happened, and only those
            for name, service in services.items():
                mine = [
                    lt
                    for lt in letters
                    if owner.get(lt.consumer) == name and lt.kind != "max_deliveries"
                ]
                counted = _metric_sum(service, "labelloop_runtime_dead_letters_total")
                assert counted == len(mine), (name, counted, len(mine))
            assert not [lt for lt in letters if lt.kind == "max_deliveries"]
            # no crash loop: nothing came back more often than the delivery policy allows
            for name, service in services.items():
                redelivered = _metric_sum(service, "labelloop_runtime_redeliveries_total")
                retried = _metric_sum(
                    service, "labelloop_runtime_messages_total", outcome="retried"
                )
                assert redelivered == retried, (name, redelivered, retried)
                assert service.ready, name

            # the oversized submission was taken apart item by item, nothing dead-lettered
            rejected = EventCollector(nats_url, namespace, ItemsRejected)
            async with rejected:
                got = await rejected.wait_for(2, timeout=20)
            mass = [r for r in got if len(r.rejections) == n_long]
            assert mass, [len(r.rejections) for r in got]
            assert {r.reason.split(":")[0] for r in mass[0].rejections} == {"too_long"}

            print(  # the figures for the report (pytest -s)
                f"\n{len(sent)} messages, {sum(len(consumers[s.cls]) for s in sent)}"
                f" deliveries decided; {len(letters)} dead letters; flood {flood - started:.1f}s,"
                f" decided {decided - flood:.1f}s; outcomes {dict(sorted(outcomes.items()))}"
                f"\nabsurd values: {json.dumps(verdicts, indent=1)}"
            )

            await _a_clean_round_still_runs(nats_url, namespace)
        finally:
            await nc.close()


async def _a_clean_round_still_runs(nats_url: str, namespace: str) -> None:
    async with (
        EventCollector(nats_url, namespace, BatchCreated) as batches,
        EventCollector(nats_url, namespace, QAReport) as reports,
    ):
        await configure_project(nats_url, namespace, parse_project(_project(CLEAN)))
        from labelloop.client import connect
        from labelloop.settings import ServiceSettings

        items = [
            ItemIn(data={"text": f"clean item {i}"}, metadata={"simulation_truth": "pos"})
            for i in range(30)
        ]
        async with connect(ServiceSettings(nats_url=nats_url, namespace=namespace)) as bus:
            await bus.publish(
                ItemsSubmitted(
                    event_id=deterministic_id("clean", namespace), project=CLEAN, items=items
                )
            )
        deadline = time.monotonic() + 60
        while not any(r.project == CLEAN for r in reports.events):
            assert time.monotonic() < deadline, (
                f"no QA report for the clean project; batches: "
                f"{[b.project for b in batches.events]}"
            )
            await asyncio.sleep(0.2)
