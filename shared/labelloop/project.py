"""A labeling project's configuration: the YAML file a team writes, validated to the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from labelloop.kinds import DataKind, SamplingStrategy, TaskType

__all__ = [
    "ROLES",
    "AnnotatorSpec",
    "BudgetConfig",
    "DataField",
    "DataKind",
    "ExportConfig",
    "LabelSchema",
    "ModelHookConfig",
    "ProjectConfig",
    "ProjectConfigError",
    "QualityConfig",
    "SamplingConfig",
    "SamplingStrategy",
    "SimulatedAnnotator",
    "SimulationConfig",
    "TaskType",
    "TrainingConfig",
    "load_project",
    "parse_project",
    "scaffold_project",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataField(_Section):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: DataKind
    required: bool = True
    max_length: int | None = Field(default=None, ge=1)
    """For text: maximum characters; for URLs and data URIs: maximum characters of the reference."""


class LabelSchema(_Section):
    classes: list[str] = Field(min_length=1)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    """Optional per-region or per-item attributes (choice name -> allowed values)."""
    expected_distribution: dict[str, float] | None = None
    """Expected class shares; the exporter flags imbalance against it."""
    ordinal: bool = False
    """Classes are ordered (``classes`` lists them low to high): agreement weights by distance."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.classes)) != len(self.classes):
            dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"classes must be unique, repeated: {dupes}")
        if any(not c.strip() for c in self.classes):
            raise ValueError("class names must not be empty")
        if self.expected_distribution is not None:
            unknown = set(self.expected_distribution) - set(self.classes)
            if unknown:
                raise ValueError(f"expected_distribution names unknown classes: {sorted(unknown)}")
        return self


class QualityConfig(_Section):
    overlap_fraction: float = Field(default=0.15, ge=0.0, le=1.0)
    annotators_per_overlapped_item: int = Field(default=3, ge=2, le=20)
    gold_fraction: float = Field(default=0.05, ge=0.0, le=0.5)
    min_alpha: float = Field(default=0.6, ge=-1.0, le=1.0)
    """A batch whose Krippendorff's alpha falls under this raises a QA alert."""
    min_confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    """Consensus labels under this posterior confidence go to expert review."""
    consensus: Literal[
        "auto", "majority", "dawid-skene", "shrunk-dawid-skene", "one-coin", "gold-dawid-skene"
    ] = "auto"
    spammer_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    """Annotators whose spammer score exceeds this are flagged."""
    model_contradiction_threshold: float = Field(default=0.8, gt=0.5, le=1.0)
    """A model's probability of another class above which a label goes to an expert: the
    choosing model's prediction shown with the task, and the retrained model's out-of-sample
    prediction of a released label (``max_rechecks_per_round``)."""
    max_rechecks_per_round: int = Field(default=10, ge=0)
    """Released labels the retrained model contradicts that go back to an expert with each
    round's review, most confident contradiction first (0: none). Each costs one expert
    annotation and no label budget. Above 0 every strategy, random too, waits for the model of
    the round a batch builds on (it carries that model's doubts)."""
    assignment_timeout_seconds: float | None = Field(default=None, gt=0)
    """With annotators listed (blind overlap): a labeling task assigned to someone who has not
    answered it this long after it was given to them goes to another eligible annotator (the
    annotation bridge's reconciliation; README.md, "Abandoned tasks"). ``None``: never. In the
    shared project (no annotators listed) ``labelloop status`` names batches open longer."""


