"""The trainer's durable state: the project's training state in KV, model artefacts in the store.

* ``trainer.<project>.state`` (KV, compare-and-swap): the serving model, the last trained one,
  consecutive-model agreements (convergence);
* ``trainer/<project>/rounds/<n>.json``: the round's ``ModelTrained`` as published, so that a
  redelivered dataset version republishes the same event instead of training again;
* ``trainer/<project>/models/<mv>.skops`` and ``.json``: the fitted pipeline (a skops file:
  data, never code; its digest is in the state and in ``ModelTrained``,
  :mod:`labelloop.model_format`) and its evaluation report; a NER project's model is
  ``<mv>.crf.zip`` instead, crfsuite's own model file (:mod:`labelloop_trainer.crf_format`);
* ``trainer/<project>/scores/<mv>.npz``: pool scores of a promoted model (a
  ``labelloop.catalog`` probability table: class probabilities, or a multi-label model's
  per-label probabilities, or a NER model's uncertainties and predicted spans, or a model
  hook's uncertainties and predicted boxes, and the table says which);
* ``trainer/<project>/stopset/<mv>.npz``: predicted classes on the stop set (convergence).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from labelloop.catalog import ProbabilityTable, encode_table
from labelloop.events import ModelTrained
from labelloop.model_format import digest_of, dump_model, load_model
from labelloop.stores import Blobs, KeyValue, kv_update
from labelloop_trainer.crf_format import EXTENSION, dump_crf, is_crf_ref, load_crf
from labelloop_trainer.domain.ner import CrfTagger

__all__ = ["ModelInfo", "ProjectState", "TrainerStore"]

Array = npt.NDArray[Any]


class ModelInfo(BaseModel):
    model_version: str
    dataset_version: str
    round: int
    model_ref: str | None
    """``None``: the serving predictions are a model hook's (a model the producer serves)."""
    model_digest: str | None = None
    """sha256 of the model file, checked before it is loaded (``None``: state written before
    digests were recorded)."""
    scores_ref: str | None = None
    accuracy: float | None
    macro_f1: float | None
    """Out of sample; ``None`` for a model hook's predictions (not judged here)."""
    pool_size: int | None = None
    """Unlabeled items it scored (``None``: state written before this was recorded)."""
    hook_model_versions: list[str] = Field(default_factory=list)
    """The model versions a model hook's answers named (``bounding_boxes``)."""


class ProjectState(BaseModel):
    rows_at_last_model: int | None = None
    last_model: str | None = None
    """The most recently trained model, promoted or not (convergence compares consecutive ones)."""
    last_accuracy: float | None = None
    last_macro_f1: float | None = None
    """The last trained model's out-of-sample figures (the gauges every replica reports)."""
    current: ModelInfo | None = None
    """The serving (promoted) model."""
    agreements: dict[str, float | None] = Field(default_factory=dict)
    """Model version -> stop-set agreement with the model trained before it."""
    converged: str | None = None

    def history(self) -> list[float | None]:
        return [self.agreements[k] for k in sorted(self.agreements)]


