"""An offline replay of a campaign: the loop's own pure functions in one process, no bus.

The same project, pool and simulated crew as a campaign through the services, round by round:
the sampler's selection and batch composition (``labelloop_sampler.domain``), the crew's answers
(``labelloop_bridge.domain.crew``), QA's scoring with the annotators' history, its held items
answered by the crew's expert (``labelloop_qa.domain``), and the trainer's round
(``labelloop_trainer.domain``). Batch *n* is chosen by the model of round *n - 1 - lag*, as in the
services. What the replay leaves out is everything the bus adds: processes, messages, retries,
timing. So the running system should match it (``bench_campaign.py`` checks within 2 points).
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import (
    BatchTask,
    ItemIn,
    LabelValue,
    Prediction,
    SuspectLabel,
    deterministic_id,
)
from labelloop.project import ProjectConfig, SamplingStrategy
from labelloop_bridge.domain.crew import answer_batch
from labelloop_ingester.domain.identity import item_id
from labelloop_qa.domain.annotators import Tally
from labelloop_qa.domain.review import prediction_contradictions
from labelloop_qa.domain.scoring import Rating, TaskInfo, project_scores, score_batch
from labelloop_sampler.domain.batching import compose_batch, gold_count
from labelloop_sampler.domain.pool import candidates, proba_rows
from labelloop_sampler.domain.selection import UNCERTAINTY_STRATEGIES, select
from labelloop_trainer.domain.estimators import aligned_proba, make_pipeline, regularization_grid
from labelloop_trainer.domain.retraining import decide_retrain
from labelloop_trainer.domain.suspects import suspect_labels
from labelloop_trainer.domain.training import LabeledData, NotEnoughClasses, train_round

Array = npt.NDArray[Any]

__all__ = ["ReplayRound", "replay"]


@dataclass(frozen=True)
class ReplayRound:
    round: int
    labels_spent: int
    model: Any | None
    """The model serving after the round (``None`` before the first)."""


def _cumulative(history: dict[str, Tally], batch: dict[str, Tally]) -> dict[str, Tally]:
    out = dict(history)
    for annotator, tally in batch.items():
        out[annotator] = history.get(annotator, Tally()).merged(tally)
    return out


def replay(config: ProjectConfig, items: Sequence[ItemIn]) -> list[ReplayRound]:
    """Every round of a campaign over ``items`` until the label budget is spent."""
    assert config.simulation is not None, "a replay needs the simulated crew"
    sampling, quality = config.sampling, config.quality
    lag = sampling.max_model_lag
    records = {item_id(i.data): i for i in items}
    ids = sorted(records)
    features = {i: np.asarray(records[i].features, dtype=np.float32) for i in ids}
    classes = list(config.labels.classes)
    budget = config.budget.max_labels or 10**9
    size = min(sampling.batch_size, sampling.max_open_tasks)
    pipeline = make_pipeline("vectors", config.training.estimator, config.training.random_state)

    labels: dict[str, tuple[LabelValue, int]] = {}  # item -> (label, round)
    history: dict[str, Tally] = {}
    flagged: set[str] = set()
    flagged_after: dict[int, set[str]] = {0: set()}
    serving: dict[int, tuple[Any | None, dict[str, int], Array | None]] = {0: (None, {}, None)}
    batches: dict[int, list[BatchTask]] = {}
    trained_on: set[str] = set()
    suspects: dict[int, list[SuspectLabel]] = {}
    rechecked: set[str] = set()
    reviewed: set[str] = set()
    gold_ids = {i for i in ids if records[i].known_label is not None}
    kept = quality.max_rechecks_per_round * (lag + 2)
    rows_at_last_model: int | None = None
    spent = 0
    out: list[ReplayRound] = []
    number = 0
    while spent < budget:
        number += 1
        basis = max(0, number - 1 - lag)
        _, rows, proba_all = serving[basis]
        taken = {t.item_id for b in batches.values() for t in b if not t.is_gold}
        recent = {
            t.item_id
            for n, b in batches.items()
            if n > number - 1 - lag - 1
            for t in b
            if t.is_gold
        }
        pool = candidates(
            ids, [records[i].known_label is not None for i in ids], taken=taken, recent_gold=recent
        )
        n_gold = gold_count(size, quality, len(pool.gold_ids))
        n_items = min(size - n_gold, budget - spent)
        if n_items <= 0 or not pool.item_ids:
            break
        seed = (sampling.seed * 1_000_003 + number) % (2**31 - 1)
        uses_model = sampling.strategy in UNCERTAINTY_STRATEGIES and proba_all is not None
        proba = None
        if uses_model and proba_all is not None:
            proba = proba_rows(pool.item_ids, rows, proba_all)
        X = np.stack([features[i] for i in pool.item_ids])
        chosen = select(
            SamplingStrategy(sampling.strategy),
            n_items,
            n_candidates=len(pool.item_ids),
            X=X,
            proba=proba,
            random_fraction=sampling.random_fraction,
            random_state=seed,
        )
        rng = np.random.default_rng(seed)
        gold = (
            sorted(rng.choice(pool.gold_ids, size=n_gold, replace=False).tolist()) if n_gold else []
        )
        picked = [pool.item_ids[i] for i in chosen.indices.tolist()]
        scores = [None if np.isnan(s) else float(s) for s in chosen.scores]
        planned = compose_batch(picked, scores, gold, quality, seed=seed)
        tasks = []
        for t in planned:
            record = records[t.item_id]
            prediction = None
            if uses_model and proba_all is not None and t.item_id in rows:
                p = proba_all[rows[t.item_id]]
                best = int(np.argmax(p))
                prediction = Prediction(label=classes[best], score=round(float(p[best]), 6))
            tasks.append(
                BatchTask(
                    item_id=t.item_id,
                    data=record.data,
                    annotations_required=t.annotations_required,
                    is_gold=t.is_gold,
                    gold_label=record.known_label if t.is_gold else None,
                    metadata=record.metadata,
                    prediction=prediction,
                )
            )
        batches[number] = tasks
        rechecks = [x for x in suspects.pop(basis, []) if x.item_id not in rechecked]
        rechecks = rechecks[: quality.max_rechecks_per_round]
        rechecked |= {x.item_id for x in rechecks}
        spent += sum(1 for t in tasks if not t.is_gold)
        batch_id = deterministic_id("batch", config.name, number)
        plan = answer_batch(
            tasks,
            config.simulation,
            batch_id=batch_id,
            task_type=config.task_type,
            classes=classes,
            excluded=sorted(flagged_after[basis]),
        )
        ratings = [
            Rating(a.item_id, a.annotator_id, a.value, a.lead_time_seconds) for a in plan.answers
        ]
        outcome = score_batch(
            batch_id,
            sorted(ratings, key=lambda r: (r.item_id, r.annotator_id)),
            [TaskInfo(t.item_id, t.is_gold, t.gold_label) for t in tasks],
            config,
            history,
            n_boot=0,
            random_state=int(deterministic_id(config.name, batch_id)[:8], 16),
        )
        released = {lab.item_id: lab.label for lab in outcome.labels}
        held = [r.item_id for r in outcome.review]
        contradicted = prediction_contradictions(
            {lab.item_id: lab.label for lab in outcome.labels if not lab.is_gold},
            {
                t.item_id: (t.prediction.label, t.prediction.score)
                for t in tasks
                if t.prediction is not None and t.prediction.score is not None
            },
            threshold=quality.model_contradiction_threshold,
        )
        held += sorted(contradicted)
        held += [x.item_id for x in rechecks if x.item_id not in held]
        for item in contradicted:
            released.pop(item, None)
        history = _cumulative(history, outcome.tallies)
        flagged |= {s.annotator_id for s in project_scores(config, history) if s.flagged}
        flagged_after[number] = set(flagged)
        if held:
            review_tasks = [
                BatchTask(
                    item_id=i,
                    data=records[i].data,
                    annotations_required=1,
                    is_review=True,
                    metadata=records[i].metadata,
                )
                for i in sorted(set(held))
            ]
            experts = answer_batch(
                review_tasks,
                config.simulation,
                batch_id=deterministic_id("review", config.name, number),
                task_type=config.task_type,
                classes=classes,
                review=True,
            )
            for a in experts.answers:
                released[a.item_id] = a.value
                reviewed.add(a.item_id)
        for item, value in released.items():
            labels[item] = (value, number)
        # the trainer's round on every label so far (gold included, as the dataset has it)
        labeled = sorted(labels)
        x = np.stack([features[i] for i in labeled]).astype(np.float64)
        data = LabeledData(
            np.asarray(labeled),
            x,
            np.asarray([str(labels[i][0]) for i in labeled]),
            np.asarray(["train"] * len(labeled)),
            np.ones(len(labeled)),
        )
        current, current_rows, current_proba = serving[number - 1]
        fresh = np.asarray([i not in trained_on for i in labeled]) if current is not None else None
        decision = decide_retrain(
            len(labeled),
            rows_at_last_model,
            min_new_labels=config.training.min_new_labels,
            min_growth=config.training.min_growth,
        )
        if not decision.train:  # the trainer skips the round: the serving model stays
            serving[number] = (current, current_rows, current_proba)
            out.append(ReplayRound(number, spent, serving[number][0]))
            continue
        try:
            result = train_round(
                pipeline,
                data,
                classes,
                current_model=current,
                fresh=fresh,
                tolerance=config.training.promotion_tolerance,
                random_state=config.training.random_state,
                grid=regularization_grid(config.training),
            )
        except NotEnoughClasses:
            serving[number] = (current, current_rows, current_proba)
        else:
            rows_at_last_model = len(labeled)
            suspects[number] = suspect_labels(
                labeled,
                [str(labels[i][0]) for i in labeled],
                result.oos_proba,
                classes,
                threshold=quality.model_contradiction_threshold,
                settled=gold_ids | reviewed,
            )[:kept]
            if result.promoted:
                pool_ids = [i for i in ids if i not in labels]
                pool_x = np.stack([features[i] for i in pool_ids]).astype(np.float64)
                scores = aligned_proba(result.model, pool_x, classes)
                serving[number] = (result.model, {i: k for k, i in enumerate(pool_ids)}, scores)
                trained_on = set(labeled)
            else:
                serving[number] = (current, current_rows, current_proba)
        out.append(ReplayRound(number, spent, serving[number][0]))
    return out
