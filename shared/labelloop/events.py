"""The wire contract: every message on the labelloop bus, one frozen pydantic model each.

Rules (see README, "Events are the contract"):

* Every event carries its subject as the class constant ``SUBJECT``; the runtime prefixes it with
  the deployment's namespace and appends the project (``labelloop.batches.completed.digits``).
  Nobody types a subject string by hand.
* **Causality is carried, not awaited.** A consumer finds in the event it reacts to everything it
  needs from upstream (a completed batch carries its tasks and annotations; a dataset version its
  round), so no consumer waits for another consumer's message. Work that builds on the previous
  step (QA's annotator history, dataset versions, models) is numbered by the labeling ``round``
  and applied in that order (``labelloop.sequencing``), which makes a campaign reproducible.
* ``event_id`` is deterministic where the event has a natural key (a batch id, an annotation id and
  its update time, ...) so that a replayed handler publishes a duplicate that JetStream drops
  (``Nats-Msg-Id``). Where there is no natural key it is a random UUID.
* Consumers ignore unknown fields; schemas only grow by optional fields. A breaking change gets a
  new class and a new subject. ``tests/unit/test_contract.py`` snapshots every JSON schema.
* Bulk paths carry many records per message (``items``, ``annotations``, ``labels``).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

__all__ = [
    "ALL_EVENTS",
    "Annotation",
    "AnnotationSource",
    "AnnotationsSubmitted",
    "AnnotatorScore",
    "BatchCompleted",
    "BatchCreated",
    "BatchTask",
    "BudgetExhausted",
    "CompletedTask",
    "Confusion",
    "ConsensusLabel",
    "DatasetExported",
    "DeadLetter",
    "Event",
    "IngestedItem",
    "ItemIn",
    "ItemOutcome",
    "ItemsIngested",
    "ItemsRejected",
    "ItemsSubmitted",
    "LabelValue",
    "LabelingConverged",
    "LabelsReady",
    "ModelTrained",
    "OriginUnit",
    "Prediction",
    "ProjectConfigured",
    "QAReport",
    "QualityAlertRaised",
    "ReadmitAnnotator",
    "Rejection",
    "RequestExport",
    "RequestSampling",
    "RequestTraining",
    "ReviewItem",
    "ReviewRequested",
    "RoundDelta",
    "RoundExported",
    "SubmissionAnswered",
    "SuspectLabel",
    "deterministic_id",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def deterministic_id(*parts: object) -> str:
    """A stable id from a natural key: the same parts always give the same id."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def _random_id() -> str:
    return uuid.uuid4().hex


class _Frozen(BaseModel):
    """A value object on the wire: immutable, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(_Frozen):
    """Base of every message on the bus."""

    SUBJECT: ClassVar[str]
    """Subject relative to the deployment namespace, e.g. ``items.submitted``."""

    event_id: str = Field(default_factory=_random_id, min_length=1, max_length=128)
    occurred_at: datetime = Field(default_factory=utc_now)
    project: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")


# --------------------------------------------------------------------------- values

LabelValue = str | list[str] | list[dict[str, JsonValue]]
"""A class name (single-label), several class names (multi-label), or regions (spans, boxes)."""


class AnnotationSource(StrEnum):
    WEBHOOK = "webhook"
    RECONCILIATION = "reconciliation"
    SIMULATION = "simulation"
    IMPORT = "import"


class Prediction(_Frozen):
    label: LabelValue
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    model_version: str | None = None


class ItemIn(_Frozen):
    """An item as a data producer submits it."""

    data: dict[str, JsonValue]
    """Fields the labeling UI shows (``text``, ``image`` URL or data URI, ...)."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    features: list[float] | None = None
    """Producer-supplied feature vector or embedding, used for sampling."""
    known_label: LabelValue | None = None
    """A known answer: the item may serve as gold (honeypot) for QA."""
    prediction: Prediction | None = None
    external_id: str | None = None


