"""Each project's items as the trainer needs them: ids, texts, and where their features are.

Every ItemsIngested chunk becomes ``trainer/<project>/items/<id>.json`` in the object store: the
item ids, their text (text projects: the primary field, for TF-IDF) and the ingester's
``features_ref`` (an ``.npz`` with ``item_ids``, ``X`` and ``space``). Chunks and feature files
never change, so each is read once per process.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import ItemsIngested, deterministic_id
from labelloop.project import DataKind, ProjectConfig
from labelloop.stores import Blobs

__all__ = ["FeatureSpace", "ItemIndex", "ProjectItems"]

Array = npt.NDArray[Any]


@dataclass
class FeatureSpace:
    """Feature rows of one space (``producer-64``, ``text-hash-64``, ``image-px-16``)."""

    rows: dict[str, Array] = field(default_factory=dict)


@dataclass
class ProjectItems:
    item_ids: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    spaces: dict[str, FeatureSpace] = field(default_factory=dict)

    def best_space(self, item_ids: list[str]) -> str | None:
        """The space covering most of ``item_ids`` (producer vectors win ties)."""
        scored = [
            (sum(i in s.rows for i in item_ids), name.startswith("producer"), name)
            for name, s in self.spaces.items()
        ]
        best = max(scored, default=None)
        return best[2] if best is not None and best[0] > 0 else None


class ItemIndex:
    def __init__(self, artifacts: Callable[[], Blobs]) -> None:
        self._artifacts = artifacts
        self._chunks: dict[str, dict[str, Any]] = {}
        self._features: dict[str, tuple[str, list[str], Array]] = {}

    @staticmethod
    def prefix(project: str) -> str:
        return f"trainer/{project}/items/"

    async def record(self, event: ItemsIngested, config: ProjectConfig) -> None:
        if not event.items:
            return
        field_ = config.primary_field
        texts = None
        if field_.kind is DataKind.TEXT:
            texts = {
                i.item_id: value
                for i in event.items
                if isinstance(value := i.data.get(field_.name), str)
            }
        body = {
            "item_ids": [i.item_id for i in event.items],
            "texts": texts,
            "features_ref": event.features_ref,
        }
        name = f"{self.prefix(event.project)}{deterministic_id('items', event.event_id)}.json"
        await self._artifacts().put(name, json.dumps(body, sort_keys=True).encode())

    async def load(self, project: str) -> ProjectItems:
        blobs = self._artifacts()
        out = ProjectItems()
        seen: set[str] = set()
        for name in sorted(await blobs.list(self.prefix(project))):
            chunk = self._chunks.get(name)
            if chunk is None:
                raw = await blobs.get(name)
                if raw is None:
                    continue
                chunk = json.loads(raw)
                self._chunks[name] = chunk
            for item_id in chunk["item_ids"]:
                if item_id not in seen:
                    seen.add(item_id)
                    out.item_ids.append(item_id)
            out.texts.update(chunk.get("texts") or {})
            ref = chunk.get("features_ref")
            if ref:
                loaded = await self._load_features(ref)
                if loaded is not None:
                    space, ids, x = loaded
                    rows = out.spaces.setdefault(space, FeatureSpace()).rows
                    for k, item_id in enumerate(ids):
                        rows[item_id] = x[k]
        return out

    async def _load_features(self, ref: str) -> tuple[str, list[str], Array] | None:
        cached = self._features.get(ref)
        if cached is not None:
            return cached
        raw = await self._artifacts().get(ref)
        if raw is None:
            return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            space = str(npz["space"]) if "space" in npz.files else "features"
            ids = [str(i) for i in npz["item_ids"]]
            x = np.asarray(npz["X"], dtype=np.float64)
        self._features[ref] = (space, ids, x)
        return self._features[ref]
