"""The sampler's use cases: make a batch, close one, follow progress, note models and stops.

Every change to a project's ledger is a compare-and-swap on ``sampler.<project>.ledger``: a
batch exists once the ledger names it. The batch id comes from the triggering event, so a
redelivered trigger finds its batch in the ledger and republishes it (same event id: JetStream
drops the copy) instead of making a second one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from labelloop.events import (
    Annotation,
    BatchCreated,
    BatchTask,
    BudgetExhausted,
    Event,
    ItemsIngested,
    Prediction,
    ReviewRequested,
    deterministic_id,
)
from labelloop.project import ProjectConfig, SamplingStrategy
from labelloop.stores import KeyValue, kv_update

from .domain.backpressure import Trigger, batch_room
from .domain.batching import compose_batch, gold_count
from .domain.budget import BudgetRoom, budget_room, budget_used, estimated_cost
from .domain.ledger import Ledger
from .domain.progress import SeenAnnotations, progress_of
from .domain.selection import select
from .metrics import SamplerMetrics
from .pools import PoolStore, ProjectPool

__all__ = ["Sampler"]


def _ledger_key(project: str) -> str:
    return f"sampler.{project}.ledger"


def _progress_key(project: str, batch_id: str) -> str:
    return f"sampler.{project}.progress.{batch_id}"


class _Conflict(Exception):
    """The ledger changed under us: read it again."""


@dataclass
class Sampler:
    state: Callable[[], KeyValue]
    pools: PoolStore
    publish: Callable[[Event], Awaitable[object]]
    metrics: SamplerMetrics
    prefilter_factor: int = 10
    max_cas_attempts: int = 20

    # ------------------------------------------------------------------ triggers

    async def items_ingested(self, event: ItemsIngested, project: ProjectConfig) -> None:
        await self.pools.record(event)
        await self.make_batch(project, Trigger.ITEMS_INGESTED, event.event_id)

    async def batch_completed(self, project: ProjectConfig, batch_id: str, trigger_id: str) -> None:
        await self._change(project.name, lambda ledger: ledger.with_closed(batch_id))
        await self.make_batch(project, Trigger.BATCH_COMPLETED, trigger_id)

    async def model_trained(
        self, project: ProjectConfig, version: str, scores_ref: str | None, trigger_id: str
    ) -> None:
        await self._change(project.name, lambda ledger: ledger.with_model(version, scores_ref))
        await self.make_batch(project, Trigger.MODEL_TRAINED, trigger_id)

    async def converged(self, project: str, reason: str) -> None:
        await self._change(
            project, lambda ledger: ledger if ledger.converged else ledger.with_converged(reason)
        )

    async def annotations(
        self, project: ProjectConfig, annotations: list[Annotation], trigger_id: str
    ) -> None:
        """Follow open batches' progress (for the low watermark and the cost estimate)."""
        ledger = await self._read(project.name)
        by_batch: dict[str, list[Annotation]] = defaultdict(list)
        for a in annotations:
            if a.batch_id is not None and a.batch_id in ledger.open:
                by_batch[a.batch_id].append(a)
        for batch_id, group in by_batch.items():
            batch = await self.pools.batch(project.name, batch_id, ledger.open[batch_id].nonce)
            required = {t.item_id: t.annotations_required for t in batch.tasks}
            seen = await self._merge_seen(_progress_key(project.name, batch_id), group)
            progress = progress_of(required, seen)
            await self._change(
                project.name,
                lambda ledger, b=batch_id, p=progress: ledger.with_progress(  # type: ignore[misc]
                    b, done=p.done, lead_seconds=p.lead_seconds, lead_count=p.lead_count
                ),
            )
        if by_batch:
            await self.make_batch(project, Trigger.ANNOTATIONS, trigger_id)

    # ------------------------------------------------------------------ batches

    async def make_batch(self, project: ProjectConfig, trigger: Trigger, trigger_id: str) -> None:
        """Create the batch this trigger calls for, if any (at most once per trigger)."""
        batch_id = deterministic_id("batch", project.name, trigger_id)
        for _ in range(self.max_cas_attempts):
            try:
                await self._try_make(project, trigger, batch_id)
                return
            except _Conflict:
                self.metrics.conflicts.inc()
        raise RuntimeError(f"ledger of {project.name!r} kept changing: retry later")

    async def review(self, project: ProjectConfig, event: ReviewRequested) -> None:
        """Items QA sent back become a ``review`` batch for experts (one annotation each)."""
        batch_id = deterministic_id("review", project.name, event.event_id)
        for _ in range(self.max_cas_attempts):
            try:
                await self._try_review(project, event, batch_id)
                return
            except _Conflict:
                self.metrics.conflicts.inc()
        raise RuntimeError(f"ledger of {project.name!r} kept changing: retry later")

    async def _try_make(self, project: ProjectConfig, trigger: Trigger, batch_id: str) -> None:
        name = project.name
        entry = await self.state().get(_ledger_key(name))
        ledger = Ledger.decode(entry.value if entry else None)
        if ledger.has_batch(batch_id):
            await self._republish(name, batch_id, ledger)
            return
        if ledger.exhausted:
            room = budget_room(
                project.budget,
                labels_used=ledger.labels_used,
                annotations_used=ledger.annotations_used,
                mean_lead_seconds=ledger.mean_lead_seconds,
            )
            if room.exhausted:
                # said again on every trigger: a publish lost after the flag was committed is
                # repaired, and the fixed event id keeps the stream free of duplicates
                await self.publish(_exhausted_event(project, ledger, ledger.exhausted))
                self.metrics.skipped.labels(reason="stopped").inc()
                return
            # the operator raised the budget (`labelloop project apply`): sampling resumes
            ledger = ledger.with_exhausted(None)
        if ledger.converged:
            self.metrics.skipped.labels(reason="stopped").inc()
            return
        verdict = batch_room(
            project.sampling,
            trigger,
            open_tasks=ledger.open_tasks(),
            open_batches=ledger.open_batches(),
        )
        self.metrics.open_tasks.labels(project=name).set(ledger.open_tasks())
        if verdict.tasks == 0:
            self.metrics.skipped.labels(reason=verdict.reason).inc()
            return
        budget = budget_room(
            project.budget,
            labels_used=ledger.labels_used,
            annotations_used=ledger.annotations_used,
            mean_lead_seconds=ledger.mean_lead_seconds,
        )
        if budget.exhausted:
            await self._exhaust(
                project, ledger, entry.revision if entry else None, budget.exhausted
            )
            return
        started = time.perf_counter()
        pool = self.pools.project(name)
        async with pool.lock:
            await self.pools.sync(name, ledger)
            batch = await self._compose(project, ledger, pool, batch_id, verdict.tasks, budget)
        self.metrics.pool_size.labels(project=name).set(pool.pool.n_unlabeled)
        if batch is None:
            self.metrics.skipped.labels(reason="pool_empty").inc()
            return
        nonce = secrets.token_hex(4)
        await self.pools.save_batch(batch, nonce)
        regular = sum(1 for t in batch.tasks if not t.is_gold)
        updated = ledger.with_batch(
            batch_id,
            nonce=nonce,
            kind="labeling",
            item_ids=[t.item_id for t in batch.tasks],
            labels=regular,
            annotations=sum(t.annotations_required for t in batch.tasks),
        )
        await self._commit(name, updated, entry.revision if entry else None)
        self.metrics.selection.labels(strategy=batch.strategy).observe(
            time.perf_counter() - started
        )
        await self.publish(batch)
        self.metrics.batches.labels(strategy=batch.strategy, kind="labeling").inc()
        self.metrics.open_tasks.labels(project=name).set(updated.open_tasks())
        self.metrics.pool_size.labels(project=name).set(pool.pool.n_unlabeled - regular)
        self._observe_budget(project, updated)

    def _observe_budget(self, project: ProjectConfig, ledger: Ledger) -> None:
        used = budget_used(
            project.budget,
            labels_used=ledger.labels_used,
            annotations_used=ledger.annotations_used,
            mean_lead_seconds=ledger.mean_lead_seconds,
        )
        for limit, share in used.items():
            self.metrics.budget_used.labels(project=project.name, limit=limit).set(share)
        cost = _cost(project, ledger)
        if cost is not None:
            self.metrics.cost.labels(project=project.name).set(cost)

    async def _compose(
        self,
        project: ProjectConfig,
        ledger: Ledger,
        state: ProjectPool,
        batch_id: str,
        room: int,
        budget: BudgetRoom,
    ) -> BatchCreated | None:
        sampling, quality = project.sampling, project.quality
        seed = (sampling.seed * 1_000_003 + int(batch_id[:8], 16)) % (2**31 - 1)
        view = state.pool.view(exclude=ledger.items_in_open_batches())
        n_gold = gold_count(room, quality, len(view.gold_positions))
        n_items = room - n_gold
        if budget.labels is not None:
            n_items = min(n_items, budget.labels)
        if n_items <= 0 or len(view.positions) == 0:
            return None
        proba = None
        if ledger.scores_ref is not None and sampling.strategy in _USES_SCORES:
            scores = await self.pools.scores(ledger.scores_ref)
            if scores is not None:
                index, matrix = scores
                rows = np.asarray([index.get(str(i), -1) for i in view.item_ids])
                proba = np.full((len(rows), matrix.shape[1]), np.nan)
                proba[rows >= 0] = matrix[rows[rows >= 0]]
        strata = None
        if sampling.stratify_by:
            strata = state.pool.strata(view.positions, sampling.stratify_by)
        chosen = await asyncio.to_thread(
            select,
            sampling.strategy,
            n_items,
            n_candidates=len(view.positions),
            X=view.X,
            proba=proba,
            strata=strata,
            random_fraction=sampling.random_fraction,
            prefilter_factor=self.prefilter_factor,
            random_state=seed,
        )
        rng = np.random.default_rng(seed)
        gold_ids = (
            state.pool.item_ids_at(rng.choice(view.gold_positions, size=n_gold, replace=False))
            if n_gold
            else []
        )
        planned = compose_batch(
            [str(i) for i in view.item_ids[chosen.indices]],
            [None if np.isnan(s) else float(s) for s in chosen.scores],
            gold_ids,
            quality,
            seed=seed,
            max_annotations=budget.annotations,
        )
        if not planned:
            return None
        tasks = []
        for t in planned:
            item = state.records[t.item_id]
            tasks.append(
                BatchTask(
                    item_id=t.item_id,
                    data=item.data,
                    annotations_required=t.annotations_required,
                    is_gold=t.is_gold,
                    score=t.score,
                    prediction=item.prediction,
                    gold_label=item.known_label if t.is_gold else None,
                    metadata=item.metadata,
                )
            )
        strategy = chosen.strategy + ("+random" if chosen.n_random else "")
        return BatchCreated(
            event_id=deterministic_id("batch-created", batch_id),
            project=project.name,
            batch_id=batch_id,
            tasks=tasks,
            strategy=strategy,
            model_version=ledger.model_version if proba is not None else None,
            seed=seed,
        )

    async def _try_review(
        self, project: ProjectConfig, event: ReviewRequested, batch_id: str
    ) -> None:
        name = project.name
        entry = await self.state().get(_ledger_key(name))
        ledger = Ledger.decode(entry.value if entry else None)
        if ledger.has_batch(batch_id):
            await self._republish(name, batch_id, ledger)
            return
        in_review = {i for b in ledger.open.values() if b.kind == "review" for i in b.item_ids}
        pool = self.pools.project(name)
        async with pool.lock:
            await self.pools.sync(name, ledger)
        tasks, seen = [], set()
        for item in event.items:
            if item.item_id in in_review or item.item_id in seen:
                continue
            seen.add(item.item_id)
            record = pool.records.get(item.item_id)
            tasks.append(
                BatchTask(
                    item_id=item.item_id,
                    data=item.data or (record.data if record else {}),
                    annotations_required=1,
                    is_review=True,
                    score=item.confidence,
                    prediction=None
                    if item.candidate_label is None
                    else Prediction(label=item.candidate_label, score=item.confidence),
                    metadata={**(record.metadata if record else {}), "review_reason": item.reason},
                )
            )
        if not tasks:
            self.metrics.skipped.labels(reason="already_in_review").inc()
            return
        batch = BatchCreated(
            event_id=deterministic_id("batch-created", batch_id),
            project=name,
            batch_id=batch_id,
            tasks=tasks,
            strategy="review",
            model_version=ledger.model_version,
            seed=0,
            kind="review",
        )
        nonce = secrets.token_hex(4)
        await self.pools.save_batch(batch, nonce)
        updated = ledger.with_batch(
            batch_id,
            nonce=nonce,
            kind="review",
            item_ids=[t.item_id for t in tasks],
            labels=0,
            annotations=len(tasks),
        )
        await self._commit(name, updated, entry.revision if entry else None)
        await self.publish(batch)
        self.metrics.batches.labels(strategy="review", kind="review").inc()

    async def _republish(self, project: str, batch_id: str, ledger: Ledger) -> None:
        nonce = ledger.nonce_of(batch_id)
        assert nonce is not None
        await self.publish(await self.pools.batch(project, batch_id, nonce))

    async def _exhaust(
        self, project: ProjectConfig, ledger: Ledger, revision: int | None, reason: str
    ) -> None:
        """Stop sampling and say so, once: the flag and the event id are per project."""
        self._observe_budget(project, ledger)
        await self._commit(project.name, ledger.with_exhausted(reason), revision)
        await self.publish(_exhausted_event(project, ledger, reason))

    # ------------------------------------------------------------------ ledger access

    async def _read(self, project: str) -> Ledger:
        entry = await self.state().get(_ledger_key(project))
        return Ledger.decode(entry.value if entry else None)

    async def _commit(self, project: str, ledger: Ledger, revision: int | None) -> None:
        kv = self.state()
        if revision is None:
            rev = await kv.create(_ledger_key(project), ledger.encode())
        else:
            rev = await kv.update(_ledger_key(project), ledger.encode(), revision)
        if rev is None:
            raise _Conflict

    async def _merge_seen(self, key: str, annotations: list[Annotation]) -> SeenAnnotations:
        """Add annotations to a batch's record (keyed by annotation id: replays change nothing)."""
        merged = SeenAnnotations()

        def merge(old: bytes | None) -> bytes:
            nonlocal merged
            seen = SeenAnnotations() if old is None else SeenAnnotations.model_validate_json(old)
            merged = seen.with_annotations(annotations)
            return merged.model_dump_json().encode()

        await kv_update(self.state(), key, merge)
        return merged

    async def _change(self, project: str, fn: Callable[[Ledger], Ledger]) -> None:
        await kv_update(
            self.state(), _ledger_key(project), lambda old: fn(Ledger.decode(old)).encode()
        )


_USES_SCORES = frozenset(
    {
        SamplingStrategy.LEAST_CONFIDENCE,
        SamplingStrategy.MARGIN,
        SamplingStrategy.ENTROPY,
        SamplingStrategy.HYBRID,
    }
)


def _exhausted_event(project: ProjectConfig, ledger: Ledger, reason: str) -> BudgetExhausted:
    # one event per project and limit reached: a raised budget that runs out again says so again
    return BudgetExhausted(
        event_id=deterministic_id("budget-exhausted", project.name, reason),
        project=project.name,
        labels_used=ledger.labels_used,
        annotations_used=ledger.annotations_used,
        cost=_cost(project, ledger),
        reason=reason,
    )


def _cost(project: ProjectConfig, ledger: Ledger) -> float | None:
    if project.budget.hourly_rate <= 0:
        return None
    return estimated_cost(
        ledger.annotations_used, ledger.mean_lead_seconds, project.budget.hourly_rate
    )
