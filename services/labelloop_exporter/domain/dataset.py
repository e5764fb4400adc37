"""From the current labels to a dataset version: the table, its checks, its files and manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labelloop.events import DatasetExported, deterministic_id
from labelloop.project import ProjectConfig, TaskType
from labelloop_exporter.domain.fold import LabelFold, fold_table
from labelloop_exporter.domain.formats import (
    render_coco,
    render_conll,
    render_csv,
    render_jsonl,
    render_parquet,
    render_yolo,
    table_schema,
)
from labelloop_exporter.domain.labels import CurrentLabel, label_json
from labelloop_exporter.domain.manifest import (
    BatchAgreement,
    build_manifest,
    manifest_bytes,
    sha256,
)
from labelloop_exporter.domain.table import ItemData, build_table, data_column
from labelloop_exporter.domain.validation import Problem, ValidationResult, validate

__all__ = [
    "ALWAYS",
    "DATASET_FILE",
    "LABELS_FILE",
    "MANIFEST_FILE",
    "Prepared",
    "Rendered",
    "dataset_event",
    "formats_for",
    "prepare",
    "render",
]

DATASET_FILE = "dataset.parquet"
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.parquet"
"""The label columns of a version, shared in the object store for the trainer (no item data:
that is in the item catalog, once)."""
ALWAYS = ("parquet",)
"""Parquet is always written: the trainer and ``labelloop datasets`` read it."""

_BASE = {"jsonl": "dataset.jsonl", "csv": "dataset.csv", "parquet": DATASET_FILE}
_NEEDS = {"coco": TaskType.BOUNDING_BOXES, "yolo": TaskType.BOUNDING_BOXES, "conll": TaskType.NER}


@dataclass(frozen=True, slots=True)
class Prepared:
    validation: ValidationResult
    data_columns: tuple[str, ...]
    formats: tuple[str, ...]
    content_sha256: str
    """Fingerprint of the published rows (independent of version id and time)."""
    format_problems: tuple[Problem, ...] = ()
    """Formats asked for that this project cannot have: nothing is written."""
    jsonl: bytes = field(default=b"", repr=False)
    """The rows as JSON lines, rendered once: the fingerprint is their sha256, and the
    ``jsonl`` format writes them as they are."""

    @property
    def ok(self) -> bool:
        return not self.format_problems

    def reason(self) -> str:
        return "; ".join(str(p) for p in self.format_problems)


@dataclass(frozen=True, slots=True)
class Rendered:
    files: dict[str, bytes]
    """Relative path -> content, manifest included."""
    manifest: dict[str, Any]
    manifest_sha256: str


def _fractions(config: ProjectConfig) -> dict[str, float]:
    return {str(name): share for name, share in config.export.splits.items()}


def formats_for(
    config: ProjectConfig, requested: Sequence[str] | None
) -> tuple[list[str], list[Problem]]:
    """The formats to write (requested, else the project's) and the ones this task cannot have."""
    wanted = list(requested) if requested else list(config.export.formats)
    known = {*_BASE, *_NEEDS}
    problems = []
    bad = sorted({f for f in wanted if f not in known})
    if bad:
        problems.append(Problem("unsupported_format", f"unknown formats {bad}"))
    wrong = sorted({f for f in wanted if f in _NEEDS and _NEEDS[f] is not config.task_type})
    if wrong:
        problems.append(
            Problem("unsupported_format", f"{wrong} do not apply to {config.task_type.value}")
        )
    ordered = [f for f in (*_BASE, *_NEEDS) if f in wanted or f in ALWAYS]
    return ordered, problems


def prepare(
    labels: Mapping[str, CurrentLabel],
    items: Mapping[str, ItemData] | None,
    config: ProjectConfig,
    *,
    salt: str,
    formats: Sequence[str] | None = None,
    fingerprint: bool = True,
) -> Prepared:
    """Build and check the table; ``ok`` is false when the formats asked for cannot be written.
    ``fingerprint``: render the rows as JSON lines and hash them (a version's); without it, the
    rows only (a round's delta, which no manifest fingerprints). ``labels``: a dict, or a
    :class:`~labelloop_exporter.domain.fold.LabelFold`, whose rows keep their items' data
    (``items`` ``None``: the data the fold kept)."""
    chosen, format_problems = formats_for(config, formats)
    rows = labels.table() if isinstance(labels, LabelFold) else fold_table(labels)
    table = build_table(
        rows,
        items,
        [f.name for f in config.data_fields],
        salt=salt,
        fractions=_fractions(config),
    )
    result = validate(
        table.rows,
        task_type=config.task_type,
        classes=config.labels.classes,
        min_confidence=config.export.min_confidence,
        low_confidence=config.export.low_confidence,
        missing_items=table.missing_items,
        formats=chosen,
    )
    jsonl = render_jsonl(result.rows, table.data_columns) if fingerprint else b""
    return Prepared(
        result,
        table.data_columns,
        tuple(chosen),
        sha256(jsonl) if fingerprint else "",
        tuple(format_problems),
        jsonl=jsonl,
    )


def _changes(prepared: Prepared, parent_labels: Mapping[str, str] | None) -> tuple[int, int]:
    rows = prepared.validation.rows
    if parent_labels is None:
        return len(rows), 0
    new = changed = 0
    for item_id, value in zip(rows["item_id"], rows["label"], strict=True):
        before = parent_labels.get(item_id)
        if before is None:
            new += 1
        elif before != label_json(value):
            changed += 1
    return new, changed


def render(
    prepared: Prepared,
    config: ProjectConfig,
    *,
    version: str,
    parent_version: str | None,
    parent_labels: Mapping[str, str] | None,
    created_at: datetime,
    salt: str,
    agreement: Mapping[str, BatchAgreement],
    round_number: int = 1,
    revisions: Mapping[int, int] | None = None,
) -> Rendered:
    """The files of one version (data files first, then the manifest that lists their sha256)."""
    if not prepared.ok:
        raise ValueError(f"cannot render this dataset: {prepared.reason()}")
    rows = prepared.validation.rows
    columns = prepared.data_columns
    primary = data_column(config.primary_field.name)
    classes = config.labels.classes
    files: dict[str, bytes] = {}
    for fmt in prepared.formats:
        if fmt == "jsonl":  # what the fingerprint hashed: rendered once
            files[_BASE[fmt]] = prepared.jsonl or render_jsonl(rows, columns)
        elif fmt == "csv":
            files[_BASE[fmt]] = render_csv(rows, columns)
        elif fmt == "parquet":
            files[_BASE[fmt]] = render_parquet(rows, columns)
        elif fmt == "coco":
            files.update(render_coco(rows, classes, primary))
        elif fmt == "yolo":
            files.update(render_yolo(rows, classes, primary))
        elif fmt == "conll":
            files.update(render_conll(rows, primary))
    n_new, n_changed = _changes(prepared, parent_labels)
    kept = set(prepared.validation.rows["item_id"])
    n_removed = len(set(parent_labels or {}) - kept)
    manifest = build_manifest(
        project=config.name,
        version=version,
        parent_version=parent_version,
        created_at=created_at,
        task_type=config.task_type.value,
        rows=rows,
        classes=classes,
        expected_distribution=config.labels.expected_distribution,
        fractions=_fractions(config),
        salt=salt,
        min_confidence=config.export.min_confidence,
        low_confidence=config.export.low_confidence,
        excluded_low_confidence=prepared.validation.excluded_low_confidence,
        weighted_low_confidence=prepared.validation.weighted_low_confidence,
        n_new_rows=n_new,
        n_changed_rows=n_changed,
        content_sha256=prepared.content_sha256,
        files=files,
        schema=table_schema(columns),
        formats=prepared.formats,
        agreement=agreement,
        round_number=round_number,
        revisions=revisions or {},
        n_removed_rows=n_removed,
        excluded=[
            {"reason": p.code, "message": p.message, "item_ids": sorted(p.item_ids)}
            for p in prepared.validation.problems
        ],
    )
    data = manifest_bytes(manifest)
    files[MANIFEST_FILE] = data
    return Rendered(files=files, manifest=manifest, manifest_sha256=sha256(data))


def dataset_event(
    manifest: Mapping[str, Any],
    *,
    path: str,
    manifest_sha256: str,
    dataset_ref: str | None = None,
    labels_sha256: str | None = None,
    request_id: str | None = None,
) -> DatasetExported:
    """The announcement of a version, from its manifest (the same version, the same event id;
    an operator's request for it gets an announcement of its own)."""
    natural = (manifest["project"], manifest["version"])
    return DatasetExported(
        event_id=deterministic_id(
            "dataset-exported", *natural, *([request_id] if request_id else [])
        ),
        project=manifest["project"],
        version=manifest["version"],
        round=int(manifest.get("round") or 1),
        parent_version=manifest["parent_version"],
        path=path,
        n_rows=manifest["n_rows"],
        n_new_rows=manifest["n_new_rows"],
        split_sizes=dict(manifest["splits"]["sizes"]),
        class_counts=dict(manifest["class_counts"]),
        formats=list(manifest["formats"]),
        manifest_sha256=manifest_sha256,
        dataset_ref=dataset_ref,
        labels_sha256=labels_sha256,
        request_id=request_id,
        revisions={str(r): int(k) for r, k in (manifest.get("revisions") or {}).items()},
    )
