"""The sampler's ledger of one project: open and closed batches, budget use, model, stop flags.

The ledger is one small JSON document in KV, changed only by compare-and-swap, so replicas that
race for the same project serialise on it: a batch exists once it is in the ledger. Item ids of
closed batches live in the batch artefacts (the ledger keeps a nonce to find them).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Ledger", "OpenBatch"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class OpenBatch(_Model):
    nonce: str
    """Names the committed artefact (a replica that lost the race wrote another nonce)."""
    kind: Literal["labeling", "review"] = "labeling"
    item_ids: list[str]
    tasks: int
    done: int = 0
    """Tasks that already have all their annotations."""
    lead_seconds: float = 0.0
    lead_count: int = 0


class Ledger(_Model):
    open: dict[str, OpenBatch] = Field(default_factory=dict)
    closed: dict[str, str] = Field(default_factory=dict)
    """Closed batch id -> nonce."""
    labels_used: int = 0
    """Non-gold labeling tasks handed out."""
    annotations_used: int = 0
    """Annotations asked for (gold and overlap included)."""
    lead_seconds: float = 0.0
    lead_count: int = 0
    """Observed annotation lead times of closed batches (for the cost estimate)."""
    model_version: str | None = None
    scores_ref: str | None = None
    exhausted: str | None = None
    converged: str | None = None

    @classmethod
    def decode(cls, raw: bytes | None) -> Ledger:
        return cls() if raw is None else cls.model_validate_json(raw)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    # ------------------------------------------------------------------ reading

    def has_batch(self, batch_id: str) -> bool:
        return batch_id in self.open or batch_id in self.closed

    def nonce_of(self, batch_id: str) -> str | None:
        if batch_id in self.open:
            return self.open[batch_id].nonce
        return self.closed.get(batch_id)

    def open_tasks(self, kind: str = "labeling") -> int:
        return sum(b.tasks - b.done for b in self.open.values() if b.kind == kind)

    def open_batches(self, kind: str = "labeling") -> int:
        return sum(1 for b in self.open.values() if b.kind == kind)

    def items_in_open_batches(self) -> set[str]:
        return {i for b in self.open.values() for i in b.item_ids}

    @property
    def mean_lead_seconds(self) -> float | None:
        seconds = self.lead_seconds + sum(b.lead_seconds for b in self.open.values())
        count = self.lead_count + sum(b.lead_count for b in self.open.values())
        return seconds / count if count else None

    @property
    def stopped(self) -> str | None:
        return self.exhausted or self.converged

    # ------------------------------------------------------------------ changes (new ledgers)

    def with_batch(
        self,
        batch_id: str,
        *,
        nonce: str,
        kind: Literal["labeling", "review"],
        item_ids: list[str],
        labels: int,
        annotations: int,
    ) -> Self:
        batch = OpenBatch(nonce=nonce, kind=kind, item_ids=item_ids, tasks=len(item_ids))
        return self.model_copy(
            update={
                "open": {**self.open, batch_id: batch},
                "labels_used": self.labels_used + labels,
                "annotations_used": self.annotations_used + annotations,
            }
        )

    def with_closed(self, batch_id: str) -> Self:
        batch = self.open.get(batch_id)
        if batch is None:
            return self
        remaining = {k: v for k, v in self.open.items() if k != batch_id}
        return self.model_copy(
            update={
                "open": remaining,
                "closed": {**self.closed, batch_id: batch.nonce},
                "lead_seconds": self.lead_seconds + batch.lead_seconds,
                "lead_count": self.lead_count + batch.lead_count,
            }
        )

    def with_progress(
        self, batch_id: str, *, done: int, lead_seconds: float, lead_count: int
    ) -> Self:
        batch = self.open.get(batch_id)
        if batch is None or (lead_count, done) < (batch.lead_count, batch.done):
            # progress only grows: a snapshot older than the stored one (concurrent handlers
            # writing in either order) must not roll it back
            return self
        updated = batch.model_copy(
            update={
                "done": min(done, batch.tasks),
                "lead_seconds": lead_seconds,
                "lead_count": lead_count,
            }
        )
        return self.model_copy(update={"open": {**self.open, batch_id: updated}})

    def with_model(self, model_version: str, scores_ref: str | None) -> Self:
        return self.model_copy(update={"model_version": model_version, "scores_ref": scores_ref})

    def with_exhausted(self, reason: str | None) -> Self:
        return self.model_copy(update={"exhausted": reason})

    def with_converged(self, reason: str) -> Self:
        return self.model_copy(update={"converged": reason})