class IngestedItem(_Frozen):
    item_id: str
    """Stable id derived from the item's content hash."""
    data: dict[str, JsonValue]
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    known_label: LabelValue | None = None
    prediction: Prediction | None = None
    external_id: str | None = None


class Rejection(_Frozen):
    index: int
    """Position of the item in the submitted message (0-based)."""
    reason: str
    external_id: str | None = None
    origin: int | None = None
    """Where the item came from, as its submission said (``ItemsSubmitted.origins``)."""


OriginUnit = Literal["line", "item", "file"]
"""What an origin counts: lines of a JSONL or CSV file, elements of a JSON list (or items of a
message), files of a folder. Origins are 1-based."""


class ItemOutcome(_Frozen):
    """An item of a submission that was not ingested, and why."""

    origin: int
    """Where it came from: its entry of ``ItemsSubmitted.origins``, else its 1-based position in
    the message."""
    verdict: Literal["duplicate", "rejected"]
    reason: str
    """``missing_field: data.text is required``; for a duplicate, which item it repeats."""


class BatchTask(_Frozen):
    item_id: str
    data: dict[str, JsonValue]
    annotations_required: int = Field(ge=1)
    is_gold: bool = False
    is_review: bool = False
    score: float | None = None
    """The sampling score that selected the item (uncertainty, distance, ...)."""
    prediction: Prediction | None = None
    gold_label: LabelValue | None = None
    """The known answer of a gold (honeypot) task; never shown to annotators."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    """The item's metadata (the simulated crew reads ``simulation_truth`` from here)."""


class CompletedTask(_Frozen):
    """A task of a completed batch, as QA needs it: no item data, its gold answer and prediction."""

    item_id: str
    annotations_required: int = Field(ge=1)
    is_gold: bool = False
    gold_label: LabelValue | None = None
    is_review: bool = False
    prediction: Prediction | None = None
    """The model's prediction shown with the task (QA checks the consensus against it)."""


class Annotation(_Frozen):
    annotation_id: str
    item_id: str
    annotator_id: str
    value: LabelValue | None
    """``None`` when the annotator skipped or cancelled the task."""
    batch_id: str | None = None
    lead_time_seconds: float | None = Field(default=None, ge=0.0)
    created_at: datetime
    updated_at: datetime
    source: AnnotationSource
    is_expert: bool = False
    cancelled: bool = False
    deleted: bool = False


class ConsensusLabel(_Frozen):
    item_id: str
    label: LabelValue
    confidence: float = Field(ge=0.0, le=1.0)
    method: str
    n_annotations: int = Field(ge=0)
    is_gold: bool = False
    reviewed: bool = False
    annotators: list[str] = Field(default_factory=list)
    batch_id: str | None = None


class Confusion(_Frozen):
    """How often an annotator gave ``given`` where the consensus (or gold) says ``truth``."""

    truth: str
    given: str
    weight: float = Field(ge=0.0)
    """Soft count: each rating weighs the consensus posterior of ``truth``."""


class AnnotatorScore(_Frozen):
    annotator_id: str
    n_annotations: int
    agreement_with_consensus: float | None = None
    gold_accuracy: float | None = None
    gold_n: int = 0
    """Gold items the annotator answered (``gold_accuracy`` is over these)."""
    estimated_accuracy: float | None = None
    spammer_score: float | None = None
    mean_lead_time_seconds: float | None = None
    flagged: bool = False
    confusions: list[Confusion] = Field(default_factory=list)
    """The annotator's most frequent mistakes, largest first (feedback for the annotator)."""


class SuspectLabel(_Frozen):
    """A released label the retrained model contradicts out of sample (confident learning)."""

    item_id: str
    label: LabelValue
    """The label the dataset holds."""
    model_label: LabelValue
    probability: float = Field(ge=0.0, le=1.0)
    """The model's out-of-sample probability of ``model_label``."""
    batch_id: str | None = None
    """The batch the label came from."""