class TrainerStore:
    def __init__(self, state: Callable[[], KeyValue], artifacts: Callable[[], Blobs]) -> None:
        self._state = state
        self._artifacts = artifacts

    # ------------------------------------------------------------------ project state

    @staticmethod
    def _key(project: str) -> str:
        return f"trainer.{project}.state"

    async def state(self, project: str) -> ProjectState:
        entry = await self._state().get(self._key(project))
        if entry is None or not entry.value:
            return ProjectState()
        return ProjectState.model_validate_json(entry.value)

    async def change(self, project: str, fn: Callable[[ProjectState], None]) -> ProjectState:
        """Apply ``fn`` to the stored state under compare-and-swap; return the new state."""
        result: list[ProjectState] = []

        def apply(old: bytes | None) -> bytes:
            state = ProjectState.model_validate_json(old) if old else ProjectState()
            fn(state)
            result[:] = [state]
            return state.model_dump_json().encode()

        await kv_update(self._state(), self._key(project), apply)
        return result[0]

    # ------------------------------------------------------------------ rounds

    @staticmethod
    def name(project: str, kind: str, model_version: str, ext: str) -> str:
        return f"trainer/{project}/{kind}/{model_version}.{ext}"

    async def round(self, project: str, number: int) -> ModelTrained | None:
        raw = await self._artifacts().get(f"trainer/{project}/rounds/{number:06d}.json")
        return None if raw is None else ModelTrained.model_validate_json(raw)

    async def save_round(self, event: ModelTrained) -> None:
        name = f"trainer/{event.project}/rounds/{event.round:06d}.json"
        await self._artifacts().put(name, event.model_dump_json().encode())

    # ------------------------------------------------------------------ artefacts

    async def save_model(self, project: str, model_version: str, model: Any) -> tuple[str, str]:
        """Store a fitted model; its reference and digest."""
        if isinstance(model, CrfTagger):
            name = self.name(project, "models", model_version, EXTENSION)
            data = await asyncio.to_thread(dump_crf, model)
        else:
            name = self.name(project, "models", model_version, "skops")
            data = await asyncio.to_thread(dump_model, model)
        await self._artifacts().put(name, data)
        return name, digest_of(data)

    async def load_model(self, ref: str, digest: str | None) -> Any | None:
        """The model at ``ref`` (``None`` if absent); :class:`UntrustedModel` if it is not the
        file the digest names or holds anything but trusted types."""
        raw = await self._artifacts().get(ref)
        if raw is None:
            return None
        if is_crf_ref(ref):
            return await asyncio.to_thread(load_crf, raw, digest=digest)
        return await asyncio.to_thread(load_model, raw, digest=digest)

    async def save_report(self, project: str, model_version: str, report: dict[str, Any]) -> str:
        name = self.name(project, "models", model_version, "json")
        await self._artifacts().put(name, json.dumps(report, indent=1, sort_keys=True).encode())
        return name

    async def save_scores(
        self,
        project: str,
        model_version: str,
        item_ids: Sequence[str],
        proba: Array,
        classes: Sequence[str],
        *,
        multilabel: bool = False,
        predictions: Sequence[str] | None = None,
    ) -> str:
        """``predictions``: a sequence model's predicted spans per item (JSON text); ``proba``
        then holds its uncertainties, one column per measure named in ``classes``."""
        name = self.name(project, "scores", model_version, "npz")
        table = ProbabilityTable(
            list(item_ids),
            np.asarray(proba),
            list(classes),
            multilabel,
            predictions=None if predictions is None else list(predictions),
        )
        await self._artifacts().put(name, await asyncio.to_thread(encode_table, table))
        return name

    async def save_stop_set(
        self, project: str, model_version: str, predictions: dict[str, str]
    ) -> str:
        name = self.name(project, "stopset", model_version, "npz")
        ids = sorted(predictions)
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            item_ids=np.asarray(ids, dtype=np.str_),
            labels=np.asarray([predictions[i] for i in ids], dtype=np.str_),
        )
        await self._artifacts().put(name, buf.getvalue())
        return name

    async def load_stop_set(self, project: str, model_version: str) -> dict[str, str] | None:
        raw = await self._artifacts().get(self.name(project, "stopset", model_version, "npz"))
        if raw is None:
            return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return dict(zip(map(str, npz["item_ids"]), map(str, npz["labels"]), strict=True))

    async def save_train_set(
        self, project: str, model_version: str, item_ids: Sequence[str]
    ) -> str:
        """The item ids a model was trained on (a later candidate is judged against it on the
        rows it never saw)."""
        name = self.name(project, "trainsets", model_version, "npz")
        buf = io.BytesIO()
        np.savez_compressed(buf, item_ids=np.asarray(sorted(item_ids), dtype=np.str_))
        await self._artifacts().put(name, buf.getvalue())
        return name

    async def load_train_set(self, project: str, model_version: str) -> set[str] | None:
        raw = await self._artifacts().get(self.name(project, "trainsets", model_version, "npz"))
        if raw is None:
            return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return set(map(str, npz["item_ids"]))
