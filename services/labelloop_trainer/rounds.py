"""The training use case: decide, train, evaluate, promote, score the pool, check convergence."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

from labelloop.events import (
    DatasetExported,
    Event,
    ItemsIngested,
    LabelingConverged,
    ModelTrained,
    RequestTraining,
    deterministic_id,
)
from labelloop.project import ProjectConfig, TaskType
from labelloop.stores import Blobs, KeyValue
from labelloop_trainer.domain.convergence import compare_predictions, converged, stop_set
from labelloop_trainer.domain.estimators import InputKind, aligned_proba, make_pipeline
from labelloop_trainer.domain.retraining import decide_retrain
from labelloop_trainer.domain.training import (
    LabeledData,
    NotEnoughClasses,
    RoundResult,
    predict_labels,
    train_round,
)
from labelloop_trainer.item_index import ItemIndex, ProjectItems
from labelloop_trainer.metrics import TrainerMetrics
from labelloop_trainer.model_store import ModelStore
from labelloop_trainer.training_state import (
    DatasetInfo,
    ModelInfo,
    ProjectState,
    StateBook,
    model_number,
)

__all__ = ["TrainOutcome", "Trainer"]

log = logging.getLogger("labelloop.trainer")
Array = npt.NDArray[Any]

_KIND: dict[TaskType, InputKind] = {
    TaskType.TEXT_CLASSIFICATION: "text",
    TaskType.IMAGE_CLASSIFICATION: "vectors",
    TaskType.AUDIO_CLASSIFICATION: "vectors",
    TaskType.VIDEO_CLASSIFICATION: "vectors",
}
_DATASET_FILE = "dataset.parquet"


@dataclass(frozen=True, slots=True)
class TrainOutcome:
    outcome: Literal[
        "promoted", "rejected", "skipped", "unsupported", "too_few_classes", "no_dataset"
    ]
    reason: str = ""
    event: ModelTrained | None = None


@dataclass(frozen=True, slots=True)
class _Inputs:
    labeled: LabeledData
    pool_ids: list[str]
    pool_x: Array
    dropped: int
    """Labeled rows without usable input (no features in the chosen space)."""


def _number(version: str) -> int:
    digits = "".join(ch for ch in version if ch.isdigit())
    return int(digits) if digits else 0


def _older(version: str, current: ModelInfo | None) -> bool:
    """Whether ``version`` is an older dataset than the one the serving model was trained on."""
    return current is not None and _number(version) < _number(current.dataset_version)


def _read_dataset(raw: bytes) -> pd.DataFrame:
    frame: pd.DataFrame = pq.read_table(io.BytesIO(raw)).to_pandas()
    return frame


def _column(frame: pd.DataFrame, field_name: str) -> str:
    # the exporter prefixes a data field that clashes with its own columns with "data_"
    prefixed = f"data_{field_name}"
    return prefixed if prefixed in frame.columns else field_name


def _inputs(
    frame: pd.DataFrame, items: ProjectItems, kind: InputKind, config: ProjectConfig
) -> _Inputs:
    ids: Array = frame["item_id"].astype(str).to_numpy()
    x: Array
    pool_x: Array
    keep: Array
    labeled_set = set(ids.tolist())
    if kind == "text":
        column = _column(frame, config.primary_field.name)
        x = np.asarray(frame[column].fillna("").astype(str).tolist(), dtype=object)
        keep = np.ones(len(ids), dtype=bool)
        pool_ids = sorted(i for i in items.item_ids if i not in labeled_set and i in items.texts)
        pool_x = np.asarray([items.texts[i] for i in pool_ids], dtype=object)
    else:
        space_name = items.best_space(ids.tolist())
        rows = items.spaces[space_name].rows if space_name is not None else {}
        keep = np.array([i in rows for i in ids], dtype=bool)
        dim = len(next(iter(rows.values()))) if rows else 0
        x = np.asarray([rows[i] for i in ids[keep]], dtype=np.float64).reshape(-1, dim)
        pool_ids = sorted(i for i in items.item_ids if i not in labeled_set and i in rows)
        pool_x = np.asarray([rows[i] for i in pool_ids], dtype=np.float64).reshape(-1, dim)
    labeled = LabeledData(
        item_ids=ids[keep],
        x=x if kind == "vectors" else x[keep],
        y=frame["label"].astype(str).to_numpy()[keep],
        split=frame["split"].astype(str).to_numpy()[keep],
        weight=frame["weight"].astype(float).to_numpy()[keep],
    )
    return _Inputs(labeled, pool_ids, pool_x, int((~keep).sum()))


class Trainer:
    def __init__(
        self,
        *,
        state: Callable[[], KeyValue],
        artifacts: Callable[[], Blobs],
        publish: Callable[[Event], Awaitable[object]],
        metrics: TrainerMetrics,
        stop_set_size: int = 2000,
        oos_folds: int = 5,
    ) -> None:
        self._artifacts = artifacts
        self.index = ItemIndex(artifacts)
        self.models = ModelStore(artifacts)
        self.book = StateBook(state)
        self._publish = publish
        self._metrics = metrics
        self._stop_set_size = stop_set_size
        self._oos_folds = oos_folds
        self._locks: dict[str, asyncio.Lock] = {}

    async def on_items(self, event: ItemsIngested, config: ProjectConfig) -> None:
        await self.index.record(event, config)

    async def on_dataset(self, event: DatasetExported, config: ProjectConfig) -> TrainOutcome:
        """Remember the version; train if the retrain policy says enough labels arrived."""
        info = DatasetInfo(
            version=event.version, path=event.path, n_rows=event.n_rows, ref=event.dataset_ref
        )

        def remember(s: ProjectState) -> None:
            s.datasets[info.version] = info
            if s.latest_dataset is None or _number(s.latest_dataset) < _number(info.version):
                s.latest_dataset = info.version

        state = await self.book.change(event.project, remember)
        if event.event_id not in state.triggers:  # a redelivery of a trigger we acted on re-runs
            if state.latest_dataset and _number(state.latest_dataset) > _number(info.version):
                # versions can arrive out of order (redelivery, replicas): the newer one's own
                # event trains on more labels, so a model of this one could only go backwards
                self._metrics.retrains.labels(outcome="skipped").inc()
                reason = f"stale: {state.latest_dataset} is newer"
                log.info("%s: no retraining on %s: %s", event.project, event.version, reason)
                return TrainOutcome("skipped", reason)
            t = config.training
            decision = decide_retrain(
                event.n_rows,
                state.rows_at_last_model,
                min_new_labels=t.min_new_labels,
                min_growth=t.min_growth,
            )
            if not decision.train:
                self._metrics.retrains.labels(outcome="skipped").inc()
                log.info(
                    "%s: no retraining on %s: %s", event.project, event.version, decision.reason
                )
                return TrainOutcome("skipped", decision.reason)
        return await self.train(config, info, trigger=event.event_id)

    async def on_request(self, event: RequestTraining, config: ProjectConfig) -> TrainOutcome:
        state = await self.book.get(event.project)
        version = event.dataset_version or state.latest_dataset
        info = state.datasets.get(version) if version else None
        if info is None:
            return TrainOutcome("no_dataset", f"no dataset version {version or '(any)'} known yet")
        return await self.train(config, info, trigger=event.event_id)

    async def _dataset(self, dataset: DatasetInfo) -> pd.DataFrame:
        """A version's rows: from the object store when the exporter put them there, else disk."""
        raw = await self._artifacts().get(dataset.ref + _DATASET_FILE) if dataset.ref else None
        if raw is None:
            raw = await asyncio.to_thread((Path(dataset.path) / _DATASET_FILE).read_bytes)
        return await asyncio.to_thread(_read_dataset, raw)

    async def train(
        self, config: ProjectConfig, dataset: DatasetInfo, *, trigger: str
    ) -> TrainOutcome:
        lock = self._locks.setdefault(config.name, asyncio.Lock())
        async with lock:
            return await self._train(config, dataset, trigger)

    async def _train(
        self, config: ProjectConfig, dataset: DatasetInfo, trigger: str
    ) -> TrainOutcome:
        project = config.name
        kind = _KIND.get(config.task_type)
        if kind is None:
            self._metrics.retrains.labels(outcome="unsupported").inc()
            reason = f"no trainer for {config.task_type.value} projects"
            log.info("%s: %s", project, reason)
            return TrainOutcome("unsupported", reason)
        frame = await self._dataset(dataset)
        index = await self.index.load(project)
        inputs = await asyncio.to_thread(_inputs, frame, index, kind, config)
        state = await self.book.get(project)
        current = await self.models.load_model(state.current.model_ref) if state.current else None
        classes = list(config.labels.classes)
        t = config.training
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(
                train_round,
                make_pipeline(kind, t.estimator, t.random_state),
                inputs.labeled,
                classes,
                current_model=current,
                current_macro_f1=state.current.macro_f1 if state.current else None,
                tolerance=t.promotion_tolerance,
                random_state=t.random_state,
                folds=self._oos_folds,
            )
        except NotEnoughClasses as exc:
            self._metrics.retrains.labels(outcome="too_few_classes").inc()
            log.info("%s: not training on %s: %s", project, dataset.version, exc)
            return TrainOutcome("too_few_classes", str(exc))
        self._metrics.training.observe(time.perf_counter() - started)
        mv = await self._allocate(project, trigger)
        return await self._record(config, dataset, mv, result, inputs, state)

    async def _allocate(self, project: str, trigger: str) -> str:
        def allocate(s: ProjectState) -> None:
            if trigger not in s.triggers:
                s.allocated += 1
                s.triggers[trigger] = f"m{s.allocated:04d}"

        state = await self.book.change(project, allocate)
        return state.triggers[trigger]

    async def _record(
        self,
        config: ProjectConfig,
        dataset: DatasetInfo,
        mv: str,
        result: RoundResult,
        inputs: _Inputs,
        before: ProjectState,
    ) -> TrainOutcome:
        project = config.name
        classes = list(config.labels.classes)
        model_ref = await self.models.save_model(project, mv, result.model)
        oos_ref = await self.models.save_proba(
            project, "oos", mv, inputs.labeled.item_ids.tolist(), result.oos_proba, classes
        )
        agreement = await self._stability(project, mv, result, inputs, before, classes)
        # a model of an older dataset than the serving one (replicas, an explicit request for an
        # old version) never replaces it, whatever its score
        promoted = result.promoted and not _older(dataset.version, before.current)
        scores_ref = None
        if promoted:
            started = time.perf_counter()
            proba = await asyncio.to_thread(aligned_proba, result.model, inputs.pool_x, classes)
            scores_ref = await self.models.save_proba(
                project, "scores", mv, inputs.pool_ids, proba, classes
            )
            self._metrics.scoring.observe(time.perf_counter() - started)
            self._metrics.pool.set(len(inputs.pool_ids))
        await self.models.save_report(
            project,
            mv,
            {
                "model_version": mv,
                "dataset_version": dataset.version,
                "evaluated_on": result.evaluated_on,
                "evaluation": result.evaluation.to_dict(),
                "current_model": before.current.model_version if before.current else None,
                "current_evaluation": (
                    result.current_evaluation.to_dict() if result.current_evaluation else None
                ),
                "promoted": promoted,
                "estimator": config.training.estimator,
                "dropped_rows_without_input": inputs.dropped,
            },
        )
        ev = result.evaluation

        def finish(s: ProjectState) -> None:
            s.rows_at_last_model = dataset.n_rows
            if s.last_model is None or model_number(mv) >= model_number(s.last_model):
                s.last_model = mv
            s.agreements[mv] = agreement
            if promoted and not _older(dataset.version, s.current):
                s.current = ModelInfo(
                    model_version=mv,
                    dataset_version=dataset.version,
                    model_ref=model_ref,
                    accuracy=ev.accuracy,
                    macro_f1=ev.macro_f1,
                )

        state = await self.book.change(project, finish)
        metrics = {k: v for k, v in ev.metrics().items() if k != "n"}
        metrics["n_eval"] = float(ev.n)
        metrics["n_pool"] = float(len(inputs.pool_ids))
        metrics["evaluated_out_of_sample"] = float(result.evaluated_on == "out_of_sample")
        if result.current_evaluation is not None:
            metrics["current_macro_f1"] = result.current_evaluation.macro_f1
        if agreement is not None:
            metrics["agreement_with_previous"] = agreement
        event = ModelTrained(
            event_id=deterministic_id("model-trained", project, mv),
            project=project,
            model_version=mv,
            dataset_version=dataset.version,
            promoted=promoted,
            metrics=metrics,
            n_train=result.n_train,
            scores_ref=scores_ref,
            oos_ref=oos_ref,
            model_ref=model_ref,
            classes=classes,
        )
        await self._publish(event)
        outcome: Literal["promoted", "rejected"] = "promoted" if promoted else "rejected"
        self._metrics.retrains.labels(outcome=outcome).inc()
        self._metrics.accuracy.labels(model="candidate").set(ev.accuracy)
        self._metrics.macro_f1.labels(model="candidate").set(ev.macro_f1)
        if state.current is not None:
            self._metrics.accuracy.labels(model="serving").set(state.current.accuracy)
            self._metrics.macro_f1.labels(model="serving").set(state.current.macro_f1)
        log.info(
            "%s: model %s on %s: accuracy %.3f, macro-F1 %.3f, %s",
            project,
            mv,
            dataset.version,
            ev.accuracy,
            ev.macro_f1,
            outcome,
        )
        await self._maybe_converged(config, mv, state)
        return TrainOutcome(outcome, event=event)

    async def _stability(
        self,
        project: str,
        mv: str,
        result: RoundResult,
        inputs: _Inputs,
        before: ProjectState,
        classes: list[str],
    ) -> float | None:
        """Predict the stop set, keep the predictions, compare with the previous model's."""
        chosen = set(stop_set(inputs.pool_ids, self._stop_set_size, salt=project))
        rows = [k for k, i in enumerate(inputs.pool_ids) if i in chosen]
        predictions: dict[str, str] = {}
        if rows:
            labels = await asyncio.to_thread(
                predict_labels, result.model, inputs.pool_x[rows], classes
            )
            predictions = {inputs.pool_ids[k]: str(v) for k, v in zip(rows, labels, strict=True)}
        await self.models.save_stop_set(project, mv, predictions)
        previous = before.last_model
        if previous is None or previous == mv:
            return None
        earlier = await self.models.load_stop_set(project, previous)
        if earlier is None:
            return None
        return compare_predictions(earlier, predictions).share

    async def _maybe_converged(self, config: ProjectConfig, mv: str, state: ProjectState) -> None:
        t = config.training
        if state.converged or not converged(
            state.history(), t.convergence_rounds, t.convergence_agreement
        ):
            return
        recent = [h for h in state.history()[-t.convergence_rounds :] if h is not None]
        await self._publish(
            LabelingConverged(
                event_id=deterministic_id("labeling-converged", config.name),
                project=config.name,
                model_version=mv,
                reason=(
                    f"stabilising predictions: {t.convergence_rounds} consecutive models agreed on"
                    f" >= {t.convergence_agreement:.1%} of the stop set"
                ),
                metrics={"min_agreement": min(recent), "rounds": float(t.convergence_rounds)},
            )
        )

        def mark(s: ProjectState) -> None:
            s.converged = True

        await self.book.change(config.name, mark)
        self._metrics.converged.inc()
        log.info("%s: labeling converged at model %s", config.name, mv)
