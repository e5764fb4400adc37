"""Model artefacts in the object store: the fitted pipeline, its report, and its probabilities.

Names (``<mv>`` is the model version, ``m0001``...):

* ``trainer/<project>/models/<mv>.pickle`` - the fitted scikit-learn pipeline (a pickle: only ever
  loaded from our own object store, never from user input);
* ``trainer/<project>/models/<mv>.json`` - evaluation report (per class, confusion matrix);
* ``trainer/<project>/scores/<mv>.npz`` - pool scores: ``item_ids``, ``proba``, ``classes``;
* ``trainer/<project>/oos/<mv>.npz`` - out-of-sample probabilities of labeled items (same layout);
* ``trainer/<project>/stopset/<mv>.npz`` - predicted classes on the stop set (``item_ids``,
  ``labels``), for the convergence check.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.stores import Blobs

__all__ = ["ModelStore"]

Array = npt.NDArray[Any]


def _npz(**arrays: Array) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


class ModelStore:
    def __init__(self, artifacts: Callable[[], Blobs]) -> None:
        self._artifacts = artifacts

    @staticmethod
    def name(project: str, kind: str, model_version: str, ext: str) -> str:
        return f"trainer/{project}/{kind}/{model_version}.{ext}"

    async def save_model(self, project: str, model_version: str, model: Any) -> str:
        name = self.name(project, "models", model_version, "pickle")
        await self._artifacts().put(name, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        return name

    async def load_model(self, ref: str) -> Any | None:
        raw = await self._artifacts().get(ref)
        # our own artefact, written by save_model: not untrusted input
        return None if raw is None else pickle.loads(raw)  # noqa: S301

    async def save_report(self, project: str, model_version: str, report: dict[str, Any]) -> str:
        name = self.name(project, "models", model_version, "json")
        await self._artifacts().put(name, json.dumps(report, indent=1, sort_keys=True).encode())
        return name

    async def save_proba(
        self,
        project: str,
        kind: str,
        model_version: str,
        item_ids: Sequence[str],
        proba: Array,
        classes: Sequence[str],
    ) -> str:
        name = self.name(project, kind, model_version, "npz")
        data = _npz(
            item_ids=np.asarray(list(item_ids), dtype=np.str_),
            proba=np.asarray(proba, dtype=np.float32),
            classes=np.asarray(list(classes), dtype=np.str_),
        )
        await self._artifacts().put(name, data)
        return name

    async def save_stop_set(
        self, project: str, model_version: str, predictions: dict[str, str]
    ) -> str:
        name = self.name(project, "stopset", model_version, "npz")
        ids = sorted(predictions)
        data = _npz(
            item_ids=np.asarray(ids, dtype=np.str_),
            labels=np.asarray([predictions[i] for i in ids], dtype=np.str_),
        )
        await self._artifacts().put(name, data)
        return name

    async def load_stop_set(self, project: str, model_version: str) -> dict[str, str] | None:
        raw = await self._artifacts().get(self.name(project, "stopset", model_version, "npz"))
        if raw is None:
            return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return dict(zip(map(str, npz["item_ids"]), map(str, npz["labels"]), strict=True))
