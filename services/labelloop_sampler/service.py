"""The sampler's use cases: note what happened, then cut every batch the rules now allow.

Every input (items ingested, a batch completed, a model trained, a QA report, a command) first
changes the project's ledger, then calls :meth:`Sampler.advance`, which cuts the next labeling
batches while :func:`~labelloop_sampler.domain.rounds.next_batch` allows. Batch *n* is a function
of the pool, the seed, *n* and what round *n - 1 - max_model_lag* taught: which input triggers the
cut, and when, changes nothing in it. Its id is derived from the project and *n*, so a replay, a
second replica or a restarted one produces the very same ``BatchCreated``, which JetStream drops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from labelloop.catalog import Catalog, ProbabilityTable, ProjectItems, decode_table
from labelloop.events import (
    Annotation,
    BatchCompleted,
    BatchCreated,
    BatchTask,
    BudgetExhausted,
    Event,
    ModelTrained,
    Prediction,
    QAReport,
    ReviewRequested,
    deterministic_id,
)
from labelloop.project import ProjectConfig
from labelloop.stores import Blobs

from .domain.batching import PlannedTask, compose_batch, gold_count
from .domain.budget import budget_room, budget_used, estimated_cost
from .domain.ledger import Ledger, Outcome, ReviewBatch, Round
from .domain.pool import CandidateFeatures, Candidates, PoolIndex, strata_of
from .domain.progress import progress_of
from .domain.rounds import Verdict, batch_size, next_batch
from .domain.selection import UNCERTAINTY_STRATEGIES, Selection, select
from .metrics import SamplerMetrics
from .store import Conflict, LedgerStore

__all__ = ["ReviewRefused", "Sampler", "batch_id_of", "review_batch_id_of"]


class ReviewRefused(ValueError):
    """A review request that names a round or an item this project does not have."""


log = logging.getLogger("labelloop.sampler")


def batch_id_of(project: str, number: int) -> str:
    return deterministic_id("batch", project, number)


def review_batch_id_of(project: str, number: int) -> str:
    return deterministic_id("review", project, number)


def batch_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % (2**31 - 1)


@dataclass
class Sampler:
    ledgers: LedgerStore
    catalog: Catalog
    artifacts: Callable[[], Blobs]
    publish: Callable[[Event], Awaitable[object]]
    metrics: SamplerMetrics
    prefilter_factor: int = 10
    max_cas_attempts: int = 50
    _scores: dict[str, ProbabilityTable] = field(default_factory=dict)
    _pools: dict[str, tuple[tuple[int, int], PoolIndex]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    # ------------------------------------------------------------------ inputs

    async def items_ingested(self, config: ProjectConfig) -> None:
        if config.sampling.start == "on_ingest":
            await self.ledgers.change(
                config.name, lambda ledger: ledger if ledger.started else ledger.with_started()
            )
        await self.advance(config)

    async def sampling_requested(self, config: ProjectConfig, action: str) -> None:
        if action == "start":
            await self.ledgers.change(config.name, lambda ledger: ledger.with_started())
        else:
            await self.ledgers.change(config.name, lambda ledger: ledger.with_paused())
        log.info("%s: sampling %s", config.name, "started" if action == "start" else "paused")
        await self.advance(config)

    async def batch_completed(self, config: ProjectConfig, event: BatchCompleted) -> None:
        await self.ledgers.change(config.name, lambda ledger: ledger.with_completed(event.batch_id))
        await self.ledgers.forget_progress(config.name, event.batch_id)
        await self.advance(config)

    async def annotations(self, config: ProjectConfig, annotations: list[Annotation]) -> None:
        """Follow open batches' progress: with a low watermark, the next batch waits for it."""
        ledger, _ = await self.ledgers.read(config.name)
        by_batch: dict[str, list[Annotation]] = {}
        for a in annotations:
            number = ledger.round_of(a.batch_id) if a.batch_id else None
            if number is not None and not ledger.rounds[number].completed:
                by_batch.setdefault(a.batch_id or "", []).append(a)
        for batch_id, group in sorted(by_batch.items()):
            number = ledger.round_of(batch_id)
            assert number is not None
            r = ledger.rounds[number]
            batch = await self.ledgers.batch(config.name, "labeling", number, r.nonce)
            required = {t.item_id: t.annotations_required for t in batch.tasks}
            seen = await self.ledgers.merge_seen(config.name, batch_id, group)
            done = progress_of(required, seen).done
            await self.ledgers.change(
                config.name,
                lambda led, b=batch_id, d=done: led.with_progress(b, d),  # type: ignore[misc]
            )
        if by_batch:
            await self.advance(config)

    async def model_trained(self, config: ProjectConfig, event: ModelTrained) -> None:
        await self.ledgers.change(
            config.name,
            lambda ledger: ledger.with_model(
                event.round,
                model_version=event.serving_model_version,
                scores_ref=event.serving_scores_ref,
                converged=event.converged,
                suspects=event.suspect_labels[: _kept_suspects(config)],
            ),
        )
        await self.advance(config)

    async def qa_reported(self, config: ProjectConfig, event: QAReport) -> None:
        flagged = [a.annotator_id for a in event.annotators if a.flagged]
        await self.ledgers.change(
            config.name,
            lambda ledger: ledger.with_qa(
                event.round,
                flagged=flagged,
                lead_seconds=event.lead_time_seconds,
                lead_count=event.n_lead_times,
                review_due=event.items_flagged > 0,
            ),
        )
        await self.advance(config)

    # ------------------------------------------------------------------ labeling batches

    async def advance(self, config: ProjectConfig) -> int:
        """Cut every labeling batch the rules allow now; how many were cut."""
        lock = self._locks.setdefault(config.name, asyncio.Lock())
        async with lock:  # handlers of one process queue here; replicas race on the ledger
            cut = 0
            for _ in range(self.max_cas_attempts):
                try:
                    made = await self._try_advance(config)
                except Conflict:
                    self.metrics.conflicts.inc()
                    continue
                if not made:
                    await self._compact(config)
                    return cut
                cut += 1
            raise RuntimeError(f"ledger of {config.name!r} kept changing: retry later")

    async def _try_advance(self, config: ProjectConfig) -> bool:
        """Cut one batch if allowed; False when there is nothing (more) to do now."""
        name = config.name
        ledger, revision = await self.ledgers.read(name)
        if ledger.unannounced():
            await self._announce(config, ledger)
            ledger, revision = await self.ledgers.read(name)
        verdict = next_batch(ledger, config.sampling, uses_model=waits_for_model(config))
        self._observe(config, ledger, verdict)
        if not verdict.cut:
            self.metrics.skipped.labels(reason=verdict.reason).inc()
        room = budget_room(
            config.budget,
            labels_used=ledger.labels_used,
            annotations_used=ledger.annotations_used,
            mean_lead_seconds=ledger.mean_lead_seconds(verdict.basis),
        )
        # a spent label or annotation budget is a fact now; a money budget depends on the lead
        # times of the rounds the next batch builds on, known only once it may be cut
        final = room.exhausted is not None and not room.exhausted.startswith("max_cost")
        if not verdict.cut and not (final and ledger.started):
            return False
        if room.exhausted:
            if ledger.exhausted != room.exhausted:
                await self.ledgers.commit(name, ledger.with_exhausted(room.exhausted), revision)
            # said again on every trigger: a publish lost after the flag was committed is
            # repaired, and the fixed event id keeps the stream free of duplicates
            await self.publish(_exhausted_event(config, ledger, room.exhausted))
            self.metrics.skipped.labels(reason="budget").inc()
            return False
        if ledger.exhausted:
            # the operator raised the budget (`labelloop project apply`): sampling resumes
            ledger = ledger.with_exhausted(None)
        started = time.perf_counter()
        batch = await self._compose(config, ledger, verdict, room.labels, room.annotations)
        if batch is None:
            self.metrics.skipped.labels(reason="pool_empty").inc()
            return False
        nonce = secrets.token_hex(4)
        await self.ledgers.save_batch(batch, nonce)
        regular = sum(1 for t in batch.tasks if not t.is_gold)
        committed = ledger.with_round(
            verdict.round,
            Round(
                batch_id=batch.batch_id,
                nonce=nonce,
                tasks=len(batch.tasks),
                labels=regular,
                annotations=sum(t.annotations_required for t in batch.tasks),
                rechecks=[s.item_id for s in batch.rechecks],
            ),
        ).with_suspects_used(verdict.basis)
        await self.ledgers.commit(name, committed, revision)
        self.metrics.selection.labels(strategy=batch.strategy).observe(
            time.perf_counter() - started
        )
        await self._publish_batch(name, batch, "labeling", verdict.round)
        self.metrics.batches.labels(strategy=batch.strategy, kind="labeling").inc()
        self._observe_budget(config, committed)
        log.info(
            "%s: batch %d cut (%s, %d tasks, model %s of round %d)",
            name,
            verdict.round,
            batch.strategy,
            len(batch.tasks),
            batch.model_version or "none",
            verdict.basis,
        )
        return True

    async def _compose(
        self,
        config: ProjectConfig,
        ledger: Ledger,
        verdict: Verdict,
        labels_left: int | None,
        annotations_left: int | None,
    ) -> BatchCreated | None:
        plan = await self._plan(config, ledger, verdict, labels_left, annotations_left)
        if plan is None:
            return None
        items, planned, chosen, scores, outcome = (
            plan.items,
            plan.planned,
            plan.chosen,
            plan.scores,
            plan.outcome,
        )
        number, basis, quality = verdict.round, verdict.basis, config.quality
        data = await self.catalog.data_of(config.name, items, [t.item_id for t in planned])
        tasks = []
        for t in planned:
            item = items.records[t.item_id]
            prediction = item.prediction
            if scores is not None and t.item_id in plan.rows:
                prediction = _prediction(
                    scores,
                    plan.rows[t.item_id],
                    outcome.model_version if outcome else None,
                    config.training.multilabel_threshold,
                )
            tasks.append(
                BatchTask(
                    item_id=t.item_id,
                    data=data[t.item_id],
                    annotations_required=t.annotations_required,
                    is_gold=t.is_gold,
                    score=None if t.score is None else round(t.score, 6),
                    prediction=prediction,
                    gold_label=item.known_label if t.is_gold else None,
                    metadata=item.metadata,
                )
            )
        batch_id = batch_id_of(config.name, number)
        used_model = scores is not None and chosen.strategy not in ("diversity", "random")
        done = (await self.ledgers.taken(config.name, ledger)).rechecked
        rechecks = [] if outcome is None else [s for s in outcome.suspects if s.item_id not in done]
        return BatchCreated(
            event_id=deterministic_id("batch-created", batch_id),
            project=config.name,
            batch_id=batch_id,
            round=number,
            tasks=tasks,
            strategy=chosen.strategy + ("+random" if chosen.n_random else ""),
            model_version=outcome.model_version if used_model and outcome else None,
            model_round=basis if used_model else None,
            seed=batch_seed(config.sampling.seed, number),
            excluded_annotators=list(outcome.flagged) if outcome is not None else [],
            rechecks=rechecks[: quality.max_rechecks_per_round],
        )

    async def _plan(
        self,
        config: ProjectConfig,
        ledger: Ledger,
        verdict: Verdict,
        labels_left: int | None,
        annotations_left: int | None,
    ) -> _Plan | None:
        """Choose batch ``verdict.round``'s items and gold: everything but reading their data."""
        sampling, quality = config.sampling, config.quality
        number, basis = verdict.round, verdict.basis
        seed = batch_seed(sampling.seed, number)
        items = await self.catalog.load(config.name)
        taken, recent_gold = await self._taken(config.name, ledger, recent=sampling.max_model_lag)
        index = self._pool_index(config.name, items)
        pool = index.candidates(taken=taken, recent_gold=recent_gold)
        size = batch_size(sampling)
        n_gold = gold_count(size, quality, len(pool.gold_ids))
        n_items = size - n_gold
        if labels_left is not None:
            n_items = min(n_items, labels_left)
        if n_items <= 0 or not pool.item_ids:
            return None
        outcome = ledger.outcomes.get(basis)
        scores = None
        if (
            outcome is not None
            and outcome.scores_ref
            and sampling.strategy in UNCERTAINTY_STRATEGIES
        ):
            scores = await self._scores_of(outcome.scores_ref)
        # the model's rows and the features are read where the selection asks, never stacked
        table_rows = None
        if scores is not None and outcome is not None and outcome.scores_ref:
            table_rows = await asyncio.to_thread(
                index.table_rows, outcome.scores_ref, scores.item_ids
            )
        # random and stratified picks never read the features
        features = None if sampling.strategy in _NO_FEATURES else _features(items, index, pool)
        strata = None
        if sampling.stratify_by:
            metadata = items.column(list(pool.item_ids), "metadata")
            strata = strata_of([m or {} for m in metadata], sampling.stratify_by)
        chosen = await asyncio.to_thread(
            select,
            sampling.strategy,
            n_items,
            n_candidates=len(pool.item_ids),
            X=features,
            proba=None if scores is None else scores.proba,
            proba_index=None if table_rows is None else table_rows[pool.positions],
            strata=strata,
            random_fraction=sampling.random_fraction,
            prefilter_factor=self.prefilter_factor,
            random_state=seed,
            multilabel=scores is not None and scores.multilabel,
            sequences=scores is not None and scores.sequences,
        )
        rng = np.random.default_rng(seed)
        # drawn by position: the same picks as drawing from the ids, which made an array of
        # every gold id first (10M items, 10,000 gold: 4% of the sampler's time)
        at = rng.choice(len(pool.gold_ids), size=n_gold, replace=False).tolist() if n_gold else []
        gold_ids = sorted(pool.gold_ids[k] for k in at)
        picked = pool.ids_at(chosen.indices)
        planned = compose_batch(
            picked,
            [None if np.isnan(s) else float(s) for s in chosen.scores],
            gold_ids,
            quality,
            seed=seed,
            max_annotations=annotations_left,
        )
        if not planned:
            return None
        rows: dict[str, int] = {}
        if table_rows is not None:
            planned_ids = [t.item_id for t in planned]
            at = index.positions(planned_ids)
            rows = {
                i: int(table_rows[p])
                for i, p in zip(planned_ids, at.tolist(), strict=True)
                if p >= 0 and table_rows[p] >= 0
            }
        return _Plan(items, planned, chosen, scores, outcome, rows)

    def _pool_index(self, project: str, items: ProjectItems) -> PoolIndex:
        """The project's items indexed once per state of the catalog (chunks are only ever
        added), for the processes' last few projects."""
        version = (len(items.chunks), len(items.records))
        cached = self._pools.get(project)
        if cached is None or cached[0] != version:
            self._pools.pop(project, None)
            if len(self._pools) >= 4:
                self._pools.pop(next(iter(self._pools)))
            cached = (version, PoolIndex(items.item_ids(), items.gold))
            self._pools[project] = cached
        return cached[1]

    async def _taken(
        self, project: str, ledger: Ledger, *, recent: int
    ) -> tuple[set[str], set[str]]:
        """Items earlier labeling batches hold, and the gold items of the last ``recent + 1``
        (rounds never compacted: they are the basis of the next batch and after)."""
        taken = await self.ledgers.taken(project, ledger)
        recent_gold: set[str] = set()
        last = ledger.next_round - 1
        for number in range(max(1, last - recent), last + 1):
            r = ledger.rounds[number]
            batch = await self.ledgers.batch(project, "labeling", number, r.nonce)
            recent_gold.update(t.item_id for t in batch.tasks if t.is_gold)
        return taken.items, recent_gold

    async def _compact(self, config: ProjectConfig) -> None:
        """Move the rounds that can change nothing any more out of the ledger, a segment at a
        time (:meth:`LedgerStore.compact`), so that it stays small however long a project runs
        and however far the trainer is behind (when no batch waits for models)."""
        name = config.name
        needs_model = waits_for_model(config)
        for _ in range(self.max_cas_attempts):
            ledger, revision = await self.ledgers.read(name)
            if revision is None:
                return
            keep_from = next_batch(ledger, config.sampling, uses_model=False).basis
            try:
                if not await self.ledgers.compact(
                    name, ledger, revision, keep_from, needs_model=needs_model
                ):
                    return
            except Conflict:
                self.metrics.conflicts.inc()

    async def _scores_of(self, ref: str) -> ProbabilityTable | None:
        if ref not in self._scores:
            raw = await self.artifacts().get(ref)
            if raw is None:
                return None
            if len(self._scores) >= 4:  # the latest rounds' models are all that is used
                self._scores.pop(next(iter(self._scores)))
            self._scores[ref] = await asyncio.to_thread(decode_table, raw)
        return self._scores[ref]

    # ------------------------------------------------------------------ review batches

    async def review(self, config: ProjectConfig, event: ReviewRequested) -> None:
        """The items QA holds back from round ``event.round`` become its expert review batch."""
        name = config.name
        number = event.round
        built: _ReviewBatch | None = None
        nonce = secrets.token_hex(4)
        for _ in range(self.max_cas_attempts):
            ledger, revision = await self.ledgers.read(name)
            if number in ledger.reviews:
                await self._announce(config, ledger)
                return
            if ledger.is_compacted(number) and event.batch_id == batch_id_of(name, number):
                # compacted only once its review, if QA asked for one, was cut and announced
                return
            cut = ledger.rounds.get(number)
            if cut is None or cut.batch_id != event.batch_id:
                # only QA asks for reviews, of rounds this sampler cut: anything else is forged or
                # misrouted, and recording it would hold round `number`'s real review for good
                raise ReviewRefused(
                    f"{name}: review of round {number} (batch {event.batch_id}), a round this"
                    " project's sampler never cut"
                )
            if built is None:  # once: the batch depends on the event, not on the ledger
                built = await self._review_batch(config, event)
                await self.ledgers.save_batch(built.batch, nonce, uncatalogued=built.uncatalogued)
            batch, tasks = built.batch, built.batch.tasks
            try:
                await self.ledgers.commit(
                    name,
                    ledger.with_review(
                        number, ReviewBatch(batch_id=batch.batch_id, nonce=nonce, tasks=len(tasks))
                    ),
                    revision,
                )
            except Conflict:
                self.metrics.conflicts.inc()
                continue
            await self._publish_batch(name, batch, "review", number)
            self.metrics.batches.labels(strategy="review", kind="review").inc()
            return
        raise RuntimeError(f"ledger of {name!r} kept changing: retry later")

    async def _review_batch(self, config: ProjectConfig, event: ReviewRequested) -> _ReviewBatch:
        """The expert review batch of ``event``'s items, with their data from the catalog."""
        name = config.name
        items = await self.catalog.load(name)
        data = await self.catalog.data_of(name, items, [i.item_id for i in event.items])
        tasks = []
        for item in sorted(event.items, key=lambda i: i.item_id):
            record = items.records.get(item.item_id)
            if record is None and not item.data:
                raise ReviewRefused(
                    f"{name}: review of item {item.item_id!r}, which is not in the catalog"
                    " and comes without its data (nobody could label it)"
                )
            tasks.append(
                BatchTask(
                    item_id=item.item_id,
                    data=data[item.item_id] if record else item.data,
                    annotations_required=1,
                    is_review=True,
                    score=item.confidence,
                    prediction=None
                    if item.candidate_label is None
                    else Prediction(label=item.candidate_label, score=item.confidence),
                    metadata={
                        **(record.metadata if record else {}),
                        "review_reason": item.reason,
                    },
                )
            )
        batch_id = review_batch_id_of(name, event.round)
        batch = BatchCreated(
            event_id=deterministic_id("batch-created", batch_id),
            project=name,
            batch_id=batch_id,
            round=event.round,
            tasks=tasks,
            strategy="review",
            seed=0,
            kind="review",
        )
        uncatalogued = frozenset(t.item_id for t in tasks if t.item_id not in items.records)
        return _ReviewBatch(batch, uncatalogued)

    # ------------------------------------------------------------------ publishing

    async def _publish_batch(
        self, project: str, batch: BatchCreated, kind: str, number: int
    ) -> None:
        await self.publish(batch)
        await self.ledgers.change(
            project,
            lambda ledger: ledger.with_announced(
                "review" if kind == "review" else "labeling", number
            ),
        )

    async def _announce(self, config: ProjectConfig, ledger: Ledger) -> None:
        """Publish committed batches a crash left unannounced (same batch, same event id)."""
        for kind, number, _batch_id, nonce in ledger.unannounced():
            batch = await self.ledgers.batch(config.name, kind, number, nonce)
            items = await self.catalog.load(config.name)
            data = await self.catalog.data_of(config.name, items, [t.item_id for t in batch.tasks])
            tasks = [
                t.model_copy(update={"data": data[t.item_id]}) if t.item_id in data else t
                for t in batch.tasks
            ]
            await self._publish_batch(
                config.name, batch.model_copy(update={"tasks": tasks}), kind, number
            )

    # ------------------------------------------------------------------ metrics

    async def observe(self, config: ProjectConfig) -> None:
        """The project's gauges from its ledger as it is now (every replica, periodically).

        A replica sets them when it handles the project; with several replicas, one that has
        not handled it for a while would go on reporting an old state (open tasks after the
        campaign ended). Read from the shared ledger, every replica reports the same state."""
        ledger, _ = await self.ledgers.read(config.name)
        verdict = next_batch(ledger, config.sampling, uses_model=waits_for_model(config))
        self._observe(config, ledger, verdict)
        self._observe_budget(config, ledger)

    def _observe(self, config: ProjectConfig, ledger: Ledger, verdict: Verdict) -> None:
        name = config.name
        self.metrics.open_tasks.labels(project=name).set(ledger.open_tasks())
        for reason in _WAIT_REASONS:
            self.metrics.waiting.labels(project=name, reason=reason).set(
                1.0 if verdict.reason == reason else 0.0
            )

    def _observe_budget(self, config: ProjectConfig, ledger: Ledger) -> None:
        lead = ledger.mean_lead_seconds(ledger.next_round)
        used = budget_used(
            config.budget,
            labels_used=ledger.labels_used,
            annotations_used=ledger.annotations_used,
            mean_lead_seconds=lead,
        )
        for limit, share in used.items():
            self.metrics.budget_used.labels(project=config.name, limit=limit).set(share)
        if config.budget.hourly_rate > 0:
            cost = estimated_cost(ledger.annotations_used, lead, config.budget.hourly_rate)
            self.metrics.cost.labels(project=config.name).set(cost)


