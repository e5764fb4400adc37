"""The simulated annotator crew: seeded, confusable stand-ins for people (never real annotations).

Each simulated annotator has a behaviour:

* ``good``: the true label with probability ``accuracy``, otherwise a uniformly chosen wrong class.
* ``confuser``: the true label with probability ``accuracy``, otherwise always the same wrong class
  for a given truth (the next class in ``labels.classes``, cyclically): a systematic confusion.
* ``spammer``: a uniformly random class, whatever the item (``accuracy`` unused).
* ``constant``: one class for everything, fixed per annotator by the seed (``accuracy`` unused).
* ``adversary``: always a wrong class, the cyclic neighbour of the truth, so that a model of
  annotator confusion (Dawid-Skene) can learn to invert it (``accuracy`` unused).

Multi-label truths apply the behaviour per class; region truths (spans, boxes) per region.
Lead times are log-normal around ``mean_lead_time_seconds``; spammers and constant labelers click
four times faster (a signal QA can use).

Determinism: every random draw comes from a generator seeded by (crew seed, batch id, item id,
annotator id), so answers do not depend on the order or timing of messages, and re-running a batch
reproduces it exactly.

The truth of an item is read from ``task.metadata["simulation_truth"]`` (set by the demo's ingest;
a real crew never sees it), falling back to ``task.gold_label``. An item without truth is treated
as one nobody can get right: truth-following annotators answer uniformly at random.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import JsonValue

from labelloop.events import BatchTask, LabelValue
from labelloop.project import SimulatedAnnotator, SimulationConfig, TaskType

__all__ = ["TRUTH_KEY", "CrewAnswer", "CrewPlan", "answer_batch", "simulation_truth"]

TRUTH_KEY = "simulation_truth"
_FAST_BEHAVIOURS = {"spammer", "constant"}
_LEAD_TIME_SIGMA = 0.5


@dataclass(frozen=True, slots=True)
class CrewAnswer:
    item_id: str
    annotator_id: str
    value: LabelValue
    lead_time_seconds: float
    is_expert: bool


@dataclass(frozen=True, slots=True)
class CrewPlan:
    answers: list[CrewAnswer]
    missing_truth: int
    """Tasks answered without a known truth."""
    short_handed: int
    """Tasks that wanted more distinct annotators than the crew has (answered by all it has)."""
    used_fallback_crew: bool
    """A review batch answered by ordinary annotators because the crew has no expert."""


def simulation_truth(task: BatchTask) -> LabelValue | None:
    """The truth the simulated crew answers from (``metadata.simulation_truth``, else gold)."""
    truth = task.metadata.get(TRUTH_KEY)
    if isinstance(truth, str):
        return truth
    if isinstance(truth, list) and all(isinstance(v, str) for v in truth):
        return [str(v) for v in truth]
    if isinstance(truth, list) and all(isinstance(v, dict) for v in truth):
        return [dict(v) for v in truth if isinstance(v, dict)]
    return task.gold_label


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\x1f")
    return np.random.default_rng(int.from_bytes(digest.digest(), "little"))


def answer_batch(
    tasks: Sequence[BatchTask],
    crew: SimulationConfig,
    *,
    batch_id: str,
    task_type: TaskType,
    classes: Sequence[str],
    review: bool = False,
    excluded: Collection[str] = (),
) -> CrewPlan:
    """The crew's answers to a batch: ``annotations_required`` distinct annotators per task.

    Annotators in ``excluded`` (flagged by QA) get no task, unless nobody else is left."""
    role = "expert" if review else "annotator"
    eligible = [a for a in crew.annotators if a.role == role]
    fallback = False
    if not eligible:
        eligible, fallback = list(crew.annotators), True
    kept = [a for a in eligible if a.id not in excluded]
    eligible = kept or eligible
    answers: list[CrewAnswer] = []
    missing = short = 0
    for task in tasks:
        truth = simulation_truth(task)
        missing += truth is None
        wanted = task.annotations_required
        short += wanted > len(eligible)
        order = _rng(crew.seed, "assign", batch_id, task.item_id).permutation(len(eligible))
        for index in order[: min(wanted, len(eligible))]:
            annotator = eligible[int(index)]
            rng = _rng(crew.seed, "answer", batch_id, task.item_id, annotator.id)
            value = _answer(annotator, truth, task_type, list(classes), rng, crew.seed)
            answers.append(
                CrewAnswer(
                    item_id=task.item_id,
                    annotator_id=annotator.id,
                    value=value,
                    lead_time_seconds=_lead_time(annotator, rng),
                    is_expert=review or annotator.role == "expert",
                )
            )
    return CrewPlan(answers, missing, short, fallback)


def _lead_time(annotator: SimulatedAnnotator, rng: np.random.Generator) -> float:
    mean = annotator.mean_lead_time_seconds
    if annotator.behaviour in _FAST_BEHAVIOURS:
        mean /= 4.0
    mu = math.log(mean) - _LEAD_TIME_SIGMA**2 / 2
    return round(float(rng.lognormal(mu, _LEAD_TIME_SIGMA)), 3)


def _answer(
    annotator: SimulatedAnnotator,
    truth: LabelValue | None,
    task_type: TaskType,
    classes: list[str],
    rng: np.random.Generator,
    seed: int,
) -> LabelValue:
    constant = classes[int(_rng(seed, "constant", annotator.id).integers(len(classes)))]
    if task_type.is_classification and not task_type.is_multilabel:
        known = truth if isinstance(truth, str) and truth in classes else None
        return _one_class(annotator, known, classes, rng, constant)
    if task_type.is_multilabel:
        known_set = [str(v) for v in truth] if isinstance(truth, list) else None
        return _multilabel(annotator, known_set, classes, rng, constant)
    regions = [r for r in truth if isinstance(r, dict)] if isinstance(truth, list) else []
    out: list[dict[str, JsonValue]] = []
    for region in regions:
        label = region.get("label")
        known = label if isinstance(label, str) and label in classes else None
        if annotator.behaviour == "good" and rng.random() >= annotator.accuracy:
            continue  # a good annotator's mistake on regions: a missed region
        new_label = (
            known
            if annotator.behaviour == "good"
            else _one_class(annotator, known, classes, rng, constant)
        )
        out.append({**region, "label": new_label})
    return out


def _neighbour(label: str, classes: list[str]) -> str:
    return classes[(classes.index(label) + 1) % len(classes)]


def _one_class(
    annotator: SimulatedAnnotator,
    truth: str | None,
    classes: list[str],
    rng: np.random.Generator,
    constant: str,
) -> str:
    behaviour = annotator.behaviour
    draw = rng.random()
    if behaviour == "constant":
        return constant
    if behaviour == "spammer" or truth is None:
        return classes[int(rng.integers(len(classes)))]
    if behaviour == "adversary":
        return _neighbour(truth, classes) if len(classes) > 1 else truth
    if draw < annotator.accuracy or len(classes) == 1:
        return truth
    if behaviour == "confuser":
        return _neighbour(truth, classes)
    wrong = [c for c in classes if c != truth]
    return wrong[int(rng.integers(len(wrong)))]


def _multilabel(
    annotator: SimulatedAnnotator,
    truth: list[str] | None,
    classes: list[str],
    rng: np.random.Generator,
    constant: str,
) -> list[str]:
    behaviour = annotator.behaviour
    draws = rng.random(len(classes))
    if behaviour == "constant":
        return [constant]
    if behaviour == "spammer" or truth is None:
        return [c for c, u in zip(classes, draws, strict=True) if u < 0.5]
    if behaviour == "adversary":
        return [c for c in classes if c not in truth]
    if behaviour == "confuser":
        chosen = {
            _neighbour(c, classes) if u >= annotator.accuracy else c
            for c, u in zip(classes, draws, strict=True)
            if c in truth
        }
        return [c for c in classes if c in chosen]
    return [
        c for c, u in zip(classes, draws, strict=True) if (c in truth) == (u < annotator.accuracy)
    ]
