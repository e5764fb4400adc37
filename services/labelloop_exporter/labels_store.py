"""The labels the exporter accumulated: every LabelsReady kept, and what is new since a version.

* ``exporter/<project>/labels/<id>.json`` (object store): each LabelsReady message as received.
  Written under a name derived from the event id, so a redelivery rewrites the same object.
* ``exporter.<project>.pending`` (KV): item id -> label-message id for items labeled since the last
  version. Keyed by item id, so a redelivered message, or a label corrected twice, counts once.
* ``exporter.<project>.seen.<id>`` (KV): set once a message was fully applied. A message delivered
  again after a version was written (its items no longer pending) is recognised and not re-counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from labelloop.events import LabelsReady, deterministic_id
from labelloop.stores import Blobs, KeyValue, kv_update

__all__ = ["LabelLedger"]


def _short(event_id: str) -> str:
    return deterministic_id("labels", event_id)


class LabelLedger:
    def __init__(self, state: Callable[[], KeyValue], artifacts: Callable[[], Blobs]) -> None:
        self._state = state
        self._artifacts = artifacts
        self._cache: dict[str, LabelsReady] = {}
        """Label messages are immutable once stored: read each object once per process."""

    @staticmethod
    def prefix(project: str) -> str:
        return f"exporter/{project}/labels/"

    @staticmethod
    def _pending_key(project: str) -> str:
        return f"exporter.{project}.pending"

    @staticmethod
    def _seen_key(project: str, event_id: str) -> str:
        return f"exporter.{project}.seen.{_short(event_id)}"

    async def record(self, event: LabelsReady) -> bool:
        """Keep a label message; False if it had been applied already (a redelivery)."""
        project = event.project
        if await self._state().get(self._seen_key(project, event.event_id)) is not None:
            return False
        name = f"{self.prefix(project)}{_short(event.event_id)}.json"
        await self._artifacts().put(name, event.model_dump_json().encode())
        marker = _short(event.event_id)
        ids = [label.item_id for label in event.labels]

        def add(old: bytes | None) -> bytes:
            pending: dict[str, str] = json.loads(old) if old else {}
            for item_id in ids:
                pending[item_id] = marker
            return json.dumps(pending, sort_keys=True).encode()

        await kv_update(self._state(), self._pending_key(project), add)
        await self._state().put(self._seen_key(project, event.event_id), b"1")
        return True

    async def pending(self, project: str) -> dict[str, str]:
        entry = await self._state().get(self._pending_key(project))
        return json.loads(entry.value) if entry is not None and entry.value else {}

    async def settle(self, project: str, exported: Mapping[str, str]) -> None:
        """Forget pending items a version now holds (not those relabeled since the snapshot)."""

        def remove(old: bytes | None) -> bytes:
            pending: dict[str, str] = json.loads(old) if old else {}
            for item_id, marker in exported.items():
                if pending.get(item_id) == marker:
                    del pending[item_id]
            return json.dumps(pending, sort_keys=True).encode()

        await kv_update(self._state(), self._pending_key(project), remove)

    async def events(self, project: str) -> list[LabelsReady]:
        """Every label message of the project."""
        blobs = self._artifacts()
        out: list[LabelsReady] = []
        for name in sorted(await blobs.list(self.prefix(project))):
            event = self._cache.get(name)
            if event is None:
                data = await blobs.get(name)
                if data is None:
                    continue  # listed, then deleted by an operator: nothing to read
                event = LabelsReady.model_validate_json(data)
                self._cache[name] = event
            out.append(event)
        return out