@dataclass(frozen=True)
class _Plan:
    """A labeling batch chosen, before its tasks' data is read (:meth:`Sampler._plan`)."""

    items: ProjectItems
    planned: list[PlannedTask]
    chosen: Selection
    scores: ProbabilityTable | None
    outcome: Outcome | None
    rows: dict[str, int]
    """The planned items' rows of the model's table (``scores``)."""


@dataclass(frozen=True)
class _ReviewBatch:
    batch: BatchCreated
    uncatalogued: frozenset[str]


_NO_FEATURES = frozenset({"random", "stratified"})
"""Strategies whose selection reads no feature matrix (:func:`select`)."""


def _features(items: ProjectItems, index: PoolIndex, pool: Candidates) -> CandidateFeatures | None:
    """The candidates' rows in the space covering most of them, read as the selection asks: the
    rows ``items.matrix(pool.item_ids)`` would stack, without stacking them."""
    assert pool.positions is not None
    spaces = {name: space.rows for name, space in items.spaces.items()}
    name = index.best_space(pool.positions, spaces)
    if name is None:
        return None
    space = items.spaces[name]
    return CandidateFeatures(pool.item_ids, space.rows, space.dim)


_WAIT_REASONS = (
    "not_started",
    "paused",
    "full",
    "above_watermark",
    "waiting_for_model",
    "waiting_for_qa",
)


