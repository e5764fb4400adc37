"""The JetStream layout: which stream captures which subjects, and the KV and object-store buckets.

Everything is named inside a ``Namespace`` (``labelloop`` by default) so that tests, and several
deployments sharing one NATS cluster, never see each other's messages.

A subject is ``<namespace>.<event subject>.<project>``: ``labelloop.batches.completed.digits``.
The project in the last token is what makes per-project permissions (a producer may publish
``labelloop.items.submitted.<its project>`` only), per-project ordering and partitioning replicas
by project (NATS subject mapping) possible. A consumer of an event for every project filters on
``labelloop.batches.completed.*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labelloop.events import ALL_EVENTS, Event, event_type

__all__ = [
    "KV_BUCKETS",
    "OBJECT_BUCKETS",
    "STREAMS",
    "BucketSpec",
    "Namespace",
    "StreamSpec",
    "split_subject",
    "subject_matches",
]

_DAY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One JetStream stream: a short name and the relative subject patterns it captures."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_seconds: float = 30 * _DAY
    duplicate_window_seconds: float = 3600.0
    """Publishes with the same ``Nats-Msg-Id`` inside this window are dropped by the server."""


@dataclass(frozen=True, slots=True)
class BucketSpec:
    name: str
    description: str
    history: int = 1
    max_bytes: int = -1


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("PROJECTS", ("projects.*.*",), "Project configurations as they are applied"),
    StreamSpec("ITEMS", ("items.*.*",), "Raw items in, ingested and rejected items out"),
    StreamSpec("BATCHES", ("batches.*.*",), "Labeling batches created and completed"),
    StreamSpec("ANNOTATIONS", ("annotations.*.*",), "Annotations from Label Studio or the crew"),
    StreamSpec(
        "QUALITY",
        ("labels.*.*", "qa.*.*", "review.*.*"),
        "Consensus labels, QA reports, alerts, reviews",
    ),
    StreamSpec(
        "MODELS", ("datasets.*.*", "models.*.*", "labeling.*.*"), "Dataset versions and models"
    ),
    StreamSpec("CONTROL", ("commands.*.*", "budget.*.*"), "Operator commands and budget signals"),
    StreamSpec(
        "DLQ",
        ("dlq.*.*",),
        "Dead letters: messages that could not be processed, with the reason",
        max_age_seconds=90 * _DAY,
        duplicate_window_seconds=24 * 3600.0,
    ),
)

KV_BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec("projects", "Project configurations by name", history=10),
    BucketSpec("state", "Service state: pools, batch ledgers, watermarks, counters", history=1),
)

OBJECT_BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec("catalog", "Items and their feature vectors, as the ingester stored them"),
    BucketSpec("sampler", "Batches as the sampler cut them"),
    BucketSpec("bridge", "Large event bodies of the annotation bridge"),
    BucketSpec("qa", "QA rounds: consensus, agreement, annotator histories"),
    BucketSpec("exporter", "Dataset versions: labels, splits, manifests"),
    BucketSpec("trainer", "Models, evaluations, pool scores"),
    BucketSpec("operator", "Large bodies of operator commands"),
)
"""The artefact areas: one object bucket per writer. An object's name starts with its area
(``trainer/digits/models/m0001.skops``), which is how readers find the bucket and how production
permissions let each service write, replace and purge its own objects and nobody else's
(:mod:`labelloop.artifacts`)."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """Prefixes every subject, stream and bucket of one labelloop deployment."""

    prefix: str = "labelloop"
    streams: tuple[StreamSpec, ...] = field(default=STREAMS)

    def __post_init__(self) -> None:
        if not self.prefix or not all(ch.isalnum() or ch in "_-" for ch in self.prefix):
            raise ValueError(
                f"namespace prefix must be alphanumeric (with _ or -): {self.prefix!r}"
            )

    def subject(self, event: type[Event] | Event, project: str | None = None) -> str:
        """The absolute subject of an event.

        Of an instance: its own project's subject. Of a class: the subject for ``project``, or,
        without one, the filter matching every project (``<prefix>.<event>.*``).
        """
        if project is None and isinstance(event, Event):
            project = event.project
        return f"{self.prefix}.{event.SUBJECT}.{project or '*'}"

    def relative(self, subject: str) -> str:
        """Strip the namespace from an absolute subject (``batches.completed.digits``)."""
        head = f"{self.prefix}."
        return subject[len(head) :] if subject.startswith(head) else subject

    def parse(self, subject: str) -> tuple[type[Event] | None, str | None]:
        """The event class and the project an absolute subject names (``None`` where unknown)."""
        event, project = split_subject(self.relative(subject))
        return event_type(event), project

    def stream_name(self, spec: StreamSpec) -> str:
        return f"{self._upper}_{spec.name}"

    def stream_subjects(self, spec: StreamSpec) -> list[str]:
        return [f"{self.prefix}.{pattern}" for pattern in spec.subjects]

    def stream_for(self, event: type[Event] | Event) -> StreamSpec:
        """The one stream that captures an event's subject."""
        probe = f"{event.SUBJECT}.project"
        matches = [s for s in self.streams if any(subject_matches(p, probe) for p in s.subjects)]
        if len(matches) != 1:
            raise LookupError(
                f"{event.SUBJECT!r} is captured by {len(matches)} streams, expected exactly one"
            )
        return matches[0]

    def kv_bucket(self, name: str) -> str:
        return f"{self.prefix}_{name}".replace("-", "_")

    def object_bucket(self, area: str) -> str:
        """The object bucket of an artefact area (``labelloop_artifacts_trainer``)."""
        return f"{self.prefix}_artifacts_{area}".replace("-", "_")

    def durable(self, service: str, event: type[Event]) -> str:
        """The durable consumer name shared by every replica of a service for one event."""
        safe = event.SUBJECT.replace(".", "_")
        return f"{self.prefix}_{service}_{safe}".replace("-", "_")

    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace("-", "_")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching for ``*`` and ``>`` wildcards."""
    p_parts, s_parts = pattern.split("."), subject.split(".")
    for i, part in enumerate(p_parts):
        if part == ">":
            return len(s_parts) > i
        if i >= len(s_parts) or part not in ("*", s_parts[i]):
            return False
    return len(p_parts) == len(s_parts)


def split_subject(relative: str) -> tuple[str, str | None]:
    """``batches.completed.digits`` -> (``batches.completed``, ``digits``)."""
    head, dot, project = relative.rpartition(".")
    if not dot or "." not in head:
        return relative, None
    return head, project


def captured_subjects() -> dict[str, str]:
    """Every event subject mapped to the stream that captures it (for checks and docs)."""
    ns = Namespace()
    return {cls.SUBJECT: ns.stream_for(cls).name for cls in ALL_EVENTS}