class ReviewItem(_Frozen):
    item_id: str
    reason: str
    data: dict[str, JsonValue] = Field(default_factory=dict)
    candidate_label: LabelValue | None = None
    confidence: float | None = None


# --------------------------------------------------------------------------- events


class ProjectConfigured(Event):
    """A project's configuration was stored (``labelloop project apply``)."""

    SUBJECT: ClassVar[str] = "projects.configured"
    revision: int = Field(ge=1)
    config: dict[str, JsonValue]


class ItemsSubmitted(Event):
    """A data producer submits raw items (many per message)."""

    SUBJECT: ClassVar[str] = "items.submitted"
    source: str = "api"
    items: list[ItemIn] = Field(min_length=1)
    request_id: str | None = Field(default=None, max_length=128)
    """Names the producer's request (``labelloop ingest`` sends one per file): the answers to
    its messages (``SubmissionAnswered``) carry it."""
    origins: list[int] | None = None
    """Where each item came from, one per item, in ``origin_unit``s (a file's 1-based line, ...):
    the answer names each item that was not ingested by it. ``None``: positions in the message."""
    origin_unit: OriginUnit = "item"

    @model_validator(mode="after")
    def _one_origin_per_item(self) -> ItemsSubmitted:
        if self.origins is not None and len(self.origins) != len(self.items):
            raise ValueError(f"{len(self.origins)} origins for {len(self.items)} items")
        return self


class ItemsIngested(Event):
    """Items were validated, deduplicated and stored; their features are in the object store."""

    SUBJECT: ClassVar[str] = "items.ingested"
    items: list[IngestedItem]
    chunk_ref: str | None = None
    """The item catalog's chunk holding these items and their features (``labelloop.catalog``),
    written before this event: whoever reads it after the event finds it."""
    submission_id: str
    duplicates: int = 0
    request_id: str | None = None
    """The submission's ``request_id``."""


class ItemsRejected(Event):
    """Items that failed validation, with the reason for each: nothing is dropped silently."""

    SUBJECT: ClassVar[str] = "items.rejected"
    submission_id: str
    rejections: list[Rejection]
    request_id: str | None = None
    """The submission's ``request_id``."""


class SubmissionAnswered(Event):
    """The ingester's answer to one submitted message: how many of its items were ingested,
    and each item that was not, with where it came from and why. One per message (in parts when
    the list is long), published after the message's ``ItemsIngested`` and ``ItemsRejected``.

    It carries no item data, and ``labelloop ingest`` waits for it: every data producer may
    read every answer, and nothing else on the ITEMS stream."""

    SUBJECT: ClassVar[str] = "items.answered"
    submission_id: str
    """The submitted message's ``event_id``."""
    request_id: str | None = None
    """The submission's ``request_id``."""
    origin_unit: OriginUnit = "item"
    n_items: int = Field(ge=0)
    """Items in the submitted message; the counts below are the whole message's, in every part."""
    ingested: int = Field(ge=0)
    """New items, and items an earlier delivery of this same message ingested."""
    duplicates: int = Field(ge=0)
    rejected: int = Field(ge=0)
    outcomes: list[ItemOutcome] = Field(default_factory=list)
    """This part's share of the items not ingested, in submission order: every item of the
    message not listed in any part was ingested."""
    part: int = Field(default=1, ge=1)
    parts: int = Field(default=1, ge=1)


