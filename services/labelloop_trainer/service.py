"""The training use case: one training round per labeling round, in round order.

The rows of round *n* (``RoundExported``: a full dataset version's labels and the deltas of the
rounds after it, :mod:`labelloop.rows`) are trained after round *n - 1* (a
:class:`~labelloop.sequencing.RoundSequencer`), because its candidate is judged against the model
that served after round *n - 1*. The round fits a pipeline on every labeled row, judges it out of
sample, promotes it unless the serving model is significantly better on the rows it never saw,
scores the unlabeled pool with it and checks convergence. Its ``ModelTrained`` always says which
model serves after the round (the candidate or the one before), also when no model could be
trained: the sampler waits for exactly that word.

A multi-label project (``text_multilabel``) trains one binary model per label on the same
features (:mod:`~labelloop_trainer.domain.multilabel`): it is judged by micro-F1 (and reports
macro-F1, subset accuracy as ``accuracy``, and Hamming loss), scores the pool with each label's
probability (a table of kind ``label_probabilities``), and lists no suspect labels.

A NER project (``ner``) trains a linear-chain CRF on the texts' tokens, its labels the exported
entity spans as BIO tags (:mod:`~labelloop_trainer.domain.ner`): it is judged by exact entity F1
out of sample (and reports partial-match F1, per-type F1 and token accuracy), is stored as
crfsuite's own model file (:mod:`~labelloop_trainer.crf_format`), scores the pool with its
uncertainty per text and its predicted spans (a table of kind ``sequences``), compares
consecutive models by their predicted spans for convergence, and lists no suspect labels.

A bounding-box project (``bounding_boxes``) trains nothing here: no detector learns on these
CPUs. When its project file names a ``model_hook`` (a model the producer serves), each round
asks that model for box predictions over the unlabeled pool (:mod:`~labelloop_trainer.model_hook`,
Label Studio's ML backend ``/predict``) and keeps them as the pool's scores, in a table of kind
``sequences`` (:func:`~labelloop_trainer.domain.boxes.box_uncertainty`), which the sampler ranks
and whose boxes pre-annotate the tasks. A hook that is down or answers garbage fails that round
only: its ``ModelTrained`` says why (``skipped``), and the predictions of the last round that
had some go on serving. Without a hook the round is skipped and says so.

Model versions are ``m<round>``: the same version always gives the same model, whichever replica
trains it, and a redelivered version republishes the stored ``ModelTrained``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq

from labelloop import memory
from labelloop.catalog import SEQUENCE_MEASURES, Catalog, ProjectItems
from labelloop.events import (
    DatasetExported,
    Event,
    LabelingConverged,
    ModelTrained,
    RequestTraining,
    RoundExported,
    SuspectLabel,
    deterministic_id,
)
from labelloop.model_format import UntrustedModel
from labelloop.project import ModelHookConfig, ProjectConfig, TaskType
from labelloop.rows import apply_deltas
from labelloop.sequencing import RoundSequencer
from labelloop.stores import Blobs, KeyValue
from labelloop_trainer.domain.boxes import box_uncertainty
from labelloop_trainer.domain.convergence import StopSet, compare_predictions, converged
from labelloop_trainer.domain.estimators import (
    InputKind,
    aligned_proba,
    label_proba,
    make_pipeline,
    regularization_grid,
    widened,
)
from labelloop_trainer.domain.multilabel import (
    indicator,
    label_sets,
    predicted_sets,
    train_multilabel_round,
)
from labelloop_trainer.domain.ner import (
    CrfTagger,
    parse_spans,
    predict_spans,
    score_pool,
    train_ner_round,
)
from labelloop_trainer.domain.retraining import decide_retrain
from labelloop_trainer.domain.suspects import suspect_labels
from labelloop_trainer.domain.training import (
    LabeledData,
    NotEnoughClasses,
    RoundResult,
    predict_labels,
    train_round,
)
from labelloop_trainer.metrics import TrainerMetrics
from labelloop_trainer.model_hook import HookError, ModelHook
from labelloop_trainer.store import ModelInfo, ProjectState, TrainerStore

__all__ = ["Trainer", "model_version_of"]

log = logging.getLogger("labelloop.trainer")
Array = npt.NDArray[Any]
ProjectLookup = Callable[[str], Awaitable[ProjectConfig]]

_KIND: dict[TaskType, InputKind] = {
    TaskType.TEXT_CLASSIFICATION: "text",
    TaskType.TEXT_MULTILABEL: "text",
    TaskType.IMAGE_CLASSIFICATION: "vectors",
    TaskType.AUDIO_CLASSIFICATION: "vectors",
    TaskType.VIDEO_CLASSIFICATION: "vectors",
    TaskType.NER: "text",
}
_VERSION = re.compile(r"(?:v\d+(?:-r\d+)?\+)?r(\d+)$|v(\d+)(?:-r\d+)?$")
"""The round of a model's dataset: ``v0012`` (and its rewrites ``v0012-r1``) hold round 12;
``v0010+r0012`` (a version and the rounds after it) and ``r0012`` name round 12's rows too."""
STOP_SET_PROJECTS = 16
"""Projects whose stop set a process keeps drawing from (:class:`StopSet`)."""

