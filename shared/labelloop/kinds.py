"""The kinds a project names: task types, data field kinds, sampling strategies.

Plain enums without pydantic or YAML, so that what only needs the names (the CLI building its
commands, ``labelloop --help``) does not pay for the configuration models
(``labelloop.project`` re-exports them).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DataKind", "SamplingStrategy", "TaskType"]


class TaskType(StrEnum):
    TEXT_CLASSIFICATION = "text_classification"
    TEXT_MULTILABEL = "text_multilabel"
    NER = "ner"
    IMAGE_CLASSIFICATION = "image_classification"
    BOUNDING_BOXES = "bounding_boxes"
    AUDIO_CLASSIFICATION = "audio_classification"
    VIDEO_CLASSIFICATION = "video_classification"

    @property
    def is_classification(self) -> bool:
        """One or more class names per item (as opposed to regions: spans or boxes)."""
        return self not in {TaskType.NER, TaskType.BOUNDING_BOXES}

    @property
    def is_multilabel(self) -> bool:
        return self is TaskType.TEXT_MULTILABEL

    @property
    def primary_kind(self) -> DataKind:
        """The kind of data field the labeling UI needs for this task type."""
        return _PRIMARY_KIND[self]


class DataKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    NUMBER = "number"
    URL = "url"


_PRIMARY_KIND = {
    TaskType.TEXT_CLASSIFICATION: DataKind.TEXT,
    TaskType.TEXT_MULTILABEL: DataKind.TEXT,
    TaskType.NER: DataKind.TEXT,
    TaskType.IMAGE_CLASSIFICATION: DataKind.IMAGE,
    TaskType.BOUNDING_BOXES: DataKind.IMAGE,
    TaskType.AUDIO_CLASSIFICATION: DataKind.AUDIO,
    TaskType.VIDEO_CLASSIFICATION: DataKind.VIDEO,
}


class SamplingStrategy(StrEnum):
    RANDOM = "random"
    STRATIFIED = "stratified"
    DIVERSITY = "diversity"
    LEAST_CONFIDENCE = "least_confidence"
    MARGIN = "margin"
    ENTROPY = "entropy"
    HYBRID = "hybrid"