class SamplingConfig(_Section):
    strategy: SamplingStrategy = SamplingStrategy.HYBRID
    batch_size: int = Field(default=20, ge=1, le=10_000)
    random_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    """A random control slice of every batch, to measure active learning against random honestly."""
    stratify_by: str | None = None
    """Metadata field for the stratified strategy."""
    seed: int = 0
    max_open_tasks: int = Field(default=200, ge=1)
    low_watermark: int = Field(default=0, ge=0)
    """Create the next batch when open tasks fall to this many (0: when a batch completes)."""
    max_model_lag: int = Field(default=0, ge=0, le=20)
    """Batch *n* is chosen by the model trained on every labeling batch up to *n - 1 - lag*, and
    waits for it. 0: rounds are synchronous (the crew waits while QA, the exporter and the
    trainer finish a round: seconds); 1: the crew labels one batch while the model learns from
    the one before. 0 buys the most accuracy per label (``bench/README.md``)."""
    start: Literal["on_ingest", "on_command"] = "on_ingest"
    """``on_ingest``: the first batch is cut as soon as items arrive. ``on_command``: sampling
    waits for ``labelloop sampling start`` (ingest the pool first: the campaign is then
    reproducible, its first batch sees the whole pool)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.low_watermark >= self.max_open_tasks:
            raise ValueError("low_watermark must be smaller than max_open_tasks")
        if self.strategy is SamplingStrategy.STRATIFIED and not self.stratify_by:
            raise ValueError("the stratified strategy needs stratify_by (a metadata field)")
        return self


ExportFormat = Literal["jsonl", "csv", "parquet", "coco", "yolo", "conll"]
SplitName = Literal["train", "validation", "test"]


def _default_formats() -> list[ExportFormat]:
    return ["jsonl", "csv", "parquet"]


def _default_splits() -> dict[SplitName, float]:
    return {"train": 0.7, "validation": 0.15, "test": 0.15}


class ExportConfig(_Section):
    formats: list[ExportFormat] = Field(default_factory=_default_formats)
    every_n_labels: int = Field(default=100, ge=1)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    low_confidence: Literal["exclude", "weight"] = "exclude"
    splits: dict[SplitName, float] = Field(default_factory=_default_splits)

    @model_validator(mode="after")
    def _check(self) -> Self:
        total = sum(self.splits.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, they add up to {total:g}")
        if "train" not in self.splits:
            raise ValueError("splits need a train share")
        return self


class TrainingConfig(_Section):
    estimator: Literal[
        "logistic_regression", "kernel_logistic_regression", "linear_svm", "random_forest"
    ] = "logistic_regression"
    """``kernel_logistic_regression`` is a logistic regression on RBF kernel features: non-linear,
    for pixels and embeddings, with probabilities as calibrated as the linear model's."""
    min_new_labels: int = Field(default=20, ge=1)
    min_growth: float = Field(default=0.1, ge=0.0)
    """Retrain when labels grew by this fraction since the last model (or min_new_labels)."""
    promotion_tolerance: float = Field(default=0.01, ge=0.0, le=1.0)
    """A new model is promoted unless its macro-F1 (multi-label: micro-F1) is worse than the
    current one's by more, and significantly so."""
    multilabel_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Multi-label projects: a label is predicted when the model gives it at least this
    probability; the labels its F1 scores count, the predictions convergence compares, and the
    pre-annotations Label Studio shows."""
    tune_regularization: bool = True
    """Choose the estimator's regularization strength by cross-validation over the labels
    (logistic regression's ``C``, the linear SVM's ``alpha``) instead of scikit-learn's default:
    crowd labels are noisy, and the default fits the noise (``bench/README.md``)."""
    convergence_rounds: int = Field(default=3, ge=2)
    convergence_agreement: float = Field(default=0.99, ge=0.5, le=1.0)
    """Converged when consecutive models agree on this share of the pool for convergence_rounds."""
    random_state: int = 0


class ModelHookConfig(_Section):
    """A model the producer serves, asked for box predictions over HTTP (``bounding_boxes``).

    The trainer POSTs the unlabeled pool to ``<url>/predict`` in Label Studio's ML backend
    format after each dataset version (README.md, "Bounding boxes: what the loop does and does
    not"). The file names where the credentials are (an environment variable of the trainer, or
    a file it can read), never the credentials themselves."""

    url: str = Field(pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$")
    """The model's base URL (``/predict`` is appended); no user or password in it: use ``auth``."""
    timeout_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)
    """Per request; a request that takes longer counts as failed (and is retried)."""
    batch_size: int = Field(default=32, ge=1, le=1000)
    """Tasks per ``/predict`` request."""
    retries: int = Field(default=2, ge=0, le=10)
    """Further attempts of a failed request (timeouts, connection errors, 5xx, 429)."""
    auth: Literal["bearer", "basic"] | None = None
    """``bearer``: ``Authorization: Bearer <credentials>``; ``basic``: HTTP basic auth with
    credentials ``user:password`` (the ML backend's ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``)."""
    credentials_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the trainer's environment variable that holds the credentials."""
    credentials_file: str | None = Field(default=None, min_length=1)
    """Path (on the trainer) of a file that holds the credentials."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        sources = (self.credentials_env is not None) + (self.credentials_file is not None)
        if self.auth is not None and sources != 1:
            raise ValueError("auth needs exactly one of credentials_env or credentials_file")
        if self.auth is None and sources:
            raise ValueError("credentials_env or credentials_file without auth (bearer or basic)")
        return self


class BudgetConfig(_Section):
    max_labels: int | None = Field(default=None, ge=1)
    """Maximum number of items labeled (gold items excluded)."""
    max_annotations: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    hourly_rate: float = Field(default=0.0, ge=0)
    currency: str = "USD"


ROLES = ("annotator", "expert", "reviewer")
"""What a person in the ``annotators:`` list does (README.md, "Roles"): ``annotator`` labels
the tasks the bridge assigns them, ``expert`` answers expert review, ``reviewer`` oversees
(their answers never count)."""


class AnnotatorSpec(_Section):
    """A person who works in Label Studio: labelloop's id for them, their role, and the e-mail
    of their Label Studio account (``email``, or an ``id`` that is itself that e-mail)."""

    id: str = Field(min_length=1)
    role: Literal["annotator", "expert", "reviewer"] = "annotator"
    email: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ROLES:
            raise ValueError(f"unknown role {value!r}: one of {', '.join(ROLES)}")
        return value

    @property
    def login(self) -> str | None:
        """The e-mail that matches this person's Label Studio account, if any."""
        if self.email:
            return self.email.lower()
        return self.id.lower() if "@" in self.id else None