_LABELS_FILE = "labels.parquet"
"""The label columns the exporter shares in the object store (item data is in the catalog)."""
_DATASET_FILE = "dataset.parquet"
"""A whole version's file (what the exporter shared in the object store before it shared
labels only: read for models trained on such a version)."""


def model_version_of(round_number: int) -> str:
    return f"m{round_number:04d}"


@dataclass(frozen=True, slots=True)
class _Inputs:
    labeled: LabeledData
    pool_ids: list[str]
    pool_x: Array
    """Texts, or feature rows as the catalog keeps them (float32: widened to float64 chunk by
    chunk where a model reads them, which is exact)."""
    dropped: int
    """Labeled rows without usable input (no features in the chosen space)."""
    catalog_ids: Sequence[str]
    """Every item id of the catalog, sorted (the list the catalog shares)."""


class TamperedDataset(ValueError):
    """A round's labels in the object store are not the files the exporter announced."""


def _as_round(event: DatasetExported) -> RoundExported:
    """A dataset version as its round's rows (:meth:`RoundExported.of_version`); a version
    without labels in the object store is a ``LookupError`` (retried, then dead-lettered)."""
    return RoundExported.of_version(event, event_id=event.event_id)


def _round_input(payload: bytes) -> RoundExported:
    """A parked or applied round's payload: a ``RoundExported``, or a ``DatasetExported``
    parked by a trainer of before (a round waiting for its turn through an upgrade)."""
    body = json.loads(payload)
    if "dataset_ref" in body and "deltas" not in body:
        return _as_round(DatasetExported.model_validate(body))
    return RoundExported.model_validate(body)


def _read_dataset(raw: bytes) -> pd.DataFrame:
    frame: pd.DataFrame = pq.read_table(io.BytesIO(raw)).to_pandas()
    return frame


def _column(frame: pd.DataFrame, field_name: str) -> str:
    # the exporter prefixes a data field that clashes with its own columns with "data_"
    prefixed = f"data_{field_name}"
    return prefixed if prefixed in frame.columns else field_name


def _text(value: object, fallback: str | None) -> str | None:
    return value if isinstance(value, str) else fallback