def _prediction(
    scores: ProbabilityTable, row: int, model_version: str | None, threshold: float
) -> Prediction:
    """The model's answer for one item, shown to annotators as a pre-annotation: its most likely
    class; or, from a multi-label model's scores, every label whose probability reaches
    ``threshold`` (``training.multilabel_threshold``), scored by the probability of that exact
    set (labels independent given the item, as the one-vs-rest model has them); or, from a
    sequence (NER) model's scores, its predicted spans, scored by the probability of its best
    tag sequence (one minus its least confidence)."""
    p = scores.proba[row]
    if scores.predictions is not None:
        spans = json.loads(scores.predictions[row])
        return Prediction(
            label=spans if isinstance(spans, list) else [],
            score=round(min(max(1.0 - float(p[0]), 0.0), 1.0), 6),
            model_version=model_version,
        )
    if scores.multilabel:
        chosen = p >= threshold
        probability = float(np.prod(np.where(chosen, p, 1.0 - p)))
        return Prediction(
            label=[c for c, yes in zip(scores.classes, chosen.tolist(), strict=True) if yes],
            score=round(min(max(probability, 0.0), 1.0), 6),
            model_version=model_version,
        )
    best = int(np.argmax(p))
    return Prediction(
        label=scores.classes[best], score=round(float(p[best]), 6), model_version=model_version
    )


