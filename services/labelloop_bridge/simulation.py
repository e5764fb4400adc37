"""The simulated crew backend: answers batches as Label Studio's annotators would, from the
project's ``simulation:`` config. A SIMULATION, named so everywhere: the annotations carry
``AnnotationSource.SIMULATION``, log lines say "simulated", metrics carry ``backend="simulated"``.

Answers are deterministic by seed (see :mod:`labelloop_bridge.domain.crew`); event ids derive from
the batch, so a redelivered ``BatchCreated`` republishes the same events, which JetStream drops,
and the ledger (``completion_published``) stops it after the duplicate window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from labelloop.events import (
    Annotation,
    AnnotationSource,
    AnnotationsSubmitted,
    BatchCreated,
    Event,
    deterministic_id,
)
from labelloop.project import ProjectConfig

from .completion import completion_event
from .domain.crew import answer_batch
from .domain.ledger import BatchLedger
from .metrics import BridgeMetrics
from .store import BridgeState

__all__ = ["NoSimulationConfig", "SimulatedCrew", "paced"]

log = logging.getLogger("labelloop.bridge.simulation")

Publish = Callable[[Event], Awaitable[object]]


class NoSimulationConfig(ValueError):
    """The simulated backend got a batch of a project without a ``simulation:`` section."""


class SimulatedCrew:
    def __init__(
        self, state: BridgeState, publish: Publish, metrics: BridgeMetrics, *, chunk_size: int
    ) -> None:
        self._state = state
        self._publish = publish
        self._metrics = metrics
        self._chunk_size = chunk_size

    async def place(self, batch: BatchCreated, config: ProjectConfig) -> int:
        """Answer a whole batch; the number of simulated annotations published."""
        crew = config.simulation
        if crew is None:
            raise NoSimulationConfig(
                f"project {config.name!r} has no simulation: section; the simulated backend "
                "cannot answer its batches"
            )
        review = batch.kind == "review"
        plan = answer_batch(
            batch.tasks,
            crew,
            batch_id=batch.batch_id,
            task_type=config.task_type,
            classes=config.labels.classes,
            review=review,
            excluded=batch.excluded_annotators,
        )
        answered: dict[str, set[str]] = {}
        for answer in plan.answers:
            answered.setdefault(answer.item_id, set()).add(answer.annotator_id)
        ledger = await self._state.create_ledger(
            batch.project,
            BatchLedger.of_batch(
                batch,
                # a task wanting more annotators than the crew has is answered by all of them
                {t.item_id: max(1, len(answered.get(t.item_id, ()))) for t in batch.tasks},
            ),
        )
        if ledger.completion_published:
            log.info("simulated crew: batch %s already answered", batch.batch_id)
            return 0
        if plan.missing_truth:
            self._metrics.simulation_missing_truth.inc(plan.missing_truth)
            log.warning(
                "simulated crew: %d tasks of batch %s have no simulation_truth; answered at random",
                plan.missing_truth,
                batch.batch_id,
            )
        if plan.short_handed or plan.used_fallback_crew:
            log.warning(
                "simulated crew: batch %s wanted more %s than the crew has (%d tasks short-handed)",
                batch.batch_id,
                "experts" if review else "annotators",
                plan.short_handed,
            )
        annotations = [
            Annotation(
                annotation_id=deterministic_id("sim", batch.batch_id, a.item_id, a.annotator_id),
                item_id=a.item_id,
                annotator_id=a.annotator_id,
                value=a.value,
                batch_id=batch.batch_id,
                lead_time_seconds=a.lead_time_seconds,
                created_at=batch.occurred_at + timedelta(seconds=a.lead_time_seconds),
                updated_at=batch.occurred_at + timedelta(seconds=a.lead_time_seconds),
                source=AnnotationSource.SIMULATION,
                is_expert=a.is_expert,
            )
            for a in plan.answers
        ]
        await self._deliver(batch, annotations, crew.time_scale)
        self._metrics.tasks_imported.labels("simulated", batch.kind).inc(len(batch.tasks))
        self._metrics.annotations(batch.project, "simulation", "simulated", len(annotations))
        for a in annotations:
            if a.lead_time_seconds is not None:
                self._metrics.lead_time.labels("simulated").observe(a.lead_time_seconds)

        def record(stored: BatchLedger) -> None:
            stored.imported = True
            for a in annotations:
                stored.record(
                    a.item_id, a.annotation_id, a.annotator_id, cancelled=False, deleted=False
                )

        change = await self._state.change_ledger(
            batch.project, batch.batch_id, record, complete_when=lambda s: s.is_complete()
        )
        assert change is not None, "the ledger was created above"
        if change.ledger.completed and not change.ledger.completion_published:
            await self._publish(completion_event(batch.project, change.ledger, annotations))
            await self._state.close_batch(batch.project, batch.batch_id)
            self._metrics.batches_completed.labels("simulated", batch.kind).inc()
        log.info(
            "simulated crew answered batch %s (round %d): %d tasks, %d annotations "
            "(SIMULATION, seed %d%s)",
            batch.batch_id,
            batch.round,
            len(batch.tasks),
            len(annotations),
            crew.seed,
            f", excluded {', '.join(batch.excluded_annotators)}"
            if batch.excluded_annotators
            else "",
        )
        return len(annotations)

    async def _deliver(
        self, batch: BatchCreated, annotations: list[Annotation], time_scale: float
    ) -> None:
        """Publish the answers: at once, or paced by each annotator's lead times.

        Paced, each simulated annotator works through their tasks one after the other, and an
        answer is published when that annotator would have submitted it (``time_scale`` seconds
        of wall time per simulated second). The answers are the same either way; only when they
        arrive differs.
        """
        schedule: list[tuple[float, list[Annotation]]]
        if time_scale <= 0:
            schedule = [
                (0.0, annotations[i : i + self._chunk_size])
                for i in range(0, len(annotations), self._chunk_size)
            ]
        else:
            schedule = paced(annotations, time_scale)
        started = time.monotonic()
        for index, (due, chunk) in enumerate(schedule):
            wait = due - (time.monotonic() - started)
            if wait > 0:
                await asyncio.sleep(wait)
            await self._publish(
                AnnotationsSubmitted(
                    event_id=deterministic_id("simulated-annotations", batch.batch_id, index),
                    project=batch.project,
                    annotations=chunk,
                )
            )


def paced(
    annotations: list[Annotation], time_scale: float, *, window: float = 0.05
) -> list[tuple[float, list[Annotation]]]:
    """Answers grouped by when they are due (wall seconds after the batch arrived): each
    annotator answers in order, one task after the other; answers due within ``window`` of each
    other travel together."""
    clock: dict[str, float] = {}
    due: list[tuple[float, str, Annotation]] = []
    for a in annotations:
        at = clock.get(a.annotator_id, 0.0) + (a.lead_time_seconds or 0.0) * time_scale
        clock[a.annotator_id] = at
        due.append((at, a.annotation_id, a))
    due.sort(key=lambda d: (d[0], d[1]))
    groups: list[tuple[float, list[Annotation]]] = []
    for at, _, a in due:
        if groups and at - groups[-1][0] <= window:
            groups[-1][1].append(a)
        else:
            groups.append((at, [a]))
    return groups