class BatchCreated(Event):
    """The sampler chose the next items to label."""

    SUBJECT: ClassVar[str] = "batches.created"
    batch_id: str
    round: int = Field(ge=1)
    """Labeling batches are numbered 1, 2, ... per project; a review batch carries the number of
    the labeling round whose items it reviews."""
    tasks: list[BatchTask]
    strategy: str
    model_version: str | None = None
    """The model whose scores chose the batch (``None``: chosen without a model)."""
    model_round: int | None = None
    """The round that model was trained on: every round up to it is in its training data."""
    seed: int
    kind: Literal["labeling", "review"] = "labeling"
    excluded_annotators: list[str] = Field(default_factory=list)
    """Annotators QA flagged (spammers, adversaries): they get no task of this batch."""
    rechecks: list[SuspectLabel] = Field(default_factory=list)
    """Earlier labels the model of ``model_round`` doubts: QA sends them to an expert with this
    round's review (they are not tasks of this batch and cost no label budget)."""


class AnnotationsSubmitted(Event):
    """Annotations arrived from Label Studio (webhook or reconciliation) or the simulated crew."""

    SUBJECT: ClassVar[str] = "annotations.submitted"
    annotations: list[Annotation] = Field(min_length=1)


class BatchCompleted(Event):
    """Every task of the batch has its required number of annotations. Emitted once per batch.

    It carries the batch's tasks and the annotations that completed them (the latest state of
    each), so QA scores the batch from this one event."""

    SUBJECT: ClassVar[str] = "batches.completed"
    batch_id: str
    round: int = Field(ge=1)
    n_tasks: int
    n_annotations: int
    kind: Literal["labeling", "review"] = "labeling"
    tasks: list[CompletedTask] = Field(default_factory=list)
    annotations: list[Annotation] = Field(default_factory=list)
    rechecks: list[SuspectLabel] = Field(default_factory=list)
    """The batch's ``BatchCreated.rechecks``, carried to QA."""


class LabelsReady(Event):
    """QA's final word on one labeling round: its consensus labels, the experts' answers to the
    round's reviews, and corrections of earlier labels. Exactly one per round (``revision`` 0),
    then one more per distinct change of the round's annotations after it was scored
    (``revision`` 1, 2, ...)."""

    SUBJECT: ClassVar[str] = "labels.ready"
    batch_id: str
    round: int = Field(ge=1)
    labels: list[ConsensusLabel]
    withdrawn: list[str] = Field(default_factory=list)
    """Items of earlier rounds whose label QA no longer stands behind (none usable any more)."""
    percent_agreement: float | None = None
    krippendorff_alpha: float | None = None
    """The round's agreement as QA reported it (a dataset manifest averages it)."""
    n_items: int = Field(default=0, ge=0)
    revision: int = Field(default=0, ge=0)
    """0: the round's first word. From 1 on: a revision of the round after it was scored (an
    answer updated, deleted or added later), which *replaces* the round's earlier
    ``LabelsReady``: ``labels`` are all of the round's labels again, and ``withdrawn`` adds the
    round's items that no longer have a label (every answer deleted)."""


class QAReport(Event):
    """Agreement and annotator quality for one batch, and cumulatively for the project."""

    SUBJECT: ClassVar[str] = "qa.reported"
    batch_id: str
    round: int = Field(ge=1)
    n_items: int
    n_annotations: int
    percent_agreement: float | None = None
    cohen_kappa_mean: float | None = None
    fleiss_kappa: float | None = None
    krippendorff_alpha: float | None = None
    krippendorff_alpha_ci: tuple[float, float] | None = None
    gwet_ac1: float | None = None
    consensus_method: str
    annotators: list[AnnotatorScore] = Field(default_factory=list)
    items_flagged: int = 0
    gold_accuracy: float | None = None
    passed: bool = True
    lead_time_seconds: float = Field(default=0.0, ge=0.0)
    """Total annotation lead time of the batch (with ``n_lead_times``: the money budget)."""
    n_lead_times: int = Field(default=0, ge=0)
    details: dict[str, JsonValue] = Field(default_factory=dict)


class QualityAlertRaised(Event):
    """A batch's agreement fell under the project threshold."""

    SUBJECT: ClassVar[str] = "qa.alerts"
    batch_id: str
    round: int = Field(ge=1)
    metric: str
    value: float | None
    threshold: float
    message: str