def waits_for_model(config: ProjectConfig) -> bool:
    """Whether batch *n* waits for the model of its basis round: to rank the pool by it, or to
    carry its rechecks (a batch cut before the model came would carry none: not reproducible)."""
    return (
        config.sampling.strategy in UNCERTAINTY_STRATEGIES
        or config.quality.max_rechecks_per_round > 0
    )


def _kept_suspects(config: ProjectConfig) -> int:
    """Suspects kept per round: enough to fill a batch's rechecks after the ones a batch cut in
    between took (each round's model may doubt the same labels)."""
    return config.quality.max_rechecks_per_round * (config.sampling.max_model_lag + 2)


def _exhausted_event(config: ProjectConfig, ledger: Ledger, reason: str) -> BudgetExhausted:
    # one event per project and limit reached: a raised budget that runs out again says so again
    lead = ledger.mean_lead_seconds(ledger.next_round)
    cost = None
    if config.budget.hourly_rate > 0:
        cost = estimated_cost(ledger.annotations_used, lead, config.budget.hourly_rate)
    return BudgetExhausted(
        event_id=deterministic_id("budget-exhausted", config.name, reason),
        project=config.name,
        labels_used=ledger.labels_used,
        annotations_used=ledger.annotations_used,
        cost=cost,
        reason=reason,
        last_round=ledger.next_round - 1 or None,
    )