def _label_set(cell: object) -> list[str]:
    """A multi-label row's labels from its label cell: the exporter writes a list as JSON text
    (a bare class name, as a hand-made dataset may hold, is a set of one)."""
    if isinstance(cell, list | tuple):
        return [str(v) for v in cell]
    text = str(cell)
    try:
        value = json.loads(text)
    except ValueError:
        return [text] if text else []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _inputs(
    frame: pd.DataFrame, items: ProjectItems, kind: InputKind, config: ProjectConfig
) -> _Inputs:
    """Labeled rows as model input, and the unlabeled pool (sorted by item id)."""
    ids: Array = frame["item_id"].astype(str).to_numpy()
    labeled_set = set(ids.tolist())
    pool_candidates = [i for i in items.item_ids() if i not in labeled_set]
    keep: Array
    if kind == "text":
        field_name = config.primary_field.name
        # the texts come from the catalog; a dataset read from the volume also has them
        column = _column(frame, field_name)
        fallback: list[str | None] = [None] * len(ids)
        if column in frame.columns:
            fallback = [str(v) for v in frame[column].fillna("").astype(str)]
        labeled_data = items.column(ids.tolist(), "data")
        found = [
            _text(None if d is None else d.get(field_name), f)
            for d, f in zip(labeled_data, fallback, strict=True)
        ]
        keep = np.array([t is not None for t in found], dtype=bool)
        x: Array = np.asarray([t if t is not None else "" for t in found], dtype=object)
        pool_data = items.column(pool_candidates, "data")
        texts = [
            (i, value)
            for i, d in zip(pool_candidates, pool_data, strict=True)
            if isinstance(value := d.get(field_name), str)
        ]
        pool_ids = [i for i, _ in texts]  # sorted: the candidates are
        pool_x: Array = np.asarray([t for _, t in texts], dtype=object)
        labeled_x = x
    else:
        space = items.best_space(ids.tolist())
        if space is None:
            keep = np.zeros(len(ids), dtype=bool)
            labeled_x = np.empty((0, 0), dtype=np.float64)
            pool_ids, pool_x = [], np.empty((0, 0), dtype=np.float64)
        else:
            rows, keep = items.rows_of(ids.tolist(), space)
            labeled_x = rows[keep].astype(np.float64)
            pool_rows, has = items.rows_of(pool_candidates, space)
            pool_ids = [i for i, h in zip(pool_candidates, has.tolist(), strict=True) if h]
            # one copy of the pool at most: at 10M items a float64 copy of the rows (as the
            # labeled rows get) would add 80 bytes an item for every 10 features
            pool_x = pool_rows if has.all() else pool_rows[has]
    y: Array
    if config.task_type.is_multilabel:
        sets = [_label_set(cell) for cell in frame["label"].tolist()]
        y = indicator(sets, list(config.labels.classes))
    elif config.task_type is TaskType.NER:
        y = np.empty(len(frame), dtype=object)
        y[:] = [parse_spans(cell) for cell in frame["label"].tolist()]
    else:
        y = frame["label"].astype(str).to_numpy()
    labeled = LabeledData(
        item_ids=ids[keep],
        x=labeled_x if kind == "vectors" else labeled_x[keep],
        y=y[keep],
        split=frame["split"].astype(str).to_numpy()[keep],
        weight=frame["weight"].astype(float).to_numpy()[keep],
    )
    return _Inputs(labeled, pool_ids, pool_x, int((~keep).sum()), items.item_ids())


def _suspects(
    frame: pd.DataFrame, inputs: _Inputs, oos: Array, config: ProjectConfig
) -> list[SuspectLabel]:
    """The round's suspect labels (gold and expert-reviewed rows are settled). A multi-label
    model lists none: a recheck sends one class back to an expert, a label set has several (and
    a NER model's label is a set of spans)."""
    if config.task_type.is_multilabel or config.task_type is TaskType.NER:
        return []
    settled = set()
    batches: dict[str, str | None] = {}
    ids = frame["item_id"].astype(str).tolist()
    gold = frame["is_gold"].astype(bool).tolist() if "is_gold" in frame else [False] * len(ids)
    reviewed = (
        frame["reviewed"].fillna(False).astype(bool).tolist()
        if "reviewed" in frame
        else [False] * len(ids)
    )
    origin = frame["batch_id"].tolist() if "batch_id" in frame else [None] * len(ids)
    for item, g, r, b in zip(ids, gold, reviewed, origin, strict=True):
        if g or r:
            settled.add(item)
        batches[item] = None if b is None or (isinstance(b, float) and np.isnan(b)) else str(b)
    return suspect_labels(
        inputs.labeled.item_ids.tolist(),
        inputs.labeled.y.tolist(),
        oos,
        list(config.labels.classes),
        threshold=config.quality.model_contradiction_threshold,
        settled=settled,
        batches=batches,
    )