class ReviewRequested(Event):
    """Items need an expert's look (low confidence, disagreement, model contradiction)."""

    SUBJECT: ClassVar[str] = "review.requested"
    batch_id: str
    round: int = Field(ge=1)
    """The labeling round whose labels wait for these answers."""
    items: list[ReviewItem] = Field(min_length=1)


class DatasetExported(Event):
    """An immutable dataset version was written."""

    SUBJECT: ClassVar[str] = "datasets.exported"
    version: str
    round: int = Field(ge=1)
    """The version holds the labels of labeling rounds 1 to ``round``."""
    parent_version: str | None = None
    path: str
    n_rows: int
    n_new_rows: int
    split_sizes: dict[str, int]
    class_counts: dict[str, int]
    formats: list[str]
    manifest_sha256: str
    dataset_ref: str | None = None
    """Object-store prefix of the version's label columns and manifest (``labels.parquet``,
    ``manifest.json``): the base of the rows a ``RoundExported`` names."""
    labels_sha256: str | None = None
    """The sha256 of the label columns the exporter put under ``dataset_ref``: a reader checks it,
    so a file replaced in the object store (writable by more than the exporter) is refused."""
    request_id: str | None = None
    """The ``RequestExport`` this announcement answers (``labelloop export`` waits for it);
    ``None`` when the version was written (by its round, the campaign's stop, a request)."""
    revisions: dict[str, int] = Field(default_factory=dict)
    """Rounds of this version held at a revision (round -> ``LabelsReady.revision``) rather than
    as first released. A version named ``v<round>-r<k>`` is the ``k``-th rewrite of version
    ``v<round>`` (the same rounds) for revisions that arrived after it was written."""


class RoundDelta(_Frozen):
    """One round's change to the training rows: a labels-only Parquet file in the object store
    with the rows of the items the round touched; those of its touched items that have no row
    any more (withdrawn, or left out by the export policy) are listed in the file's metadata
    (``labelloop.removed``)."""

    round: int = Field(ge=1)
    revision: int = Field(default=0, ge=0)
    ref: str
    sha256: str
    n_labels: int = Field(ge=0)
    """Labels the round released (``len(LabelsReady.labels)``): what ``every_n_labels`` counts."""