class SimulatedAnnotator(_Section):
    id: str = Field(min_length=1)
    behaviour: Literal["good", "confuser", "spammer", "constant", "adversary"] = "good"
    accuracy: float = Field(default=0.9, ge=0.0, le=1.0)
    role: Literal["annotator", "expert"] = "annotator"
    mean_lead_time_seconds: float = Field(default=20.0, gt=0)


class SimulationConfig(_Section):
    """The simulated annotator crew used by demos, tests and benchmarks (never real people)."""

    seed: int = 0
    annotators: list[SimulatedAnnotator] = Field(min_length=1)
    time_scale: float = Field(default=0.0, ge=0.0, le=10.0)
    """Wall seconds per simulated second of annotator lead time: 0 answers a batch at once;
    0.01 lets a crew whose answers take 10 s each deliver one every 0.1 s, so a demo shows the
    pace people would set (models train while annotators work)."""


class ProjectConfig(BaseModel):
    """One labeling project. ``labelloop project apply FILE`` stores it and tells the services."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str | None = None
    task_type: TaskType
    labels: LabelSchema
    data_fields: list[DataField] = Field(min_length=1)
    guidelines: str | None = None
    """Path to a markdown file (relative to the config file) with labeling guidelines."""
    guidelines_text: str | None = None
    """The guidelines' markdown, filled in from ``guidelines`` when the file is loaded."""
    quality: QualityConfig = Field(default_factory=QualityConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    annotators: list[AnnotatorSpec] = Field(default_factory=list)
    simulation: SimulationConfig | None = None
    model_hook: ModelHookConfig | None = None
    """A model the producer serves (``bounding_boxes`` only): its predictions pre-annotate the
    tasks and its scores rank the pool."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [f.name for f in self.data_fields]
        if len(set(names)) != len(names):
            raise ValueError(f"data_fields names must be unique: {names}")
        people = [a.id for a in self.annotators]
        if len(set(people)) != len(people):
            raise ValueError(f"annotators ids must be unique: {people}")
        kind = self.task_type.primary_kind
        if not any(f.kind is kind for f in self.data_fields):
            raise ValueError(
                f"task_type {self.task_type.value} needs a data field of kind {kind.value!r}"
            )
        formats = set(self.export.formats)
        if formats & {"coco", "yolo"} and self.task_type is not TaskType.BOUNDING_BOXES:
            raise ValueError("export formats coco and yolo are for bounding_boxes projects")
        if "conll" in formats and self.task_type is not TaskType.NER:
            raise ValueError("export format conll is for ner projects")
        if self.model_hook is not None and self.task_type is not TaskType.BOUNDING_BOXES:
            raise ValueError(
                "model_hook is for bounding_boxes projects (the trainer trains the others)"
            )
        return self

    @property
    def primary_field(self) -> DataField:
        """The data field the labeling UI centres on (first field of the task's kind)."""
        kind = self.task_type.primary_kind
        return next(f for f in self.data_fields if f.kind is kind)


class ProjectConfigError(ValueError):
    """A project file that cannot be used, with every problem named by its field path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid project configuration\n{lines}")


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `labelloop project init`)"
        problems.append(f"{loc}: {msg}")
    return problems


def parse_project(raw: Any, source: str = "<config>") -> ProjectConfig:
    """Validate an already-parsed mapping as a project configuration."""
    if not isinstance(raw, dict):
        raise ProjectConfigError(
            source, [f"(top level): expected a mapping, got {type(raw).__name__}"]
        )
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ProjectConfigError(source, _format_errors(exc)) from None


def load_project(path: str | Path) -> ProjectConfig:
    """Read, parse and validate a project YAML file; the guidelines file is read alongside."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProjectConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ProjectConfigError(str(path), [f"{where}not valid YAML"]) from None
    config = parse_project(raw, source=str(path))
    if config.guidelines and config.guidelines_text is None:
        guide = (path.parent / config.guidelines).resolve()
        try:
            text = guide.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProjectConfigError(
                str(path), [f"guidelines: cannot read {guide}: {exc.strerror}"]
            ) from None
        config = config.model_copy(update={"guidelines_text": text})
    return config


_SCAFFOLD = """\
# labelloop project: {name}
# Reference: README.md, "Project configuration". Every field below shows its default.
name: {name}
title: {title}
task_type: {task_type}          # text_classification | text_multilabel | ner | image_classification
                                 # | bounding_boxes | audio_classification | video_classification
labels:
  classes: [positive, negative, neutral]
data_fields:
  - name: text
    kind: text                   # text | image | audio | video | number | url
    max_length: 10000
guidelines: guidelines.md        # markdown shown to annotators in Label Studio
quality:
  overlap_fraction: 0.15         # share of each batch labeled by several annotators (IAA)
  annotators_per_overlapped_item: 3
  gold_fraction: 0.05            # honeypots with known labels mixed into each batch
  min_alpha: 0.6                 # Krippendorff's alpha under this raises a QA alert
  min_confidence: 0.7            # consensus under this goes to expert review
  consensus: auto                # auto | majority | dawid-skene | shrunk-dawid-skene | one-coin
                                 # | gold-dawid-skene
  model_contradiction_threshold: 0.8  # a model this sure of another class sends a label to review
  max_rechecks_per_round: 10     # released labels the retrained model doubts, back to an expert
sampling:
  strategy: hybrid               # random | stratified | diversity | least_confidence | margin
                                 # | entropy | hybrid
  batch_size: 20
  random_fraction: 0.0           # random control slice, to measure active learning honestly
  seed: 0
  max_open_tasks: 200
  max_model_lag: 0               # batch n is chosen by the model of round n-1-lag (0: synchronous)
  start: on_ingest               # on_ingest | on_command (wait for `labelloop sampling start`)
export:
  formats: [jsonl, csv, parquet]
  every_n_labels: 100
  splits: {{train: 0.7, validation: 0.15, test: 0.15}}
training:
  estimator: logistic_regression
  min_new_labels: 20
  tune_regularization: true      # regularization chosen by cross-validation over the labels
budget:
  max_labels: 1000
  hourly_rate: 20.0
"""


def scaffold_project(name: str, task_type: TaskType = TaskType.TEXT_CLASSIFICATION) -> str:
    """A commented starter configuration that validates as it is."""
    if task_type is not TaskType.TEXT_CLASSIFICATION:
        # keep the scaffold valid for any task type: adjust the data field kind
        kind = task_type.primary_kind.value
        text = _SCAFFOLD.format(name=name, title=name, task_type=task_type.value)
        return text.replace("name: text\n    kind: text", f"name: {kind}\n    kind: {kind}")
    return _SCAFFOLD.format(name=name, title=name, task_type=task_type.value)