class Trainer:
    def __init__(
        self,
        *,
        state: Callable[[], KeyValue],
        artifacts: Callable[[], Blobs],
        publish: Callable[[Event], Awaitable[object]],
        project: ProjectLookup,
        metrics: TrainerMetrics,
        stop_set_size: int = 2000,
        oos_folds: int = 5,
        model_hook: Callable[[ModelHookConfig], ModelHook] = ModelHook,
    ) -> None:
        self._artifacts = artifacts
        self._model_hook = model_hook
        self.catalog = Catalog(state, artifacts)
        self.store = TrainerStore(state, artifacts)
        self._publish = publish
        self._project = project
        self._metrics = metrics
        self._stop_set_size = stop_set_size
        self._oos_folds = oos_folds
        self.rounds = RoundSequencer(
            "trainer-rounds", state, artifacts, self._train_round, area="trainer"
        )
        self._train_sets: dict[str, tuple[str, set[str]]] = {}
        """Per project, the serving model's version and its train ids (one model's: a set per
        model kept them all, tens of thousands of ids each, for the process's life)."""
        self._stop_sets: OrderedDict[str, StopSet] = OrderedDict()
        """Per project, its stop set's kept hashes, the last :data:`STOP_SET_PROJECTS` used."""
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ inputs

    async def round_exported(self, event: RoundExported) -> str:
        # one round at a time per project in a process: a version's round comes as its
        # RoundExported and its DatasetExported, and the second must find the first's outcome
        # rather than train the same round beside it
        async with self._locks.setdefault(event.project, asyncio.Lock()):
            payload = event.model_dump_json().encode()
            return await self.rounds.offer(event.project, event.round, payload)

    async def dataset_exported(self, event: DatasetExported) -> str:
        """A version an exporter announced: its round's rows, for a campaign exported before
        the exporter announced ``RoundExported`` (a round it exported, the trainer had not
        trained yet, and no ``RoundExported`` comes for). A round trained already is done; the
        round of a version an exporter announces now is the same rows as its ``RoundExported``,
        whichever comes first."""
        return await self.round_exported(_as_round(event))

    async def requested(self, config: ProjectConfig, event: RequestTraining) -> ModelTrained | None:
        """An operator asks for the model: the round's training outcome, announced again.

        ``None`` when that round is not trained yet (it will be, in its turn)."""
        number = await self.rounds.next_round(config.name) - 1
        if event.dataset_version is not None:
            # v0002 and its rewrites v0002-r1, v0002-r2 (revised rounds) hold round 2
            match = _VERSION.match(event.dataset_version)
            number = int(match.group(1) or match.group(2)) if match else 0
        stored = await self.store.round(config.name, number) if number >= 1 else None
        if stored is None:
            return None
        again = stored.model_copy(
            update={
                "event_id": deterministic_id("model-trained", stored.event_id, event.event_id),
                "request_id": event.event_id,
            }
        )
        await self._publish(again)
        return again

    # ------------------------------------------------------------------ one round

    async def _train_round(self, project: str, number: int, payload: bytes) -> None:
        event = _round_input(payload)
        stored = await self.store.round(project, number)
        if stored is not None:
            await self._publish(stored)  # trained before a crash or by a replica: say it again
            return
        config = await self._project(project)
        state = await self.store.state(project)
        mv = model_version_of(number)
        if config.task_type is TaskType.BOUNDING_BOXES:
            await self._hook_round(config, event, state, mv)
            return
        kind = _KIND.get(config.task_type)
        if kind is None:
            await self._skip(config, event, state, f"no trainer for {config.task_type.value}")
            return
        t = config.training
        decision = decide_retrain(
            event.n_rows,
            state.rows_at_last_model,
            min_new_labels=t.min_new_labels,
            min_growth=t.min_growth,
        )
        if not decision.train:
            await self._skip(config, event, state, decision.reason)
            return
        try:
            frame = await self._dataset(event)
        except TamperedDataset as exc:
            self._metrics.untrusted_datasets.labels(project=project).inc()
            log.error("%s: %s", project, exc)
            await self._skip(config, event, state, str(exc))
            return
        items = await self.catalog.load(project)
        inputs = await asyncio.to_thread(_inputs, frame, items, kind, config)
        current = await self._serving_model(project, state)
        fresh = None
        if state.current is not None:
            seen = await self._train_set(project, state.current)
            fresh = np.asarray([i not in seen for i in inputs.labeled.item_ids.tolist()])
        classes = list(config.labels.classes)
        multilabel = config.task_type.is_multilabel
        pipeline = make_pipeline(kind, t.estimator, t.random_state, multilabel=multilabel)
        grid = regularization_grid(t, kind, multilabel=multilabel)
        started = time.perf_counter()
        try:
            common: dict[str, Any] = {
                "current_model": current,
                "fresh": fresh,
                "tolerance": t.promotion_tolerance,
                "random_state": t.random_state,
                "folds": self._oos_folds,
                "grid": grid,
            }
            if config.task_type is TaskType.NER:
                result = await asyncio.to_thread(
                    train_ner_round,
                    inputs.labeled,
                    classes,
                    current_model=current if isinstance(current, CrfTagger) else None,
                    fresh=fresh,
                    tolerance=t.promotion_tolerance,
                    random_state=t.random_state,
                    folds=self._oos_folds,
                )
            elif multilabel:
                result = await asyncio.to_thread(
                    train_multilabel_round,
                    pipeline,
                    inputs.labeled,
                    classes,
                    threshold=t.multilabel_threshold,
                    **common,
                )
            else:
                result = await asyncio.to_thread(
                    train_round, pipeline, inputs.labeled, classes, **common
                )
        except NotEnoughClasses as exc:
            await self._skip(config, event, state, str(exc))
            return
        self._metrics.training.observe(time.perf_counter() - started)
        suspects = await asyncio.to_thread(_suspects, frame, inputs, result.oos_proba, config)
        # every row counts as seen by this model, also one it could not use (no features)
        await self.store.save_train_set(project, mv, frame["item_id"].astype(str).tolist())
        await self._record(config, event, mv, result, inputs, state, suspects)
        # the pool's features and scores, the folds' models: in proportion to the project
        del frame, inputs, result, current, suspects
        await asyncio.to_thread(memory.trim)

    async def _dataset(self, event: RoundExported) -> pd.DataFrame:
        """The round's rows: the base version's labels with the rounds' deltas applied
        (:mod:`labelloop.rows`), from the object store.

        Raises :class:`TamperedDataset` when a file in the object store is not the one whose
        sha256 the exporter announced (the round is skipped: reading it again cannot help), and
        :class:`LookupError` when a file is missing (the message is retried, then dead-lettered,
        and the round stays open: an event pointing at nothing does not take it)."""
        base = None
        if event.base_ref is not None and event.base_sha256 is not None:
            base = await self._checked(event.base_ref, event.base_sha256, event.base_version)
        deltas = list(
            await asyncio.gather(
                *(self._checked(d.ref, d.sha256, f"round {d.round}") for d in event.deltas)
            )
        )
        table = await asyncio.to_thread(apply_deltas, base, deltas)
        frame: pd.DataFrame = table.to_pandas()
        return frame

    async def _checked(self, ref: str, digest: str, what: str | None) -> bytes:
        raw = await self._artifacts().get(ref)
        if raw is None:
            raise LookupError(f"the labels of {what} ({ref}) are missing from the object store")
        found = hashlib.sha256(raw).hexdigest()
        if not hmac.compare_digest(found, digest):
            raise TamperedDataset(
                f"the labels of {what} in the object store have sha256 {found}, "
                f"the exporter announced {digest}: not trained on"
            )
        return raw

    async def _shared(self, base: str) -> bytes | None:
        """A version's label columns from the object store (a version shared before the
        exporter shared labels only has the whole dataset there)."""
        for name in (_LABELS_FILE, _DATASET_FILE):
            raw = await self._artifacts().get(base + name)
            if raw is not None:
                return raw
        return None

    async def _serving_model(self, project: str, state: ProjectState) -> Any | None:
        """The serving model, to judge the candidate against; ``None`` without one, or when its
        file is not the one the trainer wrote (replaced in the object store: it is never
        loaded as code; the candidate is then judged on its own, and the refusal counted)."""
        info = state.current
        if info is None or info.model_ref is None:  # none, or a model hook's predictions
            return None
        try:
            return await self.store.load_model(info.model_ref, info.model_digest)
        except UntrustedModel as exc:
            self._metrics.untrusted.labels(project=project).inc()
            log.error("%s: serving model %s refused: %s", project, info.model_version, exc)
            return None

    async def _train_set(self, project: str, model: ModelInfo) -> set[str]:
        """Item ids the model was trained on: as the trainer stored them with it (or, for a
        model trained before that, the rows of its dataset version)."""
        kept = self._train_sets.get(project)
        if kept is not None and kept[0] == model.model_version:
            return kept[1]
        found = await self.store.load_train_set(project, model.model_version)
        if found is None:
            raw = await self._shared(f"exporter/{project}/datasets/{model.dataset_version}/")
            frame = None if raw is None else await asyncio.to_thread(_read_dataset, raw)
            found = set() if frame is None else set(frame["item_id"].astype(str))
        self._train_sets[project] = (model.model_version, found)
        return found

    async def _skip(
        self, config: ProjectConfig, event: RoundExported, state: ProjectState, reason: str
    ) -> None:
        """No model this round: the serving model stays, and the sampler hears so."""
        self._metrics.retrains.labels(project=config.name, outcome="skipped").inc()
        log.info("%s: no model on %s: %s", config.name, event.dataset_version, reason)
        outcome = ModelTrained(
            event_id=deterministic_id("model-trained", config.name, event.round),
            project=config.name,
            model_version=model_version_of(event.round),
            dataset_version=event.dataset_version,
            round=event.round,
            promoted=False,
            metrics={},
            n_train=0,
            classes=list(config.labels.classes),
            serving_model_version=state.current.model_version if state.current else None,
            serving_scores_ref=state.current.scores_ref if state.current else None,
            skipped=reason,
            converged=state.converged,
        )
        await self.store.save_round(outcome)
        await self._publish(outcome)

    async def _record(
        self,
        config: ProjectConfig,
        event: RoundExported,
        mv: str,
        result: RoundResult,
        inputs: _Inputs,
        before: ProjectState,
        suspects: list[SuspectLabel],
    ) -> None:
        project = config.name
        classes = list(config.labels.classes)
        multilabel = config.task_type.is_multilabel
        model_ref, model_digest = await self.store.save_model(project, mv, result.model)
        agreement = await self._stability(project, mv, result, inputs, before, config)
        scores_ref = None
        if result.promoted and isinstance(result.model, CrfTagger):
            started = time.perf_counter()
            pool = await asyncio.to_thread(score_pool, result.model, inputs.pool_x.tolist())
            scores_ref = await self.store.save_scores(
                project,
                mv,
                inputs.pool_ids,
                pool.uncertainty,
                list(SEQUENCE_MEASURES),
                predictions=[json.dumps(s, sort_keys=True) for s in pool.spans],
            )
            self._metrics.scoring.observe(time.perf_counter() - started)
        elif result.promoted:
            started = time.perf_counter()
            score = label_proba if multilabel else aligned_proba
            proba = await asyncio.to_thread(score, result.model, inputs.pool_x, classes)
            scores_ref = await self.store.save_scores(
                project, mv, inputs.pool_ids, proba, classes, multilabel=multilabel
            )
            self._metrics.scoring.observe(time.perf_counter() - started)
        ev = result.evaluation
        multilabel_report: dict[str, Any] = {}
        if multilabel:
            multilabel_report = {
                "task": "multi_label",
                "promotion_metric": ev.promotion_metric,
                "threshold": config.training.multilabel_threshold,
            }
        elif config.task_type is TaskType.NER:
            multilabel_report = {
                "task": "ner",
                "promotion_metric": ev.promotion_metric,
                "model": "crf",
                "uncertainty": list(SEQUENCE_MEASURES),
            }
        await self.store.save_report(
            project,
            mv,
            {
                "model_version": mv,
                "dataset_version": event.dataset_version,
                "round": event.round,
                "evaluated_on": result.evaluated_on,
                "evaluation": ev.to_dict(),
                "current_model": before.current.model_version if before.current else None,
                "current_evaluation_on_fresh_rows": (
                    result.current_evaluation.to_dict() if result.current_evaluation else None
                ),
                "promoted": result.promoted,
                "estimator": config.training.estimator,
                "regularization": result.params,
                "dropped_rows_without_input": inputs.dropped,
                **multilabel_report,
            },
        )
        history = [*before.history(), agreement] if before.last_model is not None else []
        t = config.training
        verdict = before.converged
        if verdict is None and converged(history, t.convergence_rounds, t.convergence_agreement):
            verdict = (
                f"stabilising predictions: {t.convergence_rounds} consecutive models agreed on"
                f" >= {t.convergence_agreement:.1%} of the stop set"
            )
        serving = before.current
        if result.promoted:
            serving = ModelInfo(
                model_version=mv,
                dataset_version=event.dataset_version,
                round=event.round,
                model_ref=model_ref,
                model_digest=model_digest,
                scores_ref=scores_ref,
                accuracy=ev.accuracy,
                macro_f1=ev.macro_f1,
                pool_size=len(inputs.pool_ids),
            )
        metrics = {k: v for k, v in ev.metrics().items() if k != "n"}
        metrics["n_eval"] = float(ev.n)
        metrics["n_pool"] = float(len(inputs.pool_ids))
        metrics["evaluated_out_of_sample"] = 1.0
        for name, value in result.params.items():  # e.g. clf__C -> regularization_C
            metrics[f"regularization_{name.split('__')[-1]}"] = float(value)
        if result.current_evaluation is not None:
            metrics["current_macro_f1_on_fresh"] = result.current_evaluation.macro_f1
            if result.current_evaluation.micro_f1 is not None:
                metrics["current_micro_f1_on_fresh"] = result.current_evaluation.micro_f1
            if result.current_evaluation.entity_f1 is not None:
                metrics["current_entity_f1_on_fresh"] = result.current_evaluation.entity_f1
        if agreement is not None:
            metrics["agreement_with_previous"] = agreement
        outcome = ModelTrained(
            event_id=deterministic_id("model-trained", project, event.round),
            project=project,
            model_version=mv,
            dataset_version=event.dataset_version,
            round=event.round,
            promoted=result.promoted,
            metrics=metrics,
            n_train=result.n_train,
            scores_ref=scores_ref,
            model_ref=model_ref,
            model_digest=model_digest,
            classes=classes,
            serving_model_version=serving.model_version if serving else None,
            serving_scores_ref=serving.scores_ref if serving else None,
            converged=verdict,
            suspect_labels=suspects,
        )
        await self.store.save_round(outcome)

        def finish(s: ProjectState) -> None:
            s.rows_at_last_model = event.n_rows
            s.last_model = mv
            s.last_accuracy = ev.accuracy
            s.last_macro_f1 = ev.macro_f1
            s.agreements[mv] = agreement
            s.current = serving
            s.converged = verdict

        state = await self.store.change(project, finish)
        await self._publish(outcome)
        if verdict is not None and before.converged is None:
            await self._publish(
                LabelingConverged(
                    event_id=deterministic_id("labeling-converged", project),
                    project=project,
                    model_version=mv,
                    reason=verdict,
                    metrics={"rounds": float(t.convergence_rounds)},
                )
            )
            self._metrics.converged.labels(project=project).inc()
        label = "promoted" if result.promoted else "rejected"
        self._metrics.retrains.labels(project=project, outcome=label).inc()
        self._observe(project, state)
        log.info(
            "%s: model %s on %s (%d labels): out-of-sample accuracy %.3f, macro-F1 %.3f%s, %s",
            project,
            mv,
            event.dataset_version,
            result.n_train,
            ev.accuracy,
            ev.macro_f1,
            f", micro-F1 {ev.micro_f1:.3f}"
            if ev.micro_f1 is not None
            else f", entity F1 {ev.entity_f1:.3f}"
            if ev.entity_f1 is not None
            else "",
            label,
        )

    # ------------------------------------------------------------------ a model hook's round

    async def _hook_round(
        self, config: ProjectConfig, event: RoundExported, state: ProjectState, mv: str
    ) -> None:
        """A bounding-box round: the model hook's predictions over the unlabeled pool, or why
        there are none."""
        hook_config = config.model_hook
        if hook_config is None:
            reason = (
                "no detector is trained here for bounding_boxes; a model_hook in the project "
                "file gives pre-annotations and scores"
            )
            await self._skip(config, event, state, reason)
            return
        try:
            frame = await self._dataset(event)
        except TamperedDataset as exc:
            self._metrics.untrusted_datasets.labels(project=config.name).inc()
            log.error("%s: %s", config.name, exc)
            await self._skip(config, event, state, str(exc))
            return
        labeled = set(frame["item_id"].astype(str))
        items = await self.catalog.load(config.name)
        field_name = config.primary_field.name
        unlabeled = [i for i in items.item_ids() if i not in labeled]
        pool = [
            (i, data)
            for i, data in zip(unlabeled, items.column(unlabeled, "data"), strict=True)
            if data.get(field_name) is not None
        ]
        hook = self._model_hook(hook_config)
        started = time.perf_counter()
        try:
            answer = await hook.predict_pool(
                config.name, pool, field_name=field_name, labels=list(config.labels.classes)
            )
        except HookError as exc:
            log.warning("%s: model hook failed on %s: %s", config.name, event.dataset_version, exc)
            await self._skip(config, event, state, f"model hook: {exc}")
            return
        seconds = time.perf_counter() - started
        self._metrics.scoring.observe(seconds)
        measures = np.asarray(
            [box_uncertainty(p) for p in answer.predictions], dtype=np.float64
        ).reshape(-1, len(SEQUENCE_MEASURES))
        scores_ref = await self.store.save_scores(
            config.name,
            mv,
            answer.item_ids,
            measures,
            list(SEQUENCE_MEASURES),
            predictions=[json.dumps(p.boxes, sort_keys=True) for p in answer.predictions],
        )
        n_boxes = sum(len(p.boxes) for p in answer.predictions)
        dropped = sum(p.dropped for p in answer.predictions)
        versions = answer.model_versions
        await self.store.save_report(
            config.name,
            mv,
            {
                "model_version": mv,
                "dataset_version": event.dataset_version,
                "round": event.round,
                "task": "bounding_boxes",
                "model": "model_hook",
                "hook": {"endpoint": hook.where},
                "hook_model_versions": versions,
                "uncertainty": list(SEQUENCE_MEASURES),
                "pool": len(answer.item_ids),
                "boxes": n_boxes,
                "regions_dropped": dropped,
                "requests": answer.requests,
                "retries": answer.retries,
                "seconds": round(seconds, 3),
            },
        )
        serving = ModelInfo(
            model_version=mv,
            dataset_version=event.dataset_version,
            round=event.round,
            model_ref=None,
            scores_ref=scores_ref,
            accuracy=None,
            macro_f1=None,
            pool_size=len(answer.item_ids),
            hook_model_versions=versions,
        )
        outcome = ModelTrained(
            event_id=deterministic_id("model-trained", config.name, event.round),
            project=config.name,
            model_version=mv,
            dataset_version=event.dataset_version,
            round=event.round,
            promoted=True,
            metrics={
                "n_pool": float(len(answer.item_ids)),
                "n_boxes": float(n_boxes),
                "regions_dropped": float(dropped),
                "hook_requests": float(answer.requests),
                "hook_retries": float(answer.retries),
            },
            n_train=0,
            scores_ref=scores_ref,
            classes=list(config.labels.classes),
            serving_model_version=mv,
            serving_scores_ref=scores_ref,
            converged=state.converged,
        )
        await self.store.save_round(outcome)

        def finish(s: ProjectState) -> None:
            s.rows_at_last_model = event.n_rows
            s.last_model = mv
            s.current = serving

        new_state = await self.store.change(config.name, finish)
        await self._publish(outcome)
        self._metrics.retrains.labels(project=config.name, outcome="model_hook").inc()
        self._observe(config.name, new_state)
        log.info(
            "%s: model hook on %s: %d pool items, %d boxes (%d regions left out), "
            "hook model versions %s, %d requests",
            config.name,
            event.dataset_version,
            len(answer.item_ids),
            n_boxes,
            dropped,
            ", ".join(versions) or "unnamed",
            answer.requests,
        )

    # ------------------------------------------------------------------ metrics

    async def observe(self, project: str) -> None:
        """The project's model gauges from the shared state (every replica, periodically).

        The replica that trained a round sets them at once; with several replicas, the others
        would go on reporting the model they trained last. Read from the state every replica
        shares, all of them report the same models."""
        self._observe(project, await self.store.state(project))

    def _observe(self, project: str, state: ProjectState) -> None:
        if state.last_accuracy is not None and state.last_macro_f1 is not None:
            self._metrics.accuracy.labels(project=project, model="candidate").set(
                state.last_accuracy
            )
            self._metrics.macro_f1.labels(project=project, model="candidate").set(
                state.last_macro_f1
            )
        serving = state.current
        if serving is not None:
            if serving.accuracy is not None and serving.macro_f1 is not None:
                self._metrics.accuracy.labels(project=project, model="serving").set(
                    serving.accuracy
                )
                self._metrics.macro_f1.labels(project=project, model="serving").set(
                    serving.macro_f1
                )
            if serving.pool_size is not None:
                self._metrics.pool.labels(project=project).set(serving.pool_size)

    async def _stability(
        self,
        project: str,
        mv: str,
        result: RoundResult,
        inputs: _Inputs,
        before: ProjectState,
        config: ProjectConfig,
    ) -> float | None:
        """Predict the stop set, keep the predictions, compare with the previous model's (a
        multi-label model's prediction is its label set: two models agree on an item when they
        predict the same set)."""
        stop = self._stop_sets.get(project)
        if stop is None:
            stop = self._stop_sets[project] = StopSet(self._stop_set_size, project)
        self._stop_sets.move_to_end(project)
        while len(self._stop_sets) > STOP_SET_PROJECTS:
            self._stop_sets.popitem(last=False)
        rows = await asyncio.to_thread(stop.positions, inputs.catalog_ids, inputs.pool_ids)
        predictions: dict[str, str] = {}
        if rows:
            labels = await asyncio.to_thread(
                _stop_set_predictions, result.model, widened(inputs.pool_x[rows]), config
            )
            predictions = {inputs.pool_ids[k]: v for k, v in zip(rows, labels, strict=True)}
        await self.store.save_stop_set(project, mv, predictions)
        previous = before.last_model
        if previous is None or previous == mv:
            return None
        earlier = await self.store.load_stop_set(project, previous)
        if earlier is None:
            return None
        return compare_predictions(earlier, predictions).share


def _stop_set_predictions(model: Any, x: Array, config: ProjectConfig) -> list[str]:
    """Each item's predicted class, or a multi-label model's predicted set, or a NER model's
    predicted spans, as JSON text."""
    classes = list(config.labels.classes)
    if isinstance(model, CrfTagger):
        return [json.dumps(s, sort_keys=True) for s in predict_spans(model, x.tolist())]
    if not config.task_type.is_multilabel:
        return [str(v) for v in predict_labels(model, x, classes)]
    chosen = predicted_sets(model, x, classes, config.training.multilabel_threshold)
    return [json.dumps(names) for names in label_sets(chosen, classes)]