class RoundExported(Event):
    """The training rows as of labeling round ``round``, one per round: the rows of the full
    dataset version ``base_version`` (``None``: none yet) with the ``deltas`` of the rounds after
    it applied in order (a later row for an item replaces the earlier one; removed items go).

    A full version (every format, on disk: ``DatasetExported``) is written every
    ``export.every_n_labels`` labels, when the campaign stops, and on request; in between each
    round adds a delta of its own rows, so a round costs what it labeled, not the whole dataset.
    The trainer trains from this, in round order."""

    SUBJECT: ClassVar[str] = "datasets.rounds"
    round: int = Field(ge=1)
    n_rows: int = Field(ge=0)
    """Rows of the training data as of this round (what the trainer's retraining rule counts)."""
    version: str | None = None
    """The full dataset version this round wrote (then ``base_version`` is it, no deltas)."""
    base_version: str | None = None
    base_ref: str | None = None
    """Object-store name of the base version's labels (``labels.parquet``)."""
    base_sha256: str | None = None
    deltas: list[RoundDelta] = Field(default_factory=list)
    revisions: dict[str, int] = Field(default_factory=dict)
    """Rounds folded at a revision (round -> ``LabelsReady.revision``)."""
    export_settings: str = ""
    """sha256 of the project settings a row depends on (classes, the confidence policy, splits
    and their salt, formats): a round under other settings than its deltas' writes a version."""

    @model_validator(mode="after")
    def _rows_named(self) -> RoundExported:
        """Some rows, every file the exporter's own with its sha256: an event naming another
        area's file, or none, is refused before anyone reads it."""
        if self.base_ref is None and not self.deltas:
            raise ValueError("names no rows: neither a base version nor a delta")
        if self.base_ref is not None and self.base_sha256 is None:
            raise ValueError("base_ref without base_sha256")
        own = f"exporter/{self.project}/"
        for ref in [self.base_ref, *(d.ref for d in self.deltas)]:
            if ref is not None and not ref.startswith(own):
                raise ValueError(f"{ref!r} is not the exporter's file of {self.project}")
        return self

    @classmethod
    def of_version(
        cls, dataset: DatasetExported, *, event_id: str, export_settings: str = ""
    ) -> RoundExported:
        """The rows of the round that ``dataset`` holds: its labels in the object store
        (``labels.parquet`` under ``dataset_ref``) are the base, no deltas; its revisions."""
        if dataset.dataset_ref is None or dataset.labels_sha256 is None:
            raise LookupError(f"{dataset.version} has no labels in the object store")
        return cls(
            event_id=event_id,
            project=dataset.project,
            round=dataset.round,
            n_rows=dataset.n_rows,
            version=dataset.version,
            base_version=dataset.version,
            base_ref=dataset.dataset_ref + "labels.parquet",
            base_sha256=dataset.labels_sha256,
            revisions=dict(sorted(dataset.revisions.items(), key=lambda kv: int(kv[0]))),
            export_settings=export_settings,
        )

    @property
    def dataset_version(self) -> str:
        """The name of these rows: the version itself, or ``v0010+r0012`` (version ``v0010``
        and the rounds after it up to round 12; ``r0012`` without a base)."""
        if self.version is not None:
            return self.version
        tail = f"r{self.round:04d}"
        return f"{self.base_version}+{tail}" if self.base_version else tail


class ModelTrained(Event):
    """The training of one labeling round's rows: the candidate model, whether it was promoted,
    and the model that serves after this round. Exactly one per round (also when no model could
    be trained: ``model_ref`` is then ``None`` and ``skipped`` says why)."""

    SUBJECT: ClassVar[str] = "models.trained"
    model_version: str
    dataset_version: str
    """The rows it was trained on: ``RoundExported.dataset_version`` (``v0012``, a version;
    ``v0010+r0012``, version ``v0010`` and the rounds after it up to 12)."""
    round: int = Field(ge=1)
    promoted: bool
    metrics: dict[str, float]
    n_train: int
    scores_ref: str | None = None
    """Object-store name of the candidate's pool scores (a ``labelloop.catalog`` table)."""
    model_ref: str | None = None
    model_digest: str | None = None
    """``sha256:<hex>`` of the file at ``model_ref``: a reader loads it only if it matches."""
    classes: list[str] = Field(default_factory=list)
    serving_model_version: str | None = None
    """The model that serves after this round: this one if promoted, else the one before."""
    serving_scores_ref: str | None = None
    """Pool scores of the serving model: what the sampler ranks the next batches by."""
    skipped: str | None = None
    """Why no model was trained on this version (e.g. one class only), or ``None``."""
    converged: str | None = None
    """Set when the learning curve has plateaued with this round: sampling stops (the same
    verdict is also announced as ``LabelingConverged``)."""
    request_id: str | None = None
    """The ``RequestTraining`` this announcement answers (``labelloop train`` waits for it);
    ``None`` for a round's own."""
    suspect_labels: list[SuspectLabel] = Field(default_factory=list)
    """Labels (not gold, not expert-reviewed) whose class this round's model, out of sample,
    gives at most ``1 - quality.model_contradiction_threshold``, and another class at least the
    threshold; most confident first. The sampler sends some back to an expert."""


class LabelingConverged(Event):
    """The learning curve plateaued: more labels are unlikely to help; sampling may stop."""

    SUBJECT: ClassVar[str] = "labeling.converged"
    model_version: str
    reason: str
    metrics: dict[str, float] = Field(default_factory=dict)


