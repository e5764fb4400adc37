"""Backpressure: whether a new labeling batch may be created now, and how many tasks it may hold."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from labelloop.project import SamplingConfig

__all__ = ["Trigger", "Verdict", "batch_room"]


class Trigger(StrEnum):
    """What asks for a batch."""

    ITEMS_INGESTED = "items_ingested"
    BATCH_COMPLETED = "batch_completed"
    ANNOTATIONS = "annotations"
    MODEL_TRAINED = "model_trained"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Verdict:
    tasks: int
    """How many tasks the next batch may hold (0: no batch now)."""
    reason: str
    """Why (a small fixed set: ``ok``, ``batch_open``, ``above_watermark``, ``full``)."""


def batch_room(
    sampling: SamplingConfig, trigger: Trigger, *, open_tasks: int, open_batches: int
) -> Verdict:
    """Decide whether ``trigger`` creates a batch, given the project's open labeling work.

    * new items create a batch only when no labeling batch is open (the first batch, or the
      pool ran dry before);
    * annotations create one when open tasks fall to ``low_watermark`` (when it is above 0);
    * a completed batch, a new model or an operator create one whenever there is room;
    * never more than ``max_open_tasks`` open tasks in all.
    """
    room = min(sampling.batch_size, sampling.max_open_tasks - open_tasks)
    if trigger is Trigger.ITEMS_INGESTED and open_batches > 0:
        return Verdict(0, "batch_open")
    if trigger is Trigger.ANNOTATIONS and (
        sampling.low_watermark == 0 or open_tasks > sampling.low_watermark
    ):
        return Verdict(0, "above_watermark")
    if room <= 0:
        return Verdict(0, "full")
    return Verdict(room, "ok")