class BudgetExhausted(Event):
    """The project's label or money budget is spent; the sampler stops creating batches."""

    SUBJECT: ClassVar[str] = "budget.exhausted"
    labels_used: int
    annotations_used: int
    cost: float | None = None
    reason: str
    last_round: int | None = Field(default=None, ge=1)
    """The last labeling round the sampler cut before it stopped (``None``: none, or an older
    sampler): the exporter writes a full dataset version of it."""


class RequestExport(Event):
    """Command: write a dataset version now (``labelloop export``)."""

    SUBJECT: ClassVar[str] = "commands.export"
    formats: list[str] | None = None
    reason: str = "requested"


class RequestSampling(Event):
    """Command: start or pause a project's sampling (``labelloop sampling start|pause``).

    A project whose ``sampling.start`` is ``on_command`` waits for ``start``: a campaign whose pool
    is ingested first is then reproducible (the first batch sees the whole pool)."""

    SUBJECT: ClassVar[str] = "commands.sampling"
    action: Literal["start", "pause"]
    reason: str = "requested"


class ReadmitAnnotator(Event):
    """Command: let an annotator QA flagged work again (``labelloop annotators readmit``).

    Their history starts afresh with the next round QA scores, so the old record does not flag
    them again at once; batches cut from then on include them."""

    SUBJECT: ClassVar[str] = "commands.annotators"
    annotator_id: str = Field(min_length=1, max_length=256)
    reason: str = "re-admitted by an operator"


class RequestTraining(Event):
    """Command: announce the model of the latest (or a given) round again (``labelloop train``)."""

    SUBJECT: ClassVar[str] = "commands.train"
    dataset_version: str | None = None
    """``v0012`` or ``v0010+r0012``: round 12's model (``None``: the latest round's)."""
    reason: str = "requested"


class DeadLetter(Event):
    """A message that could not be processed, kept with the reason so that nothing is lost.

    Not part of the pipeline: it lives on the dead-letter stream, ``labelloop dlq`` reads it.
    ``project`` is ``_unknown`` when the payload could not be parsed far enough to tell.
    """

    SUBJECT: ClassVar[str] = "dlq.messages"
    project: str = Field(default="-", min_length=1, max_length=64)
    original_subject: str
    original_stream: str | None = None
    original_sequence: int | None = None
    consumer: str
    reason: str
    kind: Literal["invalid", "failed", "max_deliveries"]
    deliveries: int = 0
    headers: dict[str, str] = Field(default_factory=dict)
    payload_b64: str
    payload_size: int

    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


ALL_EVENTS: tuple[type[Event], ...] = (
    ProjectConfigured,
    ItemsSubmitted,
    ItemsIngested,
    ItemsRejected,
    SubmissionAnswered,
    BatchCreated,
    AnnotationsSubmitted,
    BatchCompleted,
    LabelsReady,
    QAReport,
    QualityAlertRaised,
    ReviewRequested,
    DatasetExported,
    RoundExported,
    ModelTrained,
    LabelingConverged,
    BudgetExhausted,
    RequestExport,
    RequestTraining,
    RequestSampling,
    ReadmitAnnotator,
    DeadLetter,
)


def event_type(subject: str) -> type[Event] | None:
    """The event class that owns a relative subject (``batches.completed``, with or without the
    project token after it), or ``None``."""
    found = _BY_SUBJECT.get(subject)
    if found is None and subject.count(".") >= 2:
        found = _BY_SUBJECT.get(subject.rsplit(".", 1)[0])
    return found


_BY_SUBJECT: dict[str, type[Event]] = {cls.SUBJECT: cls for cls in ALL_EVENTS}


def to_json(event: Event) -> bytes:
    """The wire form of an event."""
    return event.model_dump_json().encode()


def schema_of(cls: type[Event]) -> dict[str, Any]:
    """The JSON schema of an event class, as the contract snapshot stores it."""
    return cls.model_json_schema(mode="serialization")
